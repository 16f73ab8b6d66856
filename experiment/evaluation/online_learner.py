"""The online learner of the Split-Omniglot evaluation: a fresh PLN per run, trained online on a
frozen RLN's cached features and scored; the protocol and its driver are experiment/evaluation/omniglot.py.

Each run's PLN starts from `PLNInit` (Kaiming-normal weights from the run's own seed, zero biases),
learns its trajectory with batch size 1, and is scored by `_accuracy`. `OnlineLearner` is the one
place the engines meet; the maths they share is model/online.py's.

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
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from datasets.omniglot import TRAIN_DRAWERS
from experiment.evaluation import native
from model import online
from model.networks import kaiming_normal
from utils.errors import UserError

if TYPE_CHECKING:  # the protocol's types; omniglot.py imports this module, not the other way round
    from experiment.evaluation.omniglot import Protocol, RunSpec

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


# --- a run's PLN: its start and its data ---------------------------------------------------------

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


# --- the learner ---------------------------------------------------------------------------------

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
