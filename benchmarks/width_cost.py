"""Meta-training cost against network width: seconds per OML meta-step of the `cpu` network at
64, 128 and 256 channels (28 px), and of the paper network (256 channels, 84 px), in one process.

    OMP_NUM_THREADS=1 python benchmarks/width_cost.py                  # 1 thread, 20 steps each
    python benchmarks/width_cost.py --threads 2 --steps 10 --no-paper

Each network takes the `cpu_wide` preset's algorithm (second order, 3 classes x 5 images, the
oml2020 meta set) and only changes width or image size; the training step is the scripts' own
(OMLTraining.step: sampling, output-row reset, meta-loss, Adam). Rounds alternate the networks, so
on a shared machine they see the same load; each row is the fastest round's mean step. The last
columns project the meta-training time of 5,000 / 10,000 / 20,000 steps (steps x that mean; data
loading, logging and checkpoints add under a minute). Synthetic pixels of the real shape: the cost
does not depend on the strokes.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from experiment.config import resolve
from experiment.omniglot_presets import OMNIGLOT_PRESETS, OmniglotConfig
from experiment.training.omniglot import OMLTraining
from model.networks import count_parameters

NETWORKS = {  # label -> overrides of the cpu_wide preset
    "64 ch, 28 px (`cpu`)": {"channels": 64},
    "128 ch, 28 px (`cpu_wide`)": {"channels": 128},
    "256 ch, 28 px": {"channels": 256},
    "256 ch, 84 px (paper network)": {"channels": 256, "image_size": 84, "strides": (2, 1, 2, 1, 2, 2)},
}
PROJECTED = (5_000, 10_000, 20_000)


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per network and round (paper network: a fifth)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: OMP_NUM_THREADS or torch's)")
    parser.add_argument("--no-paper", dest="paper", action="store_false", help="skip the 84 px paper network")
    return parser


def make_task(overrides: dict) -> OMLTraining:
    cfg = resolve(OmniglotConfig, OMNIGLOT_PRESETS, "cpu_wide", overrides)
    images = np.random.default_rng(0).integers(0, 256, (cfg.n_classes, 20, cfg.image_size, cfg.image_size), dtype=np.uint8)
    task = OMLTraining(cfg, torch.device("cpu"), images)
    task.step()  # warm-up, not counted
    return task


def timed(task: OMLTraining, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        task.step()
    return (time.perf_counter() - start) / steps


def main(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    networks = {k: v for k, v in NETWORKS.items() if args.paper or "paper" not in k}
    tasks = {label: make_task(overrides) for label, overrides in networks.items()}
    best = {}
    for _ in range(args.rounds):
        for label, task in tasks.items():
            steps = max(1, args.steps // 5) if "paper" in label else args.steps
            best[label] = min(best.get(label, float("inf")), timed(task, steps))
    base = best["64 ch, 28 px (`cpu`)"]
    print(f"{torch.get_num_threads()} thread(s), fastest of {args.rounds} rounds")
    projected = " | ".join(f"{s // 1000}k steps" for s in PROJECTED)
    print(f"| network | features | RLN parameters | s / meta-step | vs 64 ch | {projected} |")
    print("|---|---|---|---|---|" + "---|" * len(PROJECTED))
    for label, task in tasks.items():
        feats = task.model.pln[-1].in_features
        minutes = " | ".join(f"{best[label] * s / 60:.0f} min" for s in PROJECTED)
        print(f"| {label} | {feats} | {count_parameters(task.model.rln):,} | {best[label]:.3f} | "
              f"{best[label] / base:.1f}x | {minutes} |", flush=True)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
