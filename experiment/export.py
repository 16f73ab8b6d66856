"""Copy a run's checkpoint without its training state (optimiser moments, RNG): the small file
shipped in trained_models/. It loads with weights_only=True and evaluates like the original.

    python -m experiment.export RUN_DIR trained_models/NAME.pt
    python -m experiment.export RUN_DIR trained_models/NAME.pt --rln 3   # a sine baseline with its chosen split

`--rln K` records the RLN/PLN split chosen for a sine i.i.d. baseline on the meta-validation
split (docs/baselines.md) in the checkpoint, so `evaluate_regression.py --model NAME.pt` with no
flags evaluates it there; the weights and training config are unchanged.

It never writes over a checkpoint that can be resumed (one with training state) or over its own
source: exporting to RUN/checkpoint.pt would silently turn a resumable run into a finished one.
"""
import argparse
from pathlib import Path

import torch

from experiment.checkpoint import load_checkpoint
from experiment.sine_presets import config_from_checkpoint
from model.networks import sine_layer_sizes
from utils import bounds
from utils.cli import run_main
from utils.errors import UserError
from utils.files import save_torch


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="run folder or checkpoint.pt")
    parser.add_argument("out", help="where to write the weights-only checkpoint")
    parser.add_argument("--rln", type=int, default=None,
                        help="sine pretraining / SR-NN: the RLN/PLN split its evaluations use (chosen on validation)")
    return parser


def _chosen_split(payload: dict, rln: int) -> dict:
    if payload["benchmark"] != "sine" or payload["method"] not in ("pretraining", "srnn"):
        raise UserError(f"--rln is a split chosen for a sine pretraining or SR-NN baseline; this checkpoint is "
                        f"{payload['benchmark']} {payload['method']}, whose split is part of what it learned")
    config = config_from_checkpoint(payload)
    layers = len(sine_layer_sizes(config.arch, config.width, config.capacity)) - 1
    if not 1 <= rln < layers:
        raise UserError(f"--rln must lie in 1..{layers - 1} (the network has {layers} Linear layers), got {rln}")
    return {"rln": rln}


def _check_target(out: Path, source: Path) -> None:
    if not out.exists():
        return
    if out.is_dir():
        raise UserError(f"'{out}' is a folder; give the path of the .pt file to write")
    if out.resolve() == source.resolve():
        raise UserError(f"'{out}' is the checkpoint being exported; write the weights-only copy to another path")
    try:
        existing = torch.load(out, map_location="cpu", weights_only=True)
    except Exception:  # not a checkpoint: an ordinary file the user chose to replace
        return
    if isinstance(existing, dict) and "training" in existing:
        raise UserError(f"'{out}' is a resumable run checkpoint (it holds training state); it is not overwritten: "
                        "write the weights-only copy to another path")


def main(args):
    payload = load_checkpoint(args.model)
    _check_target(Path(args.out), Path(payload["path"]))
    # save_torch creates missing folders; a read-only or full one is refused before writing
    bounds.output_file("out", args.out, Path(payload["path"]).stat().st_size + bounds.MIN_FREE_BYTES, create_folder=True)
    if args.rln is not None:
        payload["evaluation_defaults"] = {**payload.get("evaluation_defaults", {}), **_chosen_split(payload, args.rln)}
    payload.pop("training", None)
    payload.pop("path", None)
    save_torch(args.out, payload)
    chosen = "".join(f", evaluated at {k} {v}" for k, v in payload.get("evaluation_defaults", {}).items())
    preset = payload["config"].get("preset")
    print(f"{args.out}: {payload['benchmark']} {payload['method']} ({preset}), step {payload['step']}{chosen}")
    return args.out


if __name__ == "__main__":
    run_main(main, get_args_parser())
