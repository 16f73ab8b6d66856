"""Overlay results files in the paper's figure layout (Fig. 3 for sine, Fig. 4 for Omniglot).

    python plot_results.py RUN/results.json OTHER/results.json --labels OML Pretraining --out fig.png
"""
import argparse
import json

from utils.cli import run_main
from utils.errors import UserError
from utils.plotting import plot_files


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="results.json files (or run folders holding one)")
    parser.add_argument("--labels", nargs="+", default=None)
    parser.add_argument("--out", default="figure.png")
    return parser


def main(args):
    from pathlib import Path
    paths = [Path(p) / "results.json" if Path(p).is_dir() else Path(p) for p in args.results]
    for path in paths:
        if not path.is_file():
            raise UserError(f"no results file at '{path}'")
    if args.labels and len(args.labels) != len(paths):
        raise UserError(f"{len(args.labels)} labels for {len(paths)} results files")
    try:
        out = plot_files(paths, args.labels, args.out)
    except (ValueError, KeyError, json.JSONDecodeError) as err:
        raise UserError(f"cannot plot these files: {err}") from None
    print(f"figure: {out}")
    return out


if __name__ == "__main__":
    run_main(main, get_args_parser())
