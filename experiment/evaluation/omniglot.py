"""Split-Omniglot continual classification on a frozen RLN: the 2020 (and 2019) protocol, fast.

Protocol (the August-2020 `evaluate_omniglot.py`, with the choices below made explicit; the
2019 variant, which differs only in the reset, is named in experiment/evaluation/omniglot_protocols.py):

* The RLN is frozen, so the features of every evaluation image are computed **once** per
  checkpoint and cached (in memory, and on disk keyed by the RLN weights, the image size and the
  pixels). Learning-rate trials and runs train only the PLN on those features; nothing re-runs
  the network. A disk file is used only if its shapes fit the split and its tensors hash to the
  sha256 stored with them; otherwise the features are recomputed with a `warning:` line.
* A run draws n classes **without replacement** from the whole evaluation split (659 classes in
  the official data; the original drew from 0..649) and sorts them: the trajectory is the 15
  training images (drawers 1-15) of each class, class after class in ascending class id.
  The target of an image is its evaluation class id, one of the network's output units (1000),
  and the loss is cross-entropy over **all** outputs, as in the original.
* The PLN is reset, then trained online with batch size 1, one pass (`epochs`, `iid` shuffles
  each pass), with Adam (the code; betas 0.9/0.999, eps 1e-8) or plain SGD (the paper's text).
  Reset `all` re-initialises every PLN layer (Kaiming-normal weights, zero biases: the 2020
  code, protocol 2020); `last` keeps a 2-layer (2019) PLN's meta-learned hidden layer and
  re-initialises only the output layer (the 2019 code, protocol 2019). With a linear PLN both
  are the same.
* Reported: accuracy (argmax over all outputs) on the trajectory's images (forgetting) and on
  the 5 held-out images (drawers 16-20) of the same classes (generalisation).
* Learning rate, per class count n: `search_runs` (5) search runs, each on its own class set
  drawn from the `lr_search` stream (apart from the reported runs' `eval` stream), try every
  rate in LR_GRID from the same PLN initialisation and score it by **trajectory accuracy only**
  (the held-out features are not even passed in). Each search run's best rate is the first
  maximum in grid order (0.03 first, so ties go to the larger rate, as the original's strict
  `>`); the chosen rate is the most frequent best; a tie in frequency goes to the rate with the
  higher mean search accuracy over all search runs, then to the smaller rate.
* Every run (search or reported) has its own numpy stream (`utils.seeding.stream(seed, purpose,
  n, i)`) that fixes its classes, its PLN initialisation and its shuffles, so the batched and
  looped engines, and any `runs` count, give the same numbers for the same run.
* `run_protocol` drives any learner with this interface (init / train / trajectory_accuracy /
  test_accuracy / record): the frozen-RLN `OnlineLearner` here, and Scratch
  (experiment/evaluation/scratch.py), which trains a whole fresh network on the images; so baselines
  get the same run streams, class sets and learning-rate rule, run for run.

Engines (all exact implementations of the same maths):

* `c`: a small C loop (compiled once with the system C compiler, loaded with ctypes) that runs a
  whole trajectory of a linear PLN in one call. It is built into `<cache>/kernels-<uid>/`, a
  folder of mode 0700 owned by the user, with the library's sha256 beside it; a library whose
  owner, mode or hash is wrong is rebuilt (with a `warning:`), never loaded, since a damaged
  shared object crashes the process (SIGBUS/SIGILL) instead of raising. It keeps the weights feature-major and touches,
  per step, only the columns of the image's non-zero features; the zero-gradient Adam steps of
  the other columns are replayed, with the same arithmetic, when a column is next read (see the
  C source). Every weight takes exactly the dense loop's steps; the memory traffic drops.
* `torch`: leading-run-dimension PLN weights (`model.online.forward`), autograd and
  `torch.optim.Adam(fused=True)` / `SGD`; `run_batch` runs share one tensor (the loss is the sum
  of the runs' losses, and both optimisers are element-wise, so each run gets its own update).
  Used for the 2-layer PLN, on GPU, or when no C compiler is available.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from datasets.omniglot import TRAIN_DRAWERS
from experiment.evaluation.features import FeatureBank, default_cache_dir
from model import online
from model.networks import kaiming_normal
from experiment.evaluation.omniglot_protocols import DEFAULT_PROTOCOL, protocol_record
from experiment.evaluation.omniglot_protocols import bundle as protocol_bundle
from utils import bounds
from experiment.evaluation import rate_search
from utils.errors import UserError
from utils.messages import quiet_logger, warn
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
            raise UserError(f"--reset must be 'all', 'last' or 'zero', got {reset!r}")
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

def train_torch(inits: list[list[torch.Tensor]], xs: torch.Tensor, ys: torch.Tensor, orders: np.ndarray,
                lr: float, optimizer: str) -> list[list[torch.Tensor]]:
    """R runs at once: inits[r] the run's start params, xs [R, 15n, F], ys [R, 15n], orders [R, T]."""
    device = xs.device
    params = [torch.stack([init[k] for init in inits]).to(device).requires_grad_() for k in range(len(inits[0]))]
    if optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS, fused=True)
    else:
        opt = torch.optim.SGD(params, lr=lr)
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


