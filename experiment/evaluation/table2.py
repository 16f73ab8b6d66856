"""The paper's Table 2: online continual-learning methods on top of a representation.

Columns (representations): `OML` and `Pre-training` freeze a checkpoint's RLN and learn a fresh
linear PLN on its cached features (model.continual.models.LinearHead); `Standard` learns the whole
network online, starting from the i.i.d.-pretrained network's RLN and a fresh PLN, and runs it per
step (model.continual.models.Network). Rows (learners, model/continual/): Online, Approx IID,
ER-Reservoir, MER, EWC, all SGD with batch 1 and one pass (the paper's §5).

Settings: C classes per task and T tasks (the paper's 1 x 50 and 5 x 20). Run i draws C*T classes
exactly as run i of the Fig. 4 protocol with C*T classes does (experiment/evaluation/omniglot.py
`draw_run` on the same stream: same classes, same PLN seed). Task t is classes tC..tC+C-1 of the
sorted draw; its 15C training images are shuffled within the task (a task is one distribution;
with C = 1 this is the class's 15 images in a random order) and the tasks follow one another.
Approx IID is the paper's "random shuffling of the trajectory": the whole stream permuted, so tasks
do not matter to it; EWC adds a penalty at the end of every task but the last.

Hyperparameters are searched per cell (learner x representation x setting) on `search_runs`
validation trajectories drawn from their own stream ('lr_search', as the Fig. 4 rate search), from
the reported classes (the paper's practice) or from another split's (`search_train`: the
meta-validation classes, which leave the reported classes to be read only to report; a setting
longer than that split has classes for is searched with fewer tasks, `search_setting`),
judged on trajectory (training-image) accuracy only, with the evaluation's rule
(experiment.evaluation.rate_search.choose_lr) over the grid of combinations. Reported: held-out
accuracy on the 5 test images of every class seen, and trajectory accuracy, over `runs` runs: mean,
std (ddof=1) and a 95% bootstrap CI.
"""
from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from datasets.omniglot import TRAIN_DRAWERS, to_float
from experiment.evaluation.omniglot import EVAL_SEED, draw_run
from experiment.evaluation.online_learner import PLNInit
from experiment.evaluation.rate_search import choose_lr
from model.continual import LEARNERS, ContinualLearner
from model.continual.models import LearnerModel, LinearHead, Network
from model.continual.reservoir import MEMORY_SIZE
from utils import bounds
from utils.errors import UserError
from utils.seeding import stream
from utils.stats import bootstrap_ci

LEARNER_NAMES = ("online", "iid", "er", "mer", "ewc")
ROW_LABELS = {"online": "Online", "iid": "Approx IID", "er": "ER-Reservoir", "mer": "MER", "ewc": "EWC"}
COLUMNS = ("Standard", "OML", "Pre-training")
SETTINGS = ((1, 50), (5, 20))  # (classes per task, tasks), the paper's two
TABLE2_TAG = 2  # extra stream index: the within-task shuffles and the learner's draws, apart from draw_run's

# The paper's Table 2 (held-out accuracy %, mean +- std over 10 runs): [learner][setting][column].
PAPER = {
    "online": {"1x50": (4.64, 2.61, 64.72, 2.57, 21.16, 2.71), "5x20": (1.40, 0.43, 55.32, 2.25, 11.80, 1.92)},
    "iid": {"1x50": (53.95, 5.50, 75.12, 3.24, 54.29, 3.48), "5x20": (48.02, 5.67, 67.03, 2.10, 46.02, 2.83)},
    "er": {"1x50": (52.56, 2.12, 68.16, 3.12, 36.72, 3.06), "5x20": (24.32, 5.37, 60.92, 2.41, 37.44, 1.67)},
    "mer": {"1x50": (54.88, 4.12, 76.00, 2.07, 62.76, 2.16), "5x20": (29.02, 4.01, 62.05, 2.19, 42.05, 3.71)},
    "ewc": {"1x50": (5.08, 2.47, 64.44, 3.13, 18.72, 3.97), "5x20": (2.04, 0.35, 56.03, 3.20, 10.03, 1.53)},
}

