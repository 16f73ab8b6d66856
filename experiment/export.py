"""Copy a run's checkpoint without its training state (optimiser moments, RNG): the small file
shipped in trained_models/. It loads with weights_only=True and evaluates like the original.

    python -m experiment.export RUN_DIR trained_models/NAME.pt
"""
import argparse

from experiment.checkpoint import load_checkpoint
from experiment.files import save_torch
from utils.cli import run_main


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="run folder or checkpoint.pt")
    parser.add_argument("out", help="where to write the weights-only checkpoint")
    return parser


def main(args):
    payload = load_checkpoint(args.model)
    payload.pop("training", None)
    payload.pop("path", None)
    save_torch(args.out, payload)
    print(f"{args.out}: {payload['benchmark']} {payload['method']} ({payload['config'].get('preset')}), step {payload['step']}")
    return args.out


if __name__ == "__main__":
    run_main(main, get_args_parser())
