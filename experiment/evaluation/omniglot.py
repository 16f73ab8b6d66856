"""Split-Omniglot continual classification on a frozen RLN: the 2020 (and 2019) protocol, fast.

The protocol (the August-2020 `evaluate_omniglot.py` made explicit, and its 2019 variant named in
experiment/evaluation/omniglot_protocols.py) is described once, in docs/protocols.md ("Evaluation:
the 2020 and 2019 protocols" and "The online learning-rate search"). In short: features of the
frozen RLN are computed once (experiment/evaluation/features.py); each run draws n classes without
replacement, learns their 15 training images class after class with batch size 1 from a fresh PLN,
and is scored on those images (trajectory accuracy) and on the 5 held-out images of the same classes
(held-out accuracy); the online rate is searched per class count on separate search runs, judged on
trajectory accuracy only. Every run has its own numpy stream (its classes, PLN initialisation and
shuffles), so engines, `run_batch` and the `runs` count never change another run's numbers.
`run_protocol` drives any learner with the interface init / train / trajectory_accuracy /
held_out_accuracy / record (`EvaluationLearner`): the frozen-RLN `OnlineLearner`
(experiment/evaluation/online_learner.py, with its engines), and Scratch (scratch.py).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol as Interface
from typing import runtime_checkable

import numpy as np
import torch
from torch import nn

from datasets.omniglot import TRAIN_DRAWERS
from experiment.evaluation import rate_search
from experiment.evaluation.features import FeatureBank
from experiment.evaluation.omniglot_protocols import DEFAULT_PROTOCOL, protocol_record
from experiment.evaluation.omniglot_protocols import bundle as protocol_bundle
from experiment.evaluation.online_learner import ADAM_BETAS, ADAM_EPS, OnlineLearner, engine_name
from utils import bounds
from utils.errors import UserError
from utils.messages import quiet_logger
from utils.seeding import stream
from utils.stats import bootstrap_ci

log = quiet_logger(__name__)

LR_GRID = (0.03, 0.01, 0.003, 0.001, 3e-4, 1e-4, 3e-5, 1e-5)
DEFAULT_SCHEDULE = (10, 50, 100, 200, 600)
SEARCH_RUNS = 5
EVAL_SEED = 90


# --- schedule ----------------------------------------------------------------------------------

def parse_schedule(text) -> tuple[int, ...]:
    """'10:50:100' (or '10 50 100', or a list of such strings) -> (10, 50, 100)."""
    parts = text if isinstance(text, (list, tuple)) else [text]
    raw = " ".join(str(p) for p in parts).replace(":", " ").replace(",", " ").split()
    try:
        values = tuple(int(v) for v in raw)
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values):
        shown = ":".join(str(p) for p in parts)
        raise UserError(f"--schedule {shown!r} is not a list of positive class counts like 10:50:100:200:600")
    return values


# --- runs ----------------------------------------------------------------------------------------

@dataclass
class RunSpec:
    """One run: sorted class ids, the visiting order of the 15n trajectory images (all epochs),
    and the seed of its PLN initialisation."""
    classes: np.ndarray
    order: np.ndarray
    init_seed: int


def draw_run(rng: np.random.Generator, n_pool: int, n: int, iid: bool, epochs: int) -> RunSpec:
    classes = np.sort(rng.choice(n_pool, size=n, replace=False))
    init_seed = int(rng.integers(2**62))
    base = np.arange(TRAIN_DRAWERS * n)
    order = np.concatenate([rng.permutation(base) if iid else base for _ in range(epochs)])
    return RunSpec(classes, order, init_seed)


def run_specs(seed: int, purpose: str, n: int, count: int, n_pool: int, iid: bool, epochs: int) -> list[RunSpec]:
    return [draw_run(stream(seed, purpose, n, i), n_pool, n, iid, epochs) for i in range(count)]


# --- the protocol --------------------------------------------------------------------------------

@dataclass
class Protocol:
    name: str = DEFAULT_PROTOCOL   # 2020 | 2019: whose original code (experiment/evaluation/omniglot_protocols.py)
    optimizer: str = "adam"        # adam (the 2020 code) | sgd (the paper's text)
    iid: bool = False              # shuffle the trajectory (each epoch)
    epochs: int = 1                # passes over the trajectory (Oracle: iid + several epochs)
    reset: str = "all"             # all: re-initialise the whole PLN; last: only its output layer; zero: zero output layer
    lr: float | None = None        # None: search LR_GRID per class count
    runs: int = 50
    search_runs: int = SEARCH_RUNS
    seed: int = EVAL_SEED
    run_batch: int = 1             # portable / autograd engines: runs trained together
    engine: str = "auto"           # auto | native | portable | autograd (old spellings: c, torch)

    def validate(self):
        protocol_bundle(self.name)
        if self.optimizer not in ("adam", "sgd"):
            raise UserError(f"--optimizer must be adam or sgd, got {self.optimizer!r}")
        engine_name(self.engine)
        for name in ("runs", "epochs", "search_runs", "run_batch"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.lr is not None:
            bounds.positive_finite("--lr", self.lr)
        bounds.count("--runs", self.runs, bounds.MAX_RUNS)
        bounds.count("--search-runs", self.search_runs, bounds.MAX_SEARCH_RUNS)
        bounds.count("--epochs", self.epochs, bounds.MAX_EPOCHS)
        bounds.seed(self.seed)


def choose_lr(scores: np.ndarray, grid=LR_GRID) -> tuple[float, list[float]]:
    """scores [search_runs, len(grid)] trajectory accuracies -> (chosen rate, best rate per run);
    the rule shared with sine: experiment.evaluation.rate_search.choose_lr."""
    return rate_search.choose_lr(scores, grid)


def lr_grid(protocol: Protocol) -> tuple:
    """The rates a protocol searches: its bundle's own (ANML's), else LR_GRID."""
    return protocol_bundle(protocol.name).lr_grid or LR_GRID


def search_lr(learner: EvaluationLearner, feats_train: torch.Tensor, n: int, progress=None) -> dict:
    """The learning-rate search for n classes. It sees only the training-drawer features."""
    p = learner.protocol
    grid = lr_grid(p)
    specs = run_specs(p.seed, "lr_search", n, p.search_runs, feats_train.shape[0], p.iid, p.epochs)
    scores = np.zeros((len(specs), len(grid)))
    for j, lr in enumerate(grid):
        finals = learner.train(feats_train, specs, lr)
        scores[:, j] = learner.trajectory_accuracy(feats_train, specs, finals)
        if progress is not None:
            progress.update(len(specs) * len(specs[0].order))
    chosen, best = choose_lr(scores, grid)
    return {"lr": chosen, "grid": list(grid), "best_per_search_run": best,
            "scores": np.round(scores, 8).tolist(), "mean_scores": np.round(scores.mean(axis=0), 8).tolist(),
            "classes": [s.classes.tolist() for s in specs]}


def total_steps(schedule, protocol: Protocol) -> int:
    trials = protocol.runs + (0 if protocol.lr is not None else protocol.search_runs * len(lr_grid(protocol)))
    return sum(trials * TRAIN_DRAWERS * n * protocol.epochs for n in schedule)


def check_schedule(schedule, n_classes: int, n_outputs: int, where: str = "the evaluation split") -> None:
    too_many = [n for n in schedule if n > n_classes]
    if too_many:
        raise UserError(f"--schedule asks for {max(too_many)} classes, but {where} has only {n_classes}")
    if n_outputs < n_classes:
        raise UserError(f"the network has {n_outputs} outputs, fewer than the {n_classes} evaluation classes "
                        "it would have to label (labels are evaluation class ids)")


def evaluate(pln: nn.Module, bank: FeatureBank, schedule, protocol: Protocol, *, device="cpu",
             cache_dir=None, progress: bool = False, report=None) -> dict:
    """The whole protocol on a frozen RLN's features, for every class count in `schedule`."""
    learner = OnlineLearner(pln, protocol, device, cache_dir)
    result = run_protocol(learner, bank, schedule, progress=progress, report=report)
    result["protocol"].update(protocol_record(protocol.name, asdict(protocol), linear_pln=learner.init.linear))
    return {**result, "features": {"key": bank.key, "n_features": bank.n_features}}


