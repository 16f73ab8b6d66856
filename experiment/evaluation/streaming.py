"""Exact streaming learners (model/streaming.py) under the 2020 Split-Omniglot protocol's streams.

    python evaluate_omniglot.py --model ckpt.pt --learner ncm slda gauss      # one run folder per learner

Each learner sees what the SGD PLN of the 2020 protocol sees (experiment/evaluation/omniglot.py):
run i of n classes is that protocol's run i (`run_specs` on the 'eval' stream: the same classes),
its 15 training images per class learned in one pass, one image at a time, and it is scored on
those images (trajectory accuracy) and on the 5 held-out images (drawers 16-20) of the same
classes, over `runs` runs with 95% bootstrap CIs, in the same results.json layout. The learners
predict among the run's n classes (the ones the stream has shown).

A learner's state after a pass is the sufficient statistics of the images seen, whatever their
order; model.streaming.update (one image) equals model.streaming.from_batch (closed form), which
tests/test_streaming_learners.py checks on permuted streams in float64. So each run's final state
is computed here in closed form (model.streaming.from_classes), in float64, instead of 15n
rank-one updates: the same numbers.

No learning rate, so no rate search. NCM and the Bayesian Gaussian have nothing to choose (the
Gaussian's prior is set from the stream itself: model.streaming.gauss_prior). SLDA's shrinkage is
chosen per class count on the search runs of the SGD rate search (the 'lr_search' stream, drawn
apart from the reported runs): each learns drawers 1-10 of its classes and is scored on drawers
11-15, never on drawers 16-20; the grid is model.streaming.SHRINKAGE_GRID and the choice rule the
rate search's (experiment.evaluation.rate_search.choose_lr). Trajectory accuracy cannot judge a
shrinkage: the less shrinkage, the better LDA fits the images it was fitted to.

Representations: a frozen RLN's cached features (experiment/evaluation/features.py), or, with
--scratch, a fresh random network per run (the run's own seed, as Scratch draws it) whose frozen
features of the run's images are computed per run (nothing to cache: every run has its own net).
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from datasets.omniglot import TRAIN_DRAWERS, to_float
from experiment.evaluation import table2
from experiment.evaluation.omniglot import EVAL_SEED, SEARCH_RUNS, RunSpec, run_specs
from experiment.evaluation.rate_search import choose_lr
from experiment.evaluation.scratch import fresh_params
from experiment.run import Run
from model import streaming
from model.networks import features
from utils import bounds
from utils.errors import UserError
from utils.plotting import plot_omniglot
from utils.stats import bootstrap_ci

LEARNER_NAMES = ("ncm", "slda", "gauss")
LEARNER_LABELS = {"ncm": "NCM", "slda": "SLDA", "gauss": "Bayesian Gaussian"}
SEARCH_TRAIN_DRAWERS = 10  # shrinkage search: learn drawers 1-10, score on drawers 11-15
SCORE_CHUNK = 16384  # images scored at once: a whole run's images (SLDA and Gauss solve once per call)

# The Fig. 4 protocol's flags that mean nothing to a closed-form learner (and Table 2's).
NOT_FOR_STREAMING = ("protocol", "lr", "optimizer", "iid", "epochs", "pln_reset", "run_batch", "engine", *table2.FLAGS)


def split_learners(names) -> tuple[str, ...]:
    """The streaming learners among --learner's values, or () for Table 2's; a mix is refused."""
    names = tuple(names)
    if len(set(names)) != len(names):
        raise UserError(f"--learner lists a learner twice: {' '.join(names)}")
    ours = tuple(n for n in names if n in LEARNER_NAMES)
    if ours and len(ours) != len(names):
        others = [n for n in names if n not in LEARNER_NAMES]
        raise UserError(f"--learner {' '.join(ours)} (exact streaming learners) and {' '.join(others)} (Table 2's SGD "
                        "learners) run different protocols: give them in separate commands")
    return ours


def check_flags(args, defaults) -> None:
    """Refuse the SGD protocols' flags (one line, before anything is read or written)."""
    given = sorted(f for f in NOT_FOR_STREAMING if getattr(args, f) != defaults.get_default(f))
    if given:
        flags = ", ".join("--" + f.replace("_", "-") for f in given)
        raise UserError(f"{flags} {'does' if len(given) == 1 else 'do'} not apply to the exact streaming learners "
                        f"(--learner {' '.join(args.learner)}): they have no learning rate, optimiser or PLN, and "
                        "give the same result for any order of the stream")