# Search grids, per kind of representation: the frozen RLN's linear PLN is cheap, the whole network
# is 10-50x dearer per step, so its grids are smaller (sizes chosen from measured cost: docs/table2.md).
GRIDS = {
    "features": {"lr": (0.1, 0.03, 0.01, 0.003, 0.001, 3e-4),
                 "er": {"replay": (5, 10)},
                 "mer": {"beta": (1.0, 0.1)},
                 "ewc": {"lam": (0.1, 1.0, 10.0)}},
    "network": {"lr": (0.03, 0.01, 0.003),
                "er": {"replay": (10,)},
                "mer": {"beta": (1.0, 0.1)},
                "ewc": {"lam": (0.01, 1.0)}},
}
# evaluate_omniglot.py's flags that only Table 2 reads (refused by the Fig. 4 protocol and the streaming learners)
FLAGS = ("whole_network", "classes_per_task", "n_tasks", "search_classes", "hyperparameters_from", "memory",
         "mer_batches", "mer_batch_size", "mer_gamma")
SEARCH_RUNS = {"features": 2, "network": 1}  # validation trajectories per cell (cost: docs/table2.md)
MAX_MEMORY = 10_000   # above every trajectory's length (659 evaluation classes x 15 images)
MAX_MER_STEPS = 100   # MER's s and k (defaults 2 and 3): every sample costs s x k SGD steps


def setting_name(classes_per_task: int, tasks: int) -> str:
    return f"{classes_per_task}x{tasks}"


def grid(kind: str, learner: str, grids=None) -> list[dict]:
    """Every hyperparameter combination of a cell, larger rates first (choose_lr's ties go to the earlier)."""
    spec = (grids or GRIDS)[kind]
    extra = spec.get(learner, {})
    names = ["lr", *extra]
    values = [spec["lr"], *extra.values()]
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


@dataclass
class Table2Protocol:
    runs: int = 10
    search_runs: int | None = None  # None: SEARCH_RUNS of the representation's kind
    seed: int = EVAL_SEED
    memory: int = MEMORY_SIZE      # ER and MER buffer size (Table 2: 200)
    mer_batches: int = 2           # MER's s: replay batches per incoming sample
    mer_batch_size: int = 3        # MER's k: samples per batch (the current one + k-1 memories)
    mer_gamma: float = 1.0         # MER's gamma (across-batch Reptile rate); beta is searched

    def validate(self):
        for name in ("runs", "search_runs", "memory", "mer_batches", "mer_batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        bounds.at_least("--memory", self.memory, 1, MAX_MEMORY,
                        "a larger buffer holds the whole trajectory, at most 659 classes x 15 images, all the same")
        for flag, value in (("--mer-batches", self.mer_batches), ("--mer-batch-size", self.mer_batch_size)):
            bounds.at_least(flag, value, 1, MAX_MER_STEPS, "a sane bound: every sample costs s x k SGD steps")
        if not (math.isfinite(self.mer_gamma) and 0 < self.mer_gamma <= 1):
            raise UserError(f"--mer-gamma must be in (0, 1] (a Reptile interpolation rate), got {self.mer_gamma}")
        bounds.count("--runs", self.runs, bounds.MAX_RUNS)
        if self.search_runs is not None:
            bounds.count("--search-runs", self.search_runs, bounds.MAX_SEARCH_RUNS)
        bounds.seed(self.seed)


# --- streams ---------------------------------------------------------------------------------------

@dataclass
class TaskRun:
    """One run of a setting: sorted class ids, the visiting order of its 15n training images (rows
    of the class-major trajectory), the PLN seed, the learner's seed, and the images per task."""
    classes: np.ndarray
    order: np.ndarray
    init_seed: int
    learner_seed: int
    task_length: int


def draw_task_run(seed: int, purpose: str, classes_per_task: int, tasks: int, i: int, n_pool: int,
                  iid: bool) -> TaskRun:
    n = classes_per_task * tasks
    spec = draw_run(stream(seed, purpose, n, i), n_pool, n, False, 1)  # run i of the Fig. 4 protocol
    rng = stream(seed, purpose, n, i, TABLE2_TAG)
    task_length = classes_per_task * TRAIN_DRAWERS
    if iid:
        order = rng.permutation(n * TRAIN_DRAWERS)
    else:
        order = np.concatenate([t * task_length + rng.permutation(task_length) for t in range(tasks)])
    return TaskRun(spec.classes, order, spec.init_seed, int(rng.integers(2**62)), task_length)