@runtime_checkable
class EvaluationLearner(Interface):
    """What `run_protocol` drives: the frozen-RLN `OnlineLearner` (features) and Scratch's learner
    (scratch.py, images). `train` gets the training drawers only; `held_out_accuracy` drawers 16-20."""

    protocol: Protocol
    n_outputs: int

    def init(self, seed: int) -> list[torch.Tensor]:
        """A run's starting parameters, from its seed alone."""

    def train(self, bank_train: torch.Tensor, specs: list[RunSpec], lr: float) -> list[list[torch.Tensor]]:
        """Final parameters of each run, trained online along `spec.order`."""

    def trajectory_accuracy(self, bank_train: torch.Tensor, specs: list[RunSpec], params) -> list[float]: ...

    def held_out_accuracy(self, bank_test: torch.Tensor, specs: list[RunSpec], params) -> list[float]: ...

    def record(self) -> dict:
        """What results.json says about the learner."""


def run_protocol(learner: EvaluationLearner, bank, schedule, *, progress: bool = False, report=None) -> dict:
    """Search, train and score, per class count, with any learner (the frozen-RLN OnlineLearner,
    or Scratch on images): both see the same run streams, class sets and learning-rate rule.
    `bank.train` [C, 15, ...] and `bank.test` [C, 5, ...] are what the learner consumes (features,
    or images); the search is handed `bank.train` only. `report(n, entry)` after each count."""
    protocol = learner.protocol
    schedule = tuple(int(n) for n in schedule)
    check_schedule(schedule, bank.n_classes, learner.n_outputs)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total_steps(schedule, protocol), desc="online steps", unit="step", unit_scale=True,
                   disable=None)  # None: only in a terminal
    by_classes = {}
    for n in schedule:
        search = None if protocol.lr is not None else search_lr(learner, bank.train, n, bar)
        lr = protocol.lr if search is None else search["lr"]
        specs = run_specs(protocol.seed, "eval", n, protocol.runs, bank.n_classes, protocol.iid, protocol.epochs)
        finals = learner.train(bank.train, specs, lr)
        train_acc = np.array(learner.trajectory_accuracy(bank.train, specs, finals))
        test_acc = np.array(learner.held_out_accuracy(bank.test, specs, finals))
        if bar is not None:
            bar.update(len(specs) * len(specs[0].order))
        entry = {"lr": lr, "lr_search": search,
                 "trajectory_accuracy": bootstrap_ci(train_acc), "held_out_accuracy": bootstrap_ci(test_acc),
                 "runs": {"trajectory_accuracy": np.round(train_acc, 8).tolist(),
                          "held_out_accuracy": np.round(test_acc, 8).tolist(),
                          "classes": [s.classes.tolist() for s in specs]}}
        by_classes[str(n)] = entry
        if report is not None:
            report(n, entry)
    if bar is not None:
        bar.close()
    return {
        "schedule": list(schedule),
        "by_classes": by_classes,
        "protocol": {**asdict(protocol), **learner.record(), "lr_grid": list(lr_grid(protocol)),
                     "lr_choice": "per search run the first best in grid order; then the most frequent; "
                                  "frequency ties -> higher mean search accuracy -> smaller rate",
                     "lr_judged_on": "trajectory (training-drawer) accuracy of the search runs only",
                     "classes_from": bank.n_classes, "train_images_per_class": TRAIN_DRAWERS,
                     "test_images_per_class": bank.test.shape[1],
                     "loss": "cross-entropy over all outputs; label = evaluation class id",
                     "batch_size": 1, "adam": {"betas": list(ADAM_BETAS), "eps": ADAM_EPS},
                     "bootstrap_resamples": 1000},
    }


def headline(n: int, entry: dict) -> str:
    tr, te = entry["trajectory_accuracy"], entry["held_out_accuracy"]
    search = entry.get("lr_search")
    votes = ""
    if search:
        votes = f" ({search['best_per_search_run'].count(entry['lr'])}/{len(search['best_per_search_run'])} searches)"
    return (f"n={n:4d}  lr {entry['lr']:.0e}{votes}  trajectory {tr['mean']:.3f} [{tr['ci_low']:.3f}, {tr['ci_high']:.3f}]"
            f"  held-out {te['mean']:.3f} [{te['ci_low']:.3f}, {te['ci_high']:.3f}]")
