"""Plumbing the benchmark scripts share: each measurement runs in a fresh interpreter (the same
script with `--child ...`), so its peak memory is its own, and the thread count is set once."""
import argparse
import json
import os
import resource
import subprocess
import sys

import torch


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)


def apply_threads(args) -> None:
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the child interpreters
        torch.set_num_threads(args.threads)


def peak_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(script: str, kind: str, *args) -> dict:
    """Run `script --child kind args...` and return the JSON it prints last."""
    out = subprocess.run([sys.executable, script, "--child", kind, *map(str, args)],
                         capture_output=True, text=True, env=os.environ)
    if out.returncode:
        raise SystemExit(f"measurement {kind} {args} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def answer_child(args, measure) -> bool:
    """In a child interpreter: run `measure(kind, *rest)`, print its JSON for the parent; True if so."""
    if not args.child:
        return False
    kind, *rest = args.child
    print(json.dumps(measure(kind, *rest)))
    return True