def task_runs(seed, purpose, classes_per_task, tasks, count, n_pool, iid) -> list[TaskRun]:
    return [draw_task_run(seed, purpose, classes_per_task, tasks, i, n_pool, iid) for i in range(count)]


# --- representations --------------------------------------------------------------------------------

HEAD_STARTS = ("all", "zero")  # a fresh PLN: Kaiming-normal (the paper's), or a zero output layer (a check)


def head_start(reset: str) -> str:
    """What a run's fresh PLN starts from, in words; a start Table 2 has no meaning for is refused."""
    if reset not in HEAD_STARTS:
        raise UserError(f"Table 2 starts a fresh PLN in every run: --pln-reset all (Kaiming-normal, the default) "
                        f"or zero (a zero output layer), not {reset!r}")
    return ("a zero output layer, any hidden layer Kaiming-normal (a sensitivity check, not the paper's)" if reset == "zero"
            else "Kaiming-normal weights from the run's seed, zero biases")


class FrozenRLN:
    """A frozen RLN's cached features ([C, 15, F] train, [C, 5, F] test); a fresh linear PLN per run
    (Kaiming-normal, or with `reset="zero"` all zeros)."""

    kind = "features"

    def __init__(self, pln: nn.Module, column: str, reset: str = "all"):
        self.head = head_start(reset)
        self.init = PLNInit(pln, reset)
        if not self.init.linear:
            raise UserError("Table 2 learners need a linear PLN (this checkpoint's PLN has hidden layers)")
        self.model = LinearHead()
        self.column = column
        self.n_outputs = self.init.n_outputs

    def start(self, seed: int) -> list[torch.Tensor]:
        return LinearHead.from_pln(*self.init(seed))

    @staticmethod
    def inputs(bank: torch.Tensor, classes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = bank[torch.as_tensor(classes)].reshape(-1, bank.shape[-1])
        return x, torch.as_tensor(np.repeat(classes, bank.shape[1]))

    def record(self) -> dict:
        return {"representation": self.column, "trained": "a fresh linear PLN on the frozen RLN's cached features",
                "pln_initialisation": self.head}


class WholeNetwork:
    """The Standard column: every parameter learned online on images, from the checkpoint's RLN
    (the i.i.d.-pretrained one in the paper) and a fresh PLN (the evaluation classes' head)."""

    kind = "network"
    column = "Standard"

    def __init__(self, net: nn.Module, reset: str = "all"):
        self.head = head_start(reset)
        self.net = net
        self.model = Network(net)
        self.init = PLNInit(net.pln, reset)
        self.rln = [p.detach().clone() for p in net.rln.parameters()]
        if len(self.rln) + len(self.init.layers) * 2 != len(self.model.names):
            raise UserError("the whole-network learner expects parameters in the RLN and the PLN's Linear layers only")
        self.n_outputs = self.init.n_outputs

    def start(self, seed: int) -> list[torch.Tensor]:
        return [p.clone() for p in self.rln] + self.init(seed)

    @staticmethod
    def inputs(images: torch.Tensor, classes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = to_float(images[torch.as_tensor(classes)]).reshape(-1, 1, *images.shape[-2:])
        return x, torch.as_tensor(np.repeat(classes, images.shape[1]))

    def record(self) -> dict:
        return {"representation": self.column,
                "trained": "the whole network (every RLN convolution and the PLN), online on the images",
                "initialisation": f"RLN: the checkpoint's weights; PLN: {self.head}",
                "n_parameters": int(sum(p.numel() for p in self.net.parameters()))}


# --- one run -------------------------------------------------------------------------------------------

def make_learner(name: str, model: LearnerModel, hp: dict, rng: np.random.Generator,
                 protocol: Table2Protocol) -> ContinualLearner:
    cls = LEARNERS[name]
    extra = {k: v for k, v in hp.items() if k != "lr"}
    if name in ("er", "mer"):
        extra["memory"] = protocol.memory
    if name == "mer":
        extra.setdefault("gamma", protocol.mer_gamma)
        extra.update(batches=protocol.mer_batches, batch_size=protocol.mer_batch_size)
    return cls(model, hp["lr"], rng=rng, **extra)


def train_run(rep, learner: str, hp: dict, run: TaskRun, train: torch.Tensor, protocol: Table2Protocol):
    """The final parameters of one run: the learner fed the run's stream one sample at a time."""
    x, y = rep.inputs(train, run.classes)
    params = rep.start(run.init_seed)
    algo = make_learner(learner, rep.model, hp, np.random.default_rng(run.learner_seed), protocol)
    ends = dict(task_windows(run.order, run.task_length))
    for t, row in enumerate(run.order.tolist()):
        algo.observe(params, x[row:row + 1], y[row:row + 1])
        if t + 1 in ends:
            rows = torch.as_tensor(ends[t + 1])
            algo.end_task(params, x[rows], y[rows])
    return params


def task_windows(order: np.ndarray, task_length: int) -> list[tuple[int, np.ndarray]]:
    """(samples seen, that task's rows) at the end of every task but the last: where a learner's
    `end_task` runs (EWC's penalty). The task boundary's one definition."""
    return [(end, order[end - task_length:end]) for end in range(task_length, len(order), task_length)]


@torch.no_grad()
def accuracy(rep, params, bank: torch.Tensor, classes: np.ndarray, chunk: int = 1024) -> float:
    x, y = rep.inputs(bank, classes)
    correct = sum((rep.model.logits(params, x[i:i + chunk]).argmax(1) == y[i:i + chunk]).sum().item()
                  for i in range(0, len(x), chunk))
    return correct / len(x)


def summary(values) -> dict:
    values = np.asarray(values, dtype=np.float64)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return {**bootstrap_ci(values), "std": round(std, 8)}


# --- a cell ----------------------------------------------------------------------------------------------

def search_setting(setting: tuple[int, int], n_classes: int) -> tuple[int, int]:
    """The setting a search runs on a split of `n_classes`: the same classes per task, and as many of
    the setting's tasks as the split has classes for (5 x 20 on the 97 meta-validation classes: 5 x 19)."""
    classes_per_task, tasks = setting
    if classes_per_task > n_classes:
        raise UserError(f"the setting {setting_name(*setting)} needs {classes_per_task} classes per task, but the "
                        f"search split has {n_classes}")
    return classes_per_task, min(tasks, n_classes // classes_per_task)


def search(rep, learner: str, setting: tuple[int, int], train: torch.Tensor, protocol: Table2Protocol,
           grids=None) -> dict:
    """The cell's hyperparameters, chosen on validation trajectories by their trajectory accuracy.
    It is handed training images (or features) only: the reported classes', or another split's."""
    combos = grid(rep.kind, learner, grids)
    count = protocol.search_runs or SEARCH_RUNS[rep.kind]
    runs = task_runs(protocol.seed, "lr_search", *search_setting(setting, train.shape[0]), count, train.shape[0],
                     learner == "iid")
    scores = np.zeros((len(runs), len(combos)))
    for j, hp in enumerate(combos):
        for r, run in enumerate(runs):
            scores[r, j] = accuracy(rep, train_run(rep, learner, hp, run, train, protocol), train, run.classes)
    chosen, best = choose_lr(scores, tuple(range(len(combos))))
    return {"chosen": combos[chosen], "grid": combos, "best_per_search_run": [combos[b] for b in best],
            "scores": np.round(scores, 8).tolist(), "classes": [r.classes.tolist() for r in runs]}


def evaluate_cell(rep, learner: str, setting: tuple[int, int], bank, protocol: Table2Protocol, grids=None,
                  search_train: torch.Tensor | None = None, chosen: dict | None = None) -> dict:
    """Search (training data only: `bank`'s, or `search_train`, another split's), or take `chosen`, an
    earlier search's choice; then `runs` runs scored on their trajectory and held-out images."""
    if chosen is not None:
        found = {"chosen": dict(chosen), "taken_from_an_earlier_search": True}
    else:
        found = search(rep, learner, setting, bank.train if search_train is None else search_train, protocol, grids)
    hp = found["chosen"]
    runs = task_runs(protocol.seed, "eval", *setting, protocol.runs, bank.n_classes, learner == "iid")
    finals = [train_run(rep, learner, hp, run, bank.train, protocol) for run in runs]
    train_acc = [accuracy(rep, p, bank.train, r.classes) for r, p in zip(runs, finals)]
    test_acc = [accuracy(rep, p, bank.test, r.classes) for r, p in zip(runs, finals)]
    return {"hyperparameters": hp, "search": found,
            "held_out_accuracy": summary(test_acc), "trajectory_accuracy": summary(train_acc),
            "runs": {"held_out_accuracy": np.round(test_acc, 8).tolist(),
                     "trajectory_accuracy": np.round(train_acc, 8).tolist(),
                     "classes": [r.classes.tolist() for r in runs]}}


def check_settings(settings, n_classes: int, n_outputs: int) -> None:
    for c, t in settings:
        if c * t > n_classes:
            raise UserError(f"the setting {c} classes x {t} tasks needs {c * t} classes, but the evaluation split "
                            f"has {n_classes}")
    if n_outputs < n_classes:
        raise UserError(f"the network has {n_outputs} outputs, fewer than the {n_classes} evaluation classes")


def evaluate_table2(rep, bank, learners, settings, protocol: Table2Protocol, *, grids=None, report=None,
                    search_bank=None, search_split: str = "the reported classes", chosen=None) -> dict:
    """Every (setting, learner) cell of one column. `report(setting, learner, entry, seconds)` after each.
    `search_bank`: the split the hyperparameters are searched on (None: `bank`, the reported classes);
    `chosen` (from `chosen_from`): every cell's hyperparameters taken from an earlier search instead."""
    protocol.validate()
    check_settings(settings, bank.n_classes, rep.n_outputs)
    searched = bank if search_bank is None else search_bank
    search_settings = [setting_name(*search_setting(s, searched.n_classes)) for s in settings]
    if chosen is not None:
        search_split, search_settings = chosen["search_classes"], chosen["search_settings"]
    cells = {}
    for setting in settings:
        name = setting_name(*setting)
        cells[name] = {}
        for learner in learners:
            start = time.perf_counter()
            cells[name][learner] = evaluate_cell(rep, learner, setting, bank, protocol, grids,
                                                 None if search_bank is None else search_bank.train,
                                                 None if chosen is None else chosen["cells"][f"{name}/{learner}"])
            if report is not None:
                report(name, learner, cells[name][learner], time.perf_counter() - start)
    return {"column": rep.column, "settings": [setting_name(*s) for s in settings], "learners": list(learners),
            "table2": cells,
            "protocol": {**asdict(protocol), **rep.record(), "grids": (grids or GRIDS)[rep.kind],
                         "search_runs": protocol.search_runs or SEARCH_RUNS[rep.kind],
                         "optimizer": "sgd", "batch_size": 1, "passes": 1,
                         "stream": "task t = classes tC..tC+C-1 of the run's sorted draw, its 15C images shuffled "
                                   "within the task; Approx IID: the whole trajectory shuffled",
                         "hyperparameters_judged_on": "trajectory (training-image) accuracy of the search runs only",
                         "search_classes": search_split, "search_settings": search_settings,
                         "hyperparameters_from": None if chosen is None else chosen["run"],
                         "choice_rule": "per search run the first best combination in grid order; then the most "
                                        "frequent; ties -> higher mean search accuracy -> earlier in the grid",
                         "labels": "evaluation class ids; cross-entropy over all outputs",
                         "std": "sample std over runs (ddof=1)", "bootstrap_resamples": 1000}}


def headline(setting: str, learner: str, entry: dict, seconds: float | None = None) -> str:
    te, tr = entry["held_out_accuracy"], entry["trajectory_accuracy"]
    hp = " ".join(f"{k}={v:g}" for k, v in entry["hyperparameters"].items())
    cost = f"  ({seconds:.0f} s)" if seconds is not None else ""
    return (f"{setting:5s} {ROW_LABELS[learner]:12s} held-out {100 * te['mean']:5.1f} +- {100 * te['std']:4.1f} "
            f"[{100 * te['ci_low']:.1f}, {100 * te['ci_high']:.1f}]  trajectory {100 * tr['mean']:5.1f}  {hp}{cost}")


# --- the table -----------------------------------------------------------------------------------------

def chosen_from(paths, twin: tuple, column: str, settings, learners) -> dict:
    """Every cell's hyperparameters as chosen by the one Table 2 run among `paths` that evaluated a
    checkpoint of this (method, preset, seed) `twin` in this `column` (e.g. the twin meta-trained without
    the selection classes, searched with --search-classes selection); a one-line error otherwise."""
    method, preset, seed = twin
    matches = []
    for path in paths:
        result = read_table2(path)
        run = Path(path) if Path(path).is_dir() else Path(path).parent
        try:
            evaluated = json.loads((run / "config.json").read_text())["evaluated"]
        except (OSError, ValueError, KeyError, TypeError):
            raise UserError(f"'{run}' has no readable config.json with the evaluated checkpoint's config") from None
        if (evaluated.get("method"), evaluated.get("preset"), evaluated.get("seed"), result.get("column")) == \
                (method, preset, seed, column):
            matches.append((run, result))
    if len(matches) != 1:
        raise UserError(f"--hyperparameters-from: {len(matches)} of the {len(paths)} runs given evaluated a {method} "
                        f"checkpoint of preset {preset} and seed {seed} in the {column} column; exactly one must")
    run, result = matches[0]
    cells = {}
    for setting in settings:
        for learner in learners:
            cell = f"{setting_name(*setting)}/{learner}"
            try:
                cells[cell] = result["table2"][setting_name(*setting)][learner]["hyperparameters"]
            except (KeyError, TypeError):
                raise UserError(f"--hyperparameters-from: '{run}' has no {cell} cell") from None
    protocol = result.get("protocol", {})
    searched = protocol.get("search_classes", "the reported classes")
    return {"run": str(run), "cells": cells, "search_classes": f"{searched}, in the search of {run}",
            "search_settings": protocol.get("search_settings")}


def read_table2(path) -> dict:
    """A Table 2 results.json (evaluate_omniglot.py --learner), with a one-line error otherwise."""
    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    try:
        result = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"no readable results file at '{file}' ({type(err).__name__})") from None
    if not isinstance(result, dict) or result.get("benchmark") != "omniglot_table2" or "table2" not in result:
        raise UserError(f"'{file}' is not a Table 2 results file (evaluate_omniglot.py --learner ...)")
    return result


def collect(results: list[dict]) -> dict:
    """{(setting, learner, column): entry} from Table 2 results files (later files win)."""
    cells = {}
    for result in results:
        for setting, by_learner in result["table2"].items():
            for learner, entry in by_learner.items():
                cells[(setting, learner, result["column"])] = entry
    return cells


def format_table(results: list[dict]) -> str:
    """Markdown, the paper's layout: rows = learners, columns = setting x representation; each cell
    'ours mean +- std [95% CI] (paper mean +- std)', held-out accuracy in %."""
    cells = collect(results)
    settings = [s for s in ("1x50", "5x20") if any(k[0] == s for k in cells)]
    settings += sorted({k[0] for k in cells} - set(settings))
    header = ["Method"] + [f"{s}: {c}" for s in settings for c in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for learner in LEARNER_NAMES:
        row = [ROW_LABELS[learner]]
        for s in settings:
            for j, column in enumerate(COLUMNS):
                entry = cells.get((s, learner, column))
                ours = "—"
                if entry is not None:
                    te = entry["held_out_accuracy"]
                    ours = (f"{100 * te['mean']:.1f} ± {100 * te['std']:.1f} "
                            f"[{100 * te['ci_low']:.1f}, {100 * te['ci_high']:.1f}]")
                paper = PAPER.get(learner, {}).get(s)
                if paper is not None:
                    ours += f" ({paper[2 * j]:.2f} ± {paper[2 * j + 1]:.2f})"
                row.append(ours)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
