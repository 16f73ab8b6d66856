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
held_out_accuracy / record (`EvaluationLearner`): the frozen-RLN `OnlineLearner` here, and Scratch (scratch.py).

Engines (the same maths; measured and compared in docs/engines.md):

* `native` (default where it can run): experiment/evaluation/oml_online.py, compiled by numba,
  runs a whole trajectory of a linear PLN in one call on the CPU. It keeps the weights
  feature-major and touches, per step, only the columns of the image's non-zero features (a ReLU
  RLN's features are ~90% zeros); the other columns' zero-gradient Adam steps are replayed, with
  the same arithmetic, when the column is next read. It is loaded by experiment/evaluation/native.py;
  when numba is missing or fails, `auto` falls back to `portable` after a `warning:` line.
* `portable`: the closed-form step of `model.online.train_linear` (logits, softmax minus one-hot,
  the outer-product gradient, torch.optim.Adam's update; no autograd, no optimiser object), with
  `run_batch` runs batched on a leading dimension; CPU and CUDA. Each run's update uses only its
  own data, so results do not depend on `run_batch`.
* `autograd`: per-step autograd and `torch.optim.Adam` / `SGD` (`train_autograd`): the original's
  way, kept as the reference the others are tested against, and the engine of the 2-layer (2019)
  PLN, which has no closed form here (`auto` and `portable` pick it for such a PLN).

The old spellings `c` (= native) and `torch` (= portable; autograd for a 2-layer PLN) are accepted.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Protocol as Interface
from typing import runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from datasets.omniglot import TRAIN_DRAWERS
from experiment.evaluation import native, rate_search
from experiment.evaluation.features import FeatureBank
from experiment.evaluation.omniglot_protocols import DEFAULT_PROTOCOL, protocol_record
from experiment.evaluation.omniglot_protocols import bundle as protocol_bundle
from model import online
from model.networks import kaiming_normal
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
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


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


class PLNInit:
    """Initial PLN parameters [W0, b0, (W1, b1)] of one run: re-initialised layers get
    Kaiming-normal weights (fan_in, ReLU gain) from the run's own generator and zero biases."""

    def __init__(self, pln: nn.Module, reset: str = "all"):
        if reset not in ("all", "last", "zero"):
            raise UserError(f"--pln-reset must be 'all', 'last' or 'zero', got {reset!r}")
        self.layers = online.pln_linears(pln)
        self.reset = reset

    @property
    def linear(self) -> bool:
        return len(self.layers) == 1

    @property
    def n_outputs(self) -> int:
        return self.layers[-1].out_features

    def __call__(self, seed: int) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        params = []
        for i, layer in enumerate(self.layers):
            if self.reset == "zero" and i == len(self.layers) - 1:
                # A sensitivity check, not the original protocol: a zero output layer starts every
                # representation from uniform predictions, whatever the scale of its features.
                params += [torch.zeros(layer.weight.shape), torch.zeros(layer.out_features)]
            elif self.reset in ("all", "zero") or i == len(self.layers) - 1:
                params += [kaiming_normal(layer.weight.shape, gen), torch.zeros(layer.out_features)]
            else:
                params += [layer.weight.detach().cpu().float().clone(), layer.bias.detach().cpu().float().clone()]
        return params


def _run_data(feats_train: torch.Tensor, spec: RunSpec):
    """Trajectory features [15n, F] in class-sorted order and their labels (class ids)."""
    x = feats_train[torch.as_tensor(spec.classes, device=feats_train.device)].reshape(-1, feats_train.shape[-1])
    y = torch.as_tensor(np.repeat(spec.classes, TRAIN_DRAWERS), device=feats_train.device)
    return x, y


@torch.no_grad()
def _accuracy(params, x: torch.Tensor, y: torch.Tensor, chunk: int = 4096) -> float:
    correct = 0
    for i in range(0, len(x), chunk):
        out = online.forward([p.unsqueeze(0) for p in params], x[i:i + chunk].unsqueeze(0))[0]
        correct += (out.argmax(1) == y[i:i + chunk]).sum().item()
    return correct / len(x)


# --- engines -------------------------------------------------------------------------------------

ENGINES = ("auto", "native", "portable", "autograd")
ENGINE_SPELLINGS = {"c": "native", "torch": "portable"}  # the names before the numba engine


def engine_name(text: str) -> str:
    """A user's --engine value in today's names (old spellings accepted)."""
    name = ENGINE_SPELLINGS.get(text, text)
    if name not in ENGINES:
        raise UserError(f"--engine must be one of {', '.join(ENGINES)} (or c, torch), got {text!r}")
    return name


def torch_adam(params, lr: float) -> torch.optim.Optimizer:
    """torch.optim.Adam with the protocol's betas and eps: the fused kernel where this torch has
    it (CUDA; CPU from torch 2.4), else the single-tensor loop, which older torch releases (the
    bound in requirements.txt is 2.1) run instead: the same update, up to last-bit roundings."""
    try:
        return torch.optim.Adam(params, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS, fused=True)
    except (RuntimeError, ValueError):  # "fused=True requires ... supported devices"
        return torch.optim.Adam(params, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS, foreach=False)


def train_autograd(inits: list[list[torch.Tensor]], xs: torch.Tensor, ys: torch.Tensor, orders: np.ndarray,
                   lr: float, optimizer: str) -> list[list[torch.Tensor]]:
    """R runs at once with per-step autograd and torch.optim: inits[r] the run's start params,
    xs [R, 15n, F], ys [R, 15n], orders [R, T]. Any PLN of Linear and ReLU layers."""
    device = xs.device
    params = [torch.stack([init[k] for init in inits]).to(device).requires_grad_() for k in range(len(inits[0]))]
    opt = torch_adam(params, lr) if optimizer == "adam" else torch.optim.SGD(params, lr=lr)
    runs = torch.arange(xs.shape[0], device=device)
    orders = torch.as_tensor(orders, device=device)
    for t in range(orders.shape[1]):
        rows = orders[:, t]
        out = online.forward(params, xs[runs, rows].unsqueeze(1)).squeeze(1)
        loss = F.cross_entropy(out, ys[runs, rows], reduction="sum")
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()
    return [[p[r].detach() for p in params] for r in range(xs.shape[0])]


def train_portable(inits: list[list[torch.Tensor]], xs: torch.Tensor, ys: torch.Tensor, orders: np.ndarray,
                   lr: float, optimizer: str) -> list[list[torch.Tensor]]:
    """R runs of a linear PLN at once with the closed-form step (model.online.train_linear)."""
    device = xs.device
    w = torch.stack([init[0] for init in inits]).to(device)
    b = torch.stack([init[1] for init in inits]).to(device)
    w, b = online.train_linear(w, b, xs, ys, torch.as_tensor(orders, device=device), lr, optimizer,
                               ADAM_BETAS, ADAM_EPS)
    return [[w[r], b[r]] for r in range(xs.shape[0])]


def train_native(fn, init: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, order: np.ndarray,
                 lr: float, optimizer: str) -> list[torch.Tensor]:
    """One run of a linear PLN with the native kernel `fn` (native.kernel()); x [15n, F], y [15n]."""
    return native.train_native(fn, init, x, y, order, lr, optimizer, ADAM_BETAS, ADAM_EPS)


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


class OnlineLearner:
    """Trains fresh PLNs on cached features and scores them; the one place the engines meet."""

    def __init__(self, pln: nn.Module, protocol: Protocol, device="cpu", cache_dir=None):
        protocol.validate()  # cache_dir: accepted for callers of the C engine's time; numba keeps its own cache
        self.init = PLNInit(pln, protocol.reset)
        self.protocol = protocol
        self.device = torch.device(device)
        self.engine, self.native_fn = self._pick(engine_name(protocol.engine))

    def _pick(self, wanted: str):
        """(engine, native kernel or None). auto: native for a linear PLN on the CPU when numba
        works (else portable, after native's `warning:`); portable on CUDA; autograd for a 2-layer PLN."""
        if wanted == "autograd" or not self.init.linear:
            if wanted == "native":
                raise UserError("--engine native needs a linear PLN (this PLN has hidden layers: use auto)")
            return "autograd", None
        if wanted == "portable" or (wanted == "auto" and self.device.type != "cpu"):
            return "portable", None
        if self.device.type != "cpu":
            raise UserError("--engine native runs on the CPU only (use auto or portable on CUDA)")
        fn = native.kernel()
        if fn is None and wanted == "native":
            raise UserError("--engine native needs numba (pip install numba); see the warning above")
        return ("native", fn) if fn is not None else ("portable", None)

    @property
    def n_outputs(self) -> int:
        return self.init.n_outputs

    def record(self) -> dict:
        """What results.json says about this learner."""
        return {"learner": "frozen_rln", "engine": self.engine, "pln_layers": len(self.init.layers),
                "n_outputs": self.n_outputs,
                "trained": "the PLN only: the RLN is frozen and its features are computed once",
                "initialisation": {"all": "every PLN layer re-initialised", "last": "output layer re-initialised, "
                                   "earlier PLN layers keep the checkpoint's weights", "zero": "hidden layers "
                                   "re-initialised, output layer zero"}[self.protocol.reset]}

    def train(self, feats_train: torch.Tensor, specs: list[RunSpec], lr: float):
        """Final PLN params of each run (the trajectory data of a run come from feats_train only)."""
        data = [_run_data(feats_train, s) for s in specs]
        finals = []
        if self.engine == "native":
            inits = [self.init(spec.init_seed) for spec in specs]

            def one(i):
                return train_native(self.native_fn, inits[i], *data[i], specs[i].order, lr, self.protocol.optimizer)
            # The kernel releases the GIL and runs are independent, so threads train runs side by side:
            # the same numbers as the loop, on as many cores as torch may use (OMP_NUM_THREADS).
            workers = min(len(specs), max(1, torch.get_num_threads()))
            if workers == 1:
                return [one(i) for i in range(len(specs))]
            with ThreadPoolExecutor(max_workers=workers) as pool:
                return list(pool.map(one, range(len(specs))))
        train = train_portable if self.engine == "portable" else train_autograd
        step = self.protocol.run_batch
        for start in range(0, len(specs), step):
            chunk = specs[start:start + step]
            xs = torch.stack([d[0] for d in data[start:start + step]])
            ys = torch.stack([d[1] for d in data[start:start + step]])
            orders = np.stack([s.order for s in chunk])
            finals += train([self.init(s.init_seed) for s in chunk], xs, ys, orders, lr, self.protocol.optimizer)
        return finals

    def trajectory_accuracy(self, feats_train, specs, params) -> list[float]:
        return [_accuracy([p.to(self.device) for p in ps], *_run_data(feats_train, s)) for s, ps in zip(specs, params)]

    def held_out_accuracy(self, feats_test, specs, params) -> list[float]:
        out = []
        for s, ps in zip(specs, params):
            x = feats_test[torch.as_tensor(s.classes, device=feats_test.device)].reshape(-1, feats_test.shape[-1])
            y = torch.as_tensor(np.repeat(s.classes, feats_test.shape[1]), device=feats_test.device)
            out.append(_accuracy([p.to(self.device) for p in ps], x, y))
        return out


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
