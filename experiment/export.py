"""Copy a run's checkpoint without its training state (optimiser moments, RNG): the small file
shipped in trained_models/. It loads with weights_only=True and evaluates like the original.

    python -m experiment.export RUN_DIR trained_models/NAME.pt

It never writes over a checkpoint that can be resumed (one with training state) or over its own
source: exporting to RUN/checkpoint.pt would silently turn a resumable run into a finished one.
"""
import argparse
from pathlib import Path

import torch

from experiment.checkpoint import load_checkpoint
from utils import bounds
from utils.cli import run_main
from utils.errors import UserError
from utils.files import save_torch


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="run folder or checkpoint.pt")
    parser.add_argument("out", help="where to write the weights-only checkpoint")
    return parser


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
    payload.pop("training", None)
    payload.pop("path", None)
    save_torch(args.out, payload)
    print(f"{args.out}: {payload['benchmark']} {payload['method']} ({payload['config'].get('preset')}), step {payload['step']}")
    return args.out


if __name__ == "__main__":
    run_main(main, get_args_parser())