@dataclass
class StreamingProtocol:
    runs: int = 50
    search_runs: int = SEARCH_RUNS  # SLDA's shrinkage search (NCM and Gauss search nothing)
    seed: int = EVAL_SEED

    def validate(self):
        for name in ("runs", "search_runs"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        bounds.count("--runs", self.runs, bounds.MAX_RUNS)
        bounds.count("--search-runs", self.search_runs, bounds.MAX_SEARCH_RUNS)
        bounds.seed(self.seed)


# --- representations: a run's features ------------------------------------------------------------

class FrozenFeatures:
    """A frozen RLN's cached features (a FeatureBank: train [C, 15, F], test [C, 5, F])."""

    def __init__(self, bank):
        self.bank = bank
        self.n_classes = bank.n_classes
        self.test_per_class = int(bank.test.shape[1])

    def of_run(self, spec: RunSpec, test: bool = True):
        index = torch.as_tensor(spec.classes, device=self.bank.train.device)
        return self.bank.train[index], (self.bank.test[index] if test else None)

    def record(self) -> dict:
        return {"representation": "the frozen RLN's features, computed once and cached",
                "features": {"key": self.bank.key, "n_features": self.bank.n_features}}


class RandomNetworks:
    """--scratch: per run a fresh random network of the evaluated architecture (scratch.fresh_params
    from the run's init seed, the weights Scratch's run i starts from), frozen; its RLN's features
    of the run's images (EvalImages: train [C, 15, H, W], test [C, 5, H, W])."""

    def __init__(self, net: nn.Module, images, device="cpu"):
        self.net = copy.deepcopy(net).to(device).eval()
        self.images = images
        self.device = torch.device(device)
        self.n_classes = images.n_classes
        self.test_per_class = int(images.test.shape[1])

    @torch.no_grad()
    def of_run(self, spec: RunSpec, test: bool = True):
        for p, v in zip(self.net.parameters(), fresh_params(self.net, spec.init_seed)):
            p.copy_(v)
        index = torch.as_tensor(spec.classes, device=self.images.train.device)
        out = []
        for part in (self.images.train, self.images.test if test else None):
            if part is None:
                out.append(None)
                continue
            picked = part[index]
            flat = picked.reshape(-1, *picked.shape[2:])
            feats = features(self.net.rln, flat, batch_size=512, convert=to_float, device=self.device)
            out.append(feats.reshape(*picked.shape[:2], -1))
        return tuple(out)

    def record(self) -> dict:
        return {"representation": "a fresh random network per run (the run's seed; Kaiming-normal weights, zero "
                                  "biases), frozen; the features of the run's images computed per run",
                "n_parameters": int(sum(p.numel() for p in self.net.parameters()))}


# --- one run ----------------------------------------------------------------------------------------

def _labelled(feats: torch.Tensor, classes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, k, F] features of the run's classes -> rows [n k, F] and their class ids."""
    y = torch.as_tensor(np.repeat(classes, feats.shape[1]), device=feats.device)
    return feats.reshape(-1, feats.shape[-1]), y


def fit(feats: torch.Tensor, classes: np.ndarray, learner: str = "slda") -> streaming.ClassStats:
    """The learners' state after the run's stream of these images [n, k, F] (any order: the same
    state); NCM's without the scatter, which it never reads."""
    return streaming.from_classes(feats, classes, scatter=learner != "ncm")


def scores(learner: str, stats: streaming.ClassStats, x: torch.Tensor, shrinkage: float | None = None) -> torch.Tensor:
    if learner == "ncm":
        return streaming.ncm_scores(stats, x)
    if learner == "slda":
        return streaming.slda_scores(stats, x, shrinkage)
    return streaming.gauss_scores(stats, x)


def accuracy(learner: str, stats, feats: torch.Tensor, classes: np.ndarray, shrinkage=None) -> float:
    x, y = _labelled(feats, classes)
    correct = 0
    for i in range(0, len(x), SCORE_CHUNK):
        predicted = streaming.predict(stats, scores(learner, stats, x[i:i + SCORE_CHUNK], shrinkage))
        correct += int((predicted == y[i:i + SCORE_CHUNK]).sum())
    return correct / len(x)


def search_shrinkage(source, n: int, protocol: StreamingProtocol) -> dict:
    """SLDA's shrinkage for n classes, on the search runs' training drawers only (see the module doc)."""
    specs = run_specs(protocol.seed, "lr_search", n, protocol.search_runs, source.n_classes, False, 1)
    grid = streaming.SHRINKAGE_GRID
    table = np.zeros((len(specs), len(grid)))
    for r, spec in enumerate(specs):
        train, _ = source.of_run(spec, test=False)
        stats = fit(train[:, :SEARCH_TRAIN_DRAWERS], spec.classes)
        for j, eps in enumerate(grid):
            table[r, j] = accuracy("slda", stats, train[:, SEARCH_TRAIN_DRAWERS:], spec.classes, eps)
    chosen, best = choose_lr(table, grid)
    return {"shrinkage": chosen, "grid": list(grid), "best_per_search_run": best,
            "scores": np.round(table, 8).tolist(), "mean_scores": np.round(table.mean(axis=0), 8).tolist(),
            "classes": [s.classes.tolist() for s in specs]}


def evaluate_count(learner: str, source, n: int, protocol: StreamingProtocol) -> dict:
    """One class count: the shrinkage search (SLDA), then `runs` runs scored on both image sets."""
    search = search_shrinkage(source, n, protocol) if learner == "slda" else None
    shrinkage = search["shrinkage"] if search else None
    specs = run_specs(protocol.seed, "eval", n, protocol.runs, source.n_classes, False, 1)
    train_acc, test_acc = [], []
    for spec in specs:
        train, test = source.of_run(spec)
        stats = fit(train, spec.classes, learner)
        train_acc.append(accuracy(learner, stats, train, spec.classes, shrinkage))
        test_acc.append(accuracy(learner, stats, test, spec.classes, shrinkage))
    train_acc, test_acc = np.array(train_acc), np.array(test_acc)
    return {"lr": None, "lr_search": None, "learner": learner, "shrinkage": shrinkage, "shrinkage_search": search,
            "trajectory_accuracy": bootstrap_ci(train_acc), "held_out_accuracy": bootstrap_ci(test_acc),
            "runs": {"trajectory_accuracy": np.round(train_acc, 8).tolist(),
                     "held_out_accuracy": np.round(test_acc, 8).tolist(),
                     "classes": [s.classes.tolist() for s in specs]}}


def check_schedule(schedule, n_classes: int, where: str) -> None:
    too_many = [n for n in schedule if n > n_classes]
    if too_many:
        raise UserError(f"--schedule asks for {max(too_many)} classes, but {where} has only {n_classes}")


def learner_record(learner: str) -> dict:
    """What results.json says about a learner's maths and choices."""
    common = {"state": "per class: count and mean; shared: the pooled within-class scatter (float64)",
              "predicts_among": "the run's n classes (those the stream has shown)"}
    if learner == "ncm":
        return {**common, "rule": "nearest class mean, Euclidean", "hyperparameters": "none"}
    if learner == "slda":
        return {**common, "rule": "LDA: shared covariance S_w / N shrunk as (1 - eps) S + eps (tr S / F) I, equal "
                                  "class priors (Hayes & Kanan 2020's classifier; exact pooled covariance update)",
                "hyperparameters": "eps, searched per class count",
                "shrinkage_grid": list(streaming.SHRINKAGE_GRID),
                "shrinkage_judged_on": f"search runs ('lr_search' stream): drawers 1-{SEARCH_TRAIN_DRAWERS} learned, "
                                       f"accuracy on drawers {SEARCH_TRAIN_DRAWERS + 1}-{TRAIN_DRAWERS}",
                "shrinkage_choice": "per search run the first best in grid order (larger eps first); then the most "
                                    "frequent; ties -> higher mean search accuracy -> smaller eps"}
    return {**common, "rule": "Bayesian Gaussian classifier, shared covariance: flat prior on each class mean, "
                              "inverse-Wishart(psi0 I, nu0) on the covariance; the posterior predictive multivariate "
                              "Student-t (dof nu0 + N - K - F + 1) times the Dirichlet(1) class predictive",
            "hyperparameters": "none searched: nu0 = F + 2; psi0 = the stream's average per-feature variance about "
                               "its grand mean (empirical Bayes, from the sufficient statistics)"}


def evaluate_streaming(learner: str, source, schedule, protocol: StreamingProtocol, *, report=None) -> dict:
    """The whole protocol for one learner; `report(n, entry, seconds)` after each class count."""
    if learner not in LEARNER_NAMES:
        raise UserError(f"unknown streaming learner {learner!r} (one of {', '.join(LEARNER_NAMES)})")
    protocol.validate()
    schedule = tuple(int(n) for n in schedule)
    check_schedule(schedule, source.n_classes, "the split")
    by_classes = {}
    for n in schedule:
        start = time.perf_counter()
        by_classes[str(n)] = evaluate_count(learner, source, n, protocol)
        if report is not None:
            report(n, by_classes[str(n)], time.perf_counter() - start)
    return {"schedule": list(schedule), "by_classes": by_classes,
            "protocol": {**asdict(protocol), "learner": learner, "learner_label": LEARNER_LABELS[learner],
                         **learner_record(learner), **source.record(), "lr": None,
                         "rate_search": "none: these learners have no learning rate",
                         "stream": "run i = the 2020 protocol's run i ('eval' stream: its classes); the 15 training "
                                   "images per class, one pass, one image at a time; the result is the same for any "
                                   "order of classes and images",
                         "computed": "each run's final statistics in closed form (model.streaming.from_classes), equal "
                                     "to the one-image-at-a-time update (tests/test_streaming_learners.py)",
                         "classes_from": source.n_classes, "train_images_per_class": TRAIN_DRAWERS,
                         "test_images_per_class": source.test_per_class, "bootstrap_resamples": 1000}}


def headline(n: int, entry: dict, seconds: float | None = None) -> str:
    tr, te = entry["trajectory_accuracy"], entry["held_out_accuracy"]
    name = LEARNER_LABELS[entry["learner"]]
    choice = f"  eps {entry['shrinkage']:g}" if entry["shrinkage"] is not None else ""
    cost = f"  ({seconds:.1f} s)" if seconds is not None else ""
    return (f"n={n:4d}  {name:17s} trajectory {tr['mean']:.3f} [{tr['ci_low']:.3f}, {tr['ci_high']:.3f}]"
            f"  held-out {te['mean']:.3f} [{te['ci_low']:.3f}, {te['ci_high']:.3f}]{choice}{cost}")


def _report(n: int, entry: dict, spent: float, seconds: dict) -> None:
    seconds[str(n)] = round(spent, 2)
    print(headline(n, entry, spent), flush=True)


# --- run folders --------------------------------------------------------------------------------------

def write_evaluations(learners, source, schedule, protocol: StreamingProtocol, *, config: dict, label: str,
                      model: dict, split: dict, name: str | None, results_dir, device, sweep: dict,
                      inputs: dict) -> list[Path]:
    """One run folder per learner (results.json in the SGD PLN's layout, fig4.png, metadata with the
    seconds per class count); `config` is the run's config.json, its "evaluated" gaining the learner
    so that experiment.aggregate keeps learners apart."""
    folders = []
    for learner in learners:
        run_config = {**config, "evaluated": {**config["evaluated"], "learner": learner}, "learner": learner}
        run = Run.create(run_config, dataset="omniglot_eval", name=name or learner, results_dir=results_dir,
                         device=device)
        run.save_metadata(sweep=sweep)
        start, cpu, seconds = time.perf_counter(), time.process_time(), {}
        result = evaluate_streaming(learner, source, schedule, protocol,
                                    report=lambda n, entry, spent, seconds=seconds: _report(n, entry, spent, seconds))
        result = {"benchmark": "omniglot", "label": f"{label}, {LEARNER_LABELS[learner]}", "split": split,
                  "model": model, **result}
        run.write_json("results.json", result)
        plot_omniglot([result], [result["label"]], run.dir / "fig4.png")
        run.save_metadata(**inputs, learner=learner, count_seconds=seconds,
                          evaluation_seconds=round(time.perf_counter() - start, 2),
                          evaluation_cpu_seconds=round(time.process_time() - cpu, 2))
        print(f"results: {run.dir / 'results.json'}")
        folders.append(run.dir)
    return folders
