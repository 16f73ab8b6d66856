"""What flushing subnormal floats saves the native online learner, on trained representations.

    OMP_NUM_THREADS=1 python benchmarks/online_subnormals.py                     # the shipped cpu models
    OMP_NUM_THREADS=1 python benchmarks/online_subnormals.py --model RUN_OR_PT --classes 200 600

Per checkpoint: the frozen RLN's features of the real evaluation split (cached as the evaluation
caches them), then one reported run of n classes (its own class set and initial PLN, Adam at 1e-3)
trained by the native kernel twice in the same process: keeping subnormals (float32 numbers below
1.2e-38, which x86 handles about 100x slower) and flushing them to zero (what the evaluation does;
experiment/evaluation/native.py). Rows give the fastest of --rounds rounds, the ratio, and whether
the two runs' predictions on the trajectory's images and the held-out images are the same.
Needs the Omniglot data (--path, default ../shared/omniglot) and numba.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from datasets.omniglot import load_omniglot
from experiment.checkpoint import load_checkpoint, load_weights
from experiment.evaluation import native
from experiment.evaluation.features import feature_bank
from experiment.evaluation.omniglot import run_specs
from experiment.evaluation.online_learner import ADAM_BETAS, ADAM_EPS, PLNInit, _run_data
from experiment.omniglot_presets import build_model, config_from_checkpoint

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = [REPO / "trained_models" / "omniglot_cpu_oml.pt"]


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=[str(p) for p in DEFAULT_MODELS], help="checkpoints or run folders")
    parser.add_argument("--classes", type=int, nargs="+", default=[200, 600], help="class counts of the timed runs")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--path", default=str(REPO.parent / "shared" / "omniglot"))
    return parser


def _predictions(params, x):
    w, b = params
    return (x @ w.T + b).argmax(1)


def main(args):
    fn = native.kernel()
    if fn is None:
        raise SystemExit("error: the native kernel is unavailable (numba missing); nothing to measure")
    print("| model | features (alive) | classes | steps | subnormals kept | flushed | ratio | same predictions |")
    print("|---|---|---|---|---|---|---|---|")
    for model in args.model:
        payload = load_checkpoint(model, benchmark="omniglot")
        config = config_from_checkpoint(payload)
        net = load_weights(build_model(config), payload)
        split = load_omniglot(args.path, "evaluation", config.image_size, progress=False)
        bank = feature_bank(net.rln, split)
        flat = bank.train.reshape(-1, bank.n_features)
        alive = int((flat != 0).any(0).sum())
        for n in args.classes:
            spec = run_specs(0, "eval", n, 1, bank.n_classes, False, 1)[0]
            x, y = _run_data(bank.train, spec)
            init = PLNInit(net.pln)(spec.init_seed)
            best, finals = {}, {}
            for _ in range(args.rounds):
                for flush in (False, True):
                    start = time.perf_counter()
                    finals[flush] = native.train_native(fn, init, x, y, spec.order, 1e-3, "adam", ADAM_BETAS, ADAM_EPS,
                                                        flush=flush)
                    best[flush] = min(best.get(flush, float("inf")), time.perf_counter() - start)
            held = bank.test[torch.as_tensor(spec.classes)].reshape(-1, bank.n_features)
            same = all(torch.equal(_predictions(finals[False], data), _predictions(finals[True], data)) for data in (x, held))
            print(f"| {Path(model).name} | {bank.n_features} ({alive}) | {n} | {len(spec.order)} | {best[False]:.2f} s | "
                  f"{best[True]:.2f} s | {best[False] / best[True]:.1f}x | {'yes' if same else 'no'} |", flush=True)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
