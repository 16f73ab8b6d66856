"""The native fast path of the Omniglot online learner: loads experiment/evaluation/oml_online.py
(numba) once per process, or says why it cannot, so the caller falls back to the portable engine.

Why numba (measured in docs/engines.md): it needs no C compiler (wheels for Linux, macOS and
Windows), it gives the same bits as the C loop it replaced, and its compiled code is cached by
numba beside the source (or under $NUMBA_CACHE_DIR), never in the shared data cache, so nobody who
can write to `.oml_cache/` gets code run in another user's evaluation. `OML_NATIVE=0` turns it off.

The kernel runs with subnormal floats flushed to zero (FTZ/DAZ, `torch.set_flush_denormal`, for
the calling thread only, restored after). Far-off outputs get gradients below 1e-19, whose squares
in Adam's v, and the moments of idle features decaying by 0.9 a step, fall below float32's
smallest normal number (1.2e-38), where x86 arithmetic is about 100x slower: with them kept, they
took 80% of a 128-channel network's evaluation time (docs/engines.md). Values that small cannot
move a weight of the PLN's scale; the shipped models' results are unchanged (tested).
"""
from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext

import numpy as np
import torch

from utils import bounds
from utils.errors import UserError
from utils.messages import quiet_logger, warn

log = quiet_logger(__name__)

_KERNEL = None  # None: not tried yet; False: unavailable in this process; else the compiled function


def kernel():
    """The compiled trajectory function, or None (after one `warning:` line per process) when numba
    is missing, disabled by OML_NATIVE=0, or fails to compile (its error is in the warning)."""
    global _KERNEL
    if _KERNEL is None:
        _KERNEL = _load() or False
    return _KERNEL or None


def _load():
    if os.environ.get("OML_NATIVE", "1") == "0":
        warn("OML_NATIVE=0: the online learner uses the portable engine (same numbers, slower; docs/engines.md)", log)
        return None
    try:
        from experiment.evaluation import oml_online
    except ImportError as err:  # numba missing, or a numba that does not import with this numpy
        warn(f"numba is not installed or does not import ({err}); the online learner uses the portable "
             "engine (same numbers, slower; `pip install numba` for the fast path, docs/engines.md)", log)
        return None
    _check_numba(oml_online)
    for attempt in ("load", "rebuild"):
        try:
            _smoke(oml_online.online_linear)  # compiles now (or loads numba's cache): fails here, not mid-run
            return oml_online.online_linear
        except Exception as err:  # a damaged numba cache, or a numba that cannot compile here: show why
            lines = str(err).strip().splitlines()
            reason = f"{type(err).__name__}: {lines[0] if lines else ''}"
        if attempt == "load":  # numba's cache (beside the source) may be unreadable: drop it and compile afresh
            warn(f"the native online learner did not load ({reason}); clearing numba's cache of it and compiling again", log)
            for fn in (oml_online.online_linear, oml_online._catch_up):
                if fn._cache is not None:
                    fn._cache.flush()
    warn(f"the native online learner failed to compile ({reason}); the online learner uses the portable "
         "engine (same numbers, slower; docs/engines.md)", log)
    return None


def _check_numba(oml_online) -> None:
    """Refuse a kernel cache another user could write (numba loads what it finds there as machine
    code, so a planted file would run as this user), and say when numba's JIT is off."""
    import numba
    if numba.config.DISABLE_JIT:
        warn("NUMBA_DISABLE_JIT is set: the native online learner runs as interpreted Python, orders of magnitude "
             "slower; unset it, or choose --engine portable", log)
    for fn in (oml_online.online_linear, oml_online._catch_up):
        folder = getattr(getattr(fn, "_cache", None), "_cache_path", None)
        problem = folder and bounds.private_folder_problem(folder)
        if problem:
            raise UserError(f"the native engine's kernel cache '{folder}' is not private: {problem}; a compiled file "
                            "placed there by another user would run as you. Set NUMBA_CACHE_DIR to a folder only you "
                            "can write (mkdir -m 700), or choose --engine portable")


@contextmanager
def flushed_subnormals():
    """Subnormal floats read and written as zero in this thread (where the CPU supports it: x86
    with SSE3, AArch64), then the default (keep them) again."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _smoke(fn) -> None:
    """A 2-step trajectory with both optimisers: every specialisation the engine calls gets compiled."""
    wt, b = np.zeros((2, 3), np.float32), np.zeros(3, np.float32)
    x, order, labels = np.ones((2, 2), np.float32), np.arange(2, dtype=np.int64), np.arange(2, dtype=np.int64)
    for adam in (True, False):
        with flushed_subnormals():
            rc = fn(wt, b, wt.copy(), wt.copy(), b.copy(), b.copy(), x, order, labels, adam, 0.1, 0.9, 0.999, 1e-8)
        if rc != 0:
            raise RuntimeError(f"the kernel's self-test returned {rc}")


def train_native(fn, init: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, order: np.ndarray, lr: float,
                 optimizer: str, betas: tuple[float, float], eps: float, flush: bool = True) -> list[torch.Tensor]:
    """One run of a linear PLN: init [W [O, F], b [O]], x [N, F] features, y [N] labels (output
    units), order [T] rows of x. Returns the final [W, b] (float32, CPU). flush=False keeps
    subnormals (only benchmarks/online_subnormals.py, to measure what the flush saves)."""
    wt = init[0].detach().float().cpu().t().contiguous().numpy()  # feature-major: a feature's column is contiguous
    b = init[1].detach().float().cpu().clone().numpy()
    adam = optimizer == "adam"
    mt, vt = (np.zeros_like(wt), np.zeros_like(wt)) if adam else (wt[:0], wt[:0])
    mb, vb = (np.zeros_like(b), np.zeros_like(b)) if adam else (b[:0], b[:0])
    xs = np.ascontiguousarray(x.detach().float().cpu().numpy())
    labels = np.ascontiguousarray(y.detach().cpu().numpy(), dtype=np.int64)
    steps = np.ascontiguousarray(order, dtype=np.int64)
    with flushed_subnormals() if flush else nullcontext():
        rc = fn(wt, b, mt, vt, mb, vb, xs, steps, labels, adam, float(lr), float(betas[0]), float(betas[1]), float(eps))
    if rc != 0:
        what = {1: f"a trajectory index outside the {len(xs)} images", 2: f"a label outside the {wt.shape[1]} outputs"}
        raise ValueError(f"native online learner: {what.get(rc, f'error {rc}')}")
    return [torch.from_numpy(np.ascontiguousarray(wt.T)), torch.from_numpy(b)]
