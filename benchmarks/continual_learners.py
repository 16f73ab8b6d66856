"""Step time of the Table 2 learners: a frozen RLN's cached features vs the whole network per step.

    OMP_NUM_THREADS=1 python benchmarks/continual_learners.py                       # shipped OML + pretraining, cpu preset
    OMP_NUM_THREADS=1 python benchmarks/continual_learners.py --classes 20 --rounds 5

For each learner (Online, Approx IID, ER-Reservoir, MER, EWC; the hyperparameters below, which
change the work per step only through ER's replay batch and MER's s x k) the same stream is learned
twice: by the frozen-RLN learner (a linear PLN on features computed once: the OML and Pre-training
columns) and by the whole-network learner (every parameter, the network run per step: the Standard
column). The stream is `--classes` classes in tasks of 5 (EWC's Fisher at each task end), 15
images each, from the evaluation split (real data when --path has it). Time per incoming sample is
the fastest of `--rounds` rounds, the two sides alternating so that both see the same machine load;
the feature pass itself (once per checkpoint) is timed apart. One thread; the time is this
process's CPU time (time.process_time), which other processes on a shared machine change far
less than wall time.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from datasets.omniglot import load_omniglot
from experiment.checkpoint import load_checkpoint, load_weights
from experiment.evaluation import table2
from experiment.evaluation.features import feature_bank
from experiment.evaluation.scratch import EvalImages
from experiment.omniglot_presets import build_model, config_from_checkpoint

HYPERPARAMETERS = {"online": {"lr": 0.01}, "iid": {"lr": 0.01}, "er": {"lr": 0.01, "replay": 10},
                   "mer": {"lr": 0.01, "beta": 0.1}, "ewc": {"lr": 0.01, "lam": 0.1}}


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frozen", default="trained_models/omniglot_cpu_oml.pt", help="checkpoint whose RLN is frozen")
    parser.add_argument("--whole", default="trained_models/omniglot_cpu_pretraining.pt",
                        help="checkpoint the whole-network learner starts from")
    parser.add_argument("--path", default="../shared/omniglot", help="Omniglot folder (the evaluation split)")
    parser.add_argument("--nonstandard-data", dest="nonstandard_data", action="store_true")
    parser.add_argument("--classes", type=int, default=10, help="classes in the timed stream (tasks of 5)")
    parser.add_argument("--classes-per-task", dest="classes_per_task", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--learner", nargs="+", default=list(table2.LEARNER_NAMES), choices=table2.LEARNER_NAMES)
    return parser


def _load(path):
    payload = load_checkpoint(path, benchmark="omniglot")
    config = config_from_checkpoint(payload)
    return load_weights(build_model(config), payload), config


def _per_sample(rep, learner, run, train, protocol) -> float:
    start = time.process_time()
    table2.train_run(rep, learner, HYPERPARAMETERS[learner], run, train, protocol)
    return (time.process_time() - start) / len(run.order)


def main(args):
    torch.set_num_threads(1)
    frozen_net, config = _load(args.frozen)
    whole_net, _ = _load(args.whole)
    split = load_omniglot(args.path, "evaluation", config.image_size, progress=False,
                          standard=not args.nonstandard_data)
    start = time.process_time()
    bank = feature_bank(frozen_net.rln, split, cache_dir=False)
    feature_seconds = time.process_time() - start
    images = EvalImages.from_split(split)
    frozen, whole = table2.FrozenRLN(frozen_net.pln, "OML"), table2.WholeNetwork(whole_net)
    protocol = table2.Table2Protocol()
    tasks = max(1, args.classes // args.classes_per_task)
    print(f"features of {bank.n_classes} x 20 images computed once: {feature_seconds:.2f} s; stream: "
          f"{tasks} tasks x {args.classes_per_task} classes x 15 images; fastest of {args.rounds} rounds, 1 thread, "
          "CPU time")
    print(f"{'learner':13s} {'features ms/sample':>19s} {'whole network ms/sample':>24s} {'ratio':>7s}")
    rows = {}
    for learner in args.learner:
        run = table2.draw_task_run(0, "eval", args.classes_per_task, tasks, 0, bank.n_classes, learner == "iid")
        best = {"features": float("inf"), "network": float("inf")}
        for _ in range(args.rounds):
            best["features"] = min(best["features"], _per_sample(frozen, learner, run, bank.train, protocol))
            best["network"] = min(best["network"], _per_sample(whole, learner, run, images.train, protocol))
        rows[learner] = best
        print(f"{table2.ROW_LABELS[learner]:13s} {1e3 * best['features']:19.3f} {1e3 * best['network']:24.3f} "
              f"{best['network'] / best['features']:6.1f}x")
    return {"feature_seconds": feature_seconds, "per_sample": rows}


if __name__ == "__main__":
    main(get_args_parser().parse_args())