_C_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* Online learning of a linear softmax head (O outputs, F features), batch size 1, T steps: step
   t (1-based) uses feature row order[t-1] of X and its label. Adam as torch.optim.Adam (no weight
   decay, no amsgrad; sqrt(v)/sqrt(1-beta2^t) is computed as sqrt(v) * (1/sqrt(1-beta2^t)), one
   division fewer, a last-bit rounding difference); adam == 0 is plain SGD.

   The weights and Adam moments are stored feature-major (WT[j*O + i] = W[i][j]) and updated
   lazily: at a step where feature j is 0 its gradient column is 0, so the step only decays the
   moments and moves the column by m / (sqrt(v) + eps); nothing reads that column until feature j
   is non-zero again (a logit needs only the columns of the image's non-zero features). Those
   zero-gradient steps are applied, with the same arithmetic and in the same order, when the
   column is next needed (and at the end), so every weight takes exactly the steps the dense loop
   would take; only the memory traffic shrinks to the non-zero features of each image. SGD needs
   no catching up: a zero gradient does not move an SGD weight. */
static void catch_up(float *w, float *m, float *v, int64_t O, int64_t s0, int64_t s1,
                     const float *ss, const float *ibc, float c1, float fb2, float c2, float feps) {
    for (int64_t s = s0; s <= s1; ++s) {
        const float st = ss[s], bc = ibc[s];
        #pragma omp simd
        for (int64_t i = 0; i < O; ++i) {
            const float g = 0.f;
            const float mi = m[i] + c1 * (g - m[i]);
            const float vi = fb2 * v[i] + c2 * g * g;
            m[i] = mi; v[i] = vi;
            w[i] = w[i] - st * mi / (sqrtf(vi) * bc + feps);
        }
    }
}

int oml_online(float *WT, float *b, float *mT, float *vT, float *mb, float *vb,
               const float *X, const int64_t *order, const int64_t *labels,
               int64_t O, int64_t F, int64_t T, int adam,
               double lr, double beta1, double beta2, double eps) {
    float *z = (float *)malloc(sizeof(float) * O), *e = (float *)malloc(sizeof(float) * O);
    float *ss = (float *)malloc(sizeof(float) * (T + 1)), *ibc = (float *)malloc(sizeof(float) * (T + 1));
    int64_t *last = (int64_t *)calloc(F, sizeof(int64_t)), *act = (int64_t *)malloc(sizeof(int64_t) * F);
    if (!z || !e || !ss || !ibc || !last || !act) {
        free(z); free(e); free(ss); free(ibc); free(last); free(act); return -1;
    }
    const float c1 = (float)(1.0 - beta1), fb2 = (float)beta2, c2 = (float)(1.0 - beta2);
    const float feps = (float)eps, flr = (float)lr;
    for (int64_t s = 1; s <= T; ++s) {
        ss[s] = adam ? (float)(lr / (1.0 - pow(beta1, (double)s))) : flr;
        ibc[s] = (float)(1.0 / sqrt(1.0 - pow(beta2, (double)s)));  /* sqrt(v_hat) = sqrt(v) * ibc */
    }
    for (int64_t t = 1; t <= T; ++t) {
        const float *x = X + order[t - 1] * F;
        int64_t na = 0;
        for (int64_t j = 0; j < F; ++j) if (x[j] != 0.f) act[na++] = j;
        for (int64_t i = 0; i < O; ++i) z[i] = b[i];
        for (int64_t a = 0; a < na; ++a) {
            const int64_t j = act[a];
            float *w = WT + j * O;
            if (adam && last[j] < t - 1) {
                if (last[j] > 0)  /* a column never touched has m = v = 0: its idle steps are no-ops */
                    catch_up(w, mT + j * O, vT + j * O, O, last[j] + 1, t - 1, ss, ibc, c1, fb2, c2, feps);
                last[j] = t - 1;
            }
            const float xj = x[j];
            #pragma omp simd
            for (int64_t i = 0; i < O; ++i) z[i] += w[i] * xj;
        }
        float mx = z[0];
        for (int64_t i = 1; i < O; ++i) mx = z[i] > mx ? z[i] : mx;
        double sum = 0.0;
        for (int64_t i = 0; i < O; ++i) { e[i] = expf(z[i] - mx); sum += e[i]; }
        const float inv = (float)(1.0 / sum);
        for (int64_t i = 0; i < O; ++i) e[i] *= inv;
        e[labels[order[t - 1]]] -= 1.f;
        const float st = ss[t], bc = ibc[t];
        for (int64_t a = 0; a < na; ++a) {
            const int64_t j = act[a];
            float *w = WT + j * O;
            const float xj = x[j];
            if (adam) {
                float *m = mT + j * O, *v = vT + j * O;
                #pragma omp simd
                for (int64_t i = 0; i < O; ++i) {
                    const float g = e[i] * xj;
                    const float mi = m[i] + c1 * (g - m[i]);
                    const float vi = fb2 * v[i] + c2 * g * g;
                    m[i] = mi; v[i] = vi;
                    w[i] = w[i] - st * mi / (sqrtf(vi) * bc + feps);
                }
            } else {
                #pragma omp simd
                for (int64_t i = 0; i < O; ++i) w[i] = w[i] - flr * (e[i] * xj);
            }
            last[j] = t;
        }
        for (int64_t i = 0; i < O; ++i) {  /* the bias sees a gradient at every step */
            const float g = e[i];
            if (adam) {
                const float mi = mb[i] + c1 * (g - mb[i]);
                const float vi = fb2 * vb[i] + c2 * g * g;
                mb[i] = mi; vb[i] = vi;
                b[i] = b[i] - st * mi / (sqrtf(vi) * bc + feps);
            } else {
                b[i] = b[i] - flr * g;
            }
        }
    }
    if (adam)
        for (int64_t j = 0; j < F; ++j)
            if (last[j] > 0 && last[j] < T)
                catch_up(WT + j * O, mT + j * O, vT + j * O, O, last[j] + 1, T, ss, ibc, c1, fb2, c2, feps);
    free(z); free(e); free(ss); free(ibc); free(last); free(act);
    return 0;
}
"""
# -ffp-contract=off: no fused multiply-adds, so the C loop rounds like the torch engine's
# separate multiplies and adds (an FMA is one rounding fewer) on every CPU.
_C_FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fopenmp-simd", "-fno-math-errno", "-shared", "-fPIC"]
_C_LIB = None  # None: not tried; False: unavailable; else the ctypes library


def _cpu_signature() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))][:2]
        return "\n".join(lines)
    except OSError:
        return platform.processor()


def kernel_folder(cache_dir=None) -> Path:
    """Where this user's compiled kernels live: private to the user (see `_private_folder`)."""
    return Path(cache_dir or default_cache_dir()) / f"kernels-{os.getuid()}"


def _private_folder(folder: Path) -> None:
    """Make `folder` (mode 0700) or check that it is a real folder this user owns that nobody
    else can write; raise OSError otherwise. Only such a folder's libraries are ever loaded."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(folder)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise PermissionError(f"{folder} is not a folder owned by this user")
    if st.st_mode & 0o077:
        os.chmod(folder, 0o700)  # ours but opened up (by hand, or a umask): close it again


def _library_problem(lib_path: Path) -> str | None:
    """Why the built library must not be loaded, or None: it must be a plain file owned by this
    user, writable by nobody else, whose bytes hash to the sha256 written beside it at build time."""
    try:
        st = os.lstat(lib_path)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
            return "not a private file of this user"
        expected = lib_path.with_name(lib_path.name + ".sha256").read_text().strip()
    except FileNotFoundError as err:
        return f"incomplete ({Path(err.filename).name} is missing)"
    except OSError as err:
        return f"unreadable ({err})"
    if hashlib.sha256(lib_path.read_bytes()).hexdigest() != expected:
        return "damaged (its sha256 differs from the one written when it was built)"
    return None


def _build_library(compiler: str, lib_path: Path) -> None:
    with tempfile.TemporaryDirectory(dir=lib_path.parent) as tmp:
        src = Path(tmp) / "oml_online.c"
        src.write_text(_C_SOURCE)
        out = Path(tmp) / lib_path.name
        subprocess.run([compiler, *_C_FLAGS, str(src), "-o", str(out), "-lm"], check=True,
                       capture_output=True, timeout=120)
        os.chmod(out, 0o700)
        digest = hashlib.sha256(out.read_bytes()).hexdigest()
        side = Path(tmp) / (lib_path.name + ".sha256")
        side.write_text(digest + "\n")
        # The hash first: a reader that sees the new library with the old hash rebuilds; it
        # never trusts a library without its matching hash.
        os.replace(side, lib_path.with_name(lib_path.name + ".sha256"))
        os.replace(out, lib_path)


def c_engine(cache_dir=None):
    """The compiled C loop (ctypes), built once into the user's private kernel folder; None when
    it cannot be built or trusted (then the torch engine runs, after a `warning:` line)."""
    global _C_LIB
    if _C_LIB is not None:
        return _C_LIB or None
    _C_LIB = False
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None or platform.system() == "Windows":
        log.info("no C compiler; the online learner uses the torch engine")
        return None
    tag = hashlib.sha256("\n".join([_C_SOURCE, " ".join(_C_FLAGS), compiler, platform.machine(),
                                    _cpu_signature()]).encode()).hexdigest()[:16]
    folder = kernel_folder(cache_dir)
    lib_path = folder / f"oml_online_{tag}.so"
    try:
        _private_folder(folder)
        problem = _library_problem(lib_path) if lib_path.exists() else "absent"
        if problem != "absent" and problem is not None:
            warn(f"compiled kernel {lib_path} is {problem}; rebuilding it", log)
        if problem is not None:
            _build_library(compiler, lib_path)
            problem = _library_problem(lib_path)
            if problem is not None:
                raise OSError(f"the library just built is {problem}")
        fn = ctypes.CDLL(str(lib_path)).oml_online
    except (OSError, AttributeError, subprocess.SubprocessError) as err:
        warn(f"cannot build or trust the C online learner ({err}); using the torch engine", log)
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p] * 9 + [ctypes.c_int64] * 3 + [ctypes.c_int] + [ctypes.c_double] * 4
    _C_LIB = fn
    return fn


def train_c(fn, init: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, order: np.ndarray,
            lr: float, optimizer: str) -> list[torch.Tensor]:
    """One run of a linear PLN with the C loop. x [15n, F] float32 CPU, y [15n] int64 labels."""
    wt = init[0].float().t().contiguous()  # feature-major [F, O]: a feature's column is contiguous
    b = init[1].float().contiguous().clone()
    adam = optimizer == "adam"
    m, v = (torch.zeros_like(wt), torch.zeros_like(wt)) if adam else (wt, wt)
    mb, vb = (torch.zeros_like(b), torch.zeros_like(b)) if adam else (b, b)
    x = x.float().contiguous()
    y = y.to(torch.int64).contiguous()
    order = torch.as_tensor(np.ascontiguousarray(order, dtype=np.int64))
    rc = fn(wt.data_ptr(), b.data_ptr(), m.data_ptr(), v.data_ptr(), mb.data_ptr(), vb.data_ptr(),
            x.data_ptr(), order.data_ptr(), y.data_ptr(), wt.shape[1], wt.shape[0], len(order), int(adam),
            lr, ADAM_BETAS[0], ADAM_BETAS[1], ADAM_EPS)
    if rc != 0:
        raise MemoryError("the C online learner could not allocate its buffers")
    return [wt.t().contiguous(), b]


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
    run_batch: int = 1             # torch engine: runs trained together (1: a loop; faster on CPU)
    engine: str = "auto"           # auto | c | torch

    def validate(self):
        protocol_bundle(self.name)
        if self.optimizer not in ("adam", "sgd"):
            raise UserError(f"--optimizer must be adam or sgd, got {self.optimizer!r}")
        if self.engine not in ("auto", "c", "torch"):
            raise UserError(f"--engine must be auto, c or torch, got {self.engine!r}")
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
        protocol.validate()
        self.init = PLNInit(pln, protocol.reset)
        self.protocol = protocol
        self.device = torch.device(device)
        self.c_fn = None
        if protocol.engine != "torch" and self.init.linear and self.device.type == "cpu":
            self.c_fn = c_engine(cache_dir)
        if protocol.engine == "c" and self.c_fn is None:
            raise UserError("--engine c needs a linear PLN on the CPU and a working C compiler (cc)")
        self.engine = "c" if self.c_fn is not None else "torch"

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
        if self.engine == "c":
            for spec, (x, y) in zip(specs, data):
                finals.append(train_c(self.c_fn, self.init(spec.init_seed), x, y, spec.order, lr,
                                      self.protocol.optimizer))
            return finals
        step = self.protocol.run_batch
        for start in range(0, len(specs), step):
            chunk = specs[start:start + step]
            xs = torch.stack([d[0] for d in data[start:start + step]])
            ys = torch.stack([d[1] for d in data[start:start + step]])
            orders = np.stack([s.order for s in chunk])
            finals += train_torch([self.init(s.init_seed) for s in chunk], xs, ys, orders, lr, self.protocol.optimizer)
        return finals

    def trajectory_accuracy(self, feats_train, specs, params) -> list[float]:
        return [_accuracy([p.to(self.device) for p in ps], *_run_data(feats_train, s)) for s, ps in zip(specs, params)]

    def test_accuracy(self, feats_test, specs, params) -> list[float]:
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


def search_lr(learner: OnlineLearner, feats_train: torch.Tensor, n: int, progress=None) -> dict:
    """The learning-rate search for n classes. It sees only the training-drawer features."""
    p = learner.protocol
    specs = run_specs(p.seed, "lr_search", n, p.search_runs, feats_train.shape[0], p.iid, p.epochs)
    scores = np.zeros((len(specs), len(LR_GRID)))
    for j, lr in enumerate(LR_GRID):
        finals = learner.train(feats_train, specs, lr)
        scores[:, j] = learner.trajectory_accuracy(feats_train, specs, finals)
        if progress is not None:
            progress.update(len(specs) * len(specs[0].order))
    chosen, best = choose_lr(scores)
    return {"lr": chosen, "grid": list(LR_GRID), "best_per_search_run": best,
            "scores": np.round(scores, 8).tolist(), "mean_scores": np.round(scores.mean(axis=0), 8).tolist(),
            "classes": [s.classes.tolist() for s in specs]}


def total_steps(schedule, protocol: Protocol) -> int:
    trials = protocol.runs + (0 if protocol.lr is not None else protocol.search_runs * len(LR_GRID))
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


def run_protocol(learner, bank, schedule, *, progress: bool = False, report=None) -> dict:
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
        test_acc = np.array(learner.test_accuracy(bank.test, specs, finals))
        if bar is not None:
            bar.update(len(specs) * len(specs[0].order))
        entry = {"lr": lr, "lr_search": search,
                 "train_accuracy": bootstrap_ci(train_acc), "test_accuracy": bootstrap_ci(test_acc),
                 "runs": {"train_accuracy": np.round(train_acc, 8).tolist(),
                          "test_accuracy": np.round(test_acc, 8).tolist(),
                          "classes": [s.classes.tolist() for s in specs]}}
        by_classes[str(n)] = entry
        if report is not None:
            report(n, entry)
    if bar is not None:
        bar.close()
    return {
        "schedule": list(schedule),
        "by_classes": by_classes,
        "protocol": {**asdict(protocol), **learner.record(), "lr_grid": list(LR_GRID),
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
    tr, te = entry["train_accuracy"], entry["test_accuracy"]
    search = entry.get("lr_search")
    votes = ""
    if search:
        votes = f" ({search['best_per_search_run'].count(entry['lr'])}/{len(search['best_per_search_run'])} searches)"
    return (f"n={n:4d}  lr {entry['lr']:.0e}{votes}  trajectory {tr['mean']:.3f} [{tr['ci_low']:.3f}, {tr['ci_high']:.3f}]"
            f"  held-out {te['mean']:.3f} [{te['ci_low']:.3f}, {te['ci_high']:.3f}]")
