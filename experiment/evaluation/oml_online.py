"""The native fast path's kernel: a whole online trajectory of a linear PLN in one compiled call.

Compiled by numba (`@njit(cache=True)`: no C compiler; machine code for this CPU, cached by numba
beside this file in `__pycache__/`, or under $NUMBA_CACHE_DIR; never in the data cache that
users share). Imported only through experiment/evaluation/native.py, which falls back to the
portable engine when numba is missing or fails.

The maths is model.online.train_linear's, for one run: logits, softmax minus one-hot, the outer-
product gradient, Adam (torch.optim.Adam's update; sqrt(v) / sqrt(1 - beta2^t) is computed as
sqrt(v) * (1 / sqrt(1 - beta2^t)), a last-bit rounding difference) or SGD. What makes it fast:

* The weights and Adam moments are feature-major (wt[j, i] = W[i, j]), and only the columns of the
  image's non-zero features are read or written in a step (a ReLU RLN's features are ~90% zeros).
* At a step where feature j is 0 its gradient column is 0, so Adam only decays the moments and
  moves the column by m / (sqrt(v) + eps). Nothing reads that column until feature j is non-zero
  again, so those zero-gradient steps are replayed (`_catch_up`), with the same arithmetic and in
  the same order, when the column is next needed and at the end: every weight takes exactly the
  dense loop's steps; only the memory traffic shrinks. SGD needs no catching up.
* Float32 throughout, like torch; no fast-math: numba does not contract a*b+c into an FMA unless
  asked, so the results do not depend on the CPU. `error_model="numpy"` (no ZeroDivisionError
  branches) and float32 `np.sqrt` let LLVM vectorise the inner loops.
"""
import math

import numpy as np
from numba import njit

_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}
BAD_ORDER, BAD_LABEL = 1, 2  # return codes: an index outside x's rows, a label outside the outputs


@njit(inline="always", **_JIT)
def _adam(w, m, v, i, g, st, bc, c1, beta2, c2, eps):
    """torch.optim.Adam's update of element i of w (moments m, v) for gradient g; st is the step
    lr / (1 - beta1^t) and bc is 1 / sqrt(1 - beta2^t)."""
    mi = m[i] + c1 * (g - m[i])
    vi = beta2 * v[i] + c2 * g * g
    m[i] = mi
    v[i] = vi
    w[i] = w[i] - st * mi / (np.sqrt(vi) * bc + eps)


@njit(**_JIT)
def _catch_up(w, m, v, s0, s1, step_size, inv_bc2, c1, beta2, c2, eps):
    """Adam's zero-gradient steps s0..s1 (1-based) of one feature column."""
    zero = np.float32(0.0)
    for s in range(s0, s1 + 1):
        for i in range(w.shape[0]):
            _adam(w, m, v, i, zero, step_size[s], inv_bc2[s], c1, beta2, c2, eps)


@njit(**_JIT)
def online_linear(wt, b, mt, vt, mb, vb, x, order, labels, adam, lr, beta1, beta2, eps):
    """Train in place: wt [F, O] (feature-major W), b [O], Adam moments mt, vt [F, O], mb, vb [O]
    (zeros at the start; unused for SGD), float32. Step t (1-based) sees row order[t-1] of x [N, F]
    and its label labels[order[t-1]] (labels [N], int64). Returns 0, or BAD_ORDER / BAD_LABEL
    (checked before anything is touched)."""
    n_feat, n_out = wt.shape
    steps = order.shape[0]
    for t in range(steps):
        if order[t] < 0 or order[t] >= x.shape[0]:
            return BAD_ORDER
    for r in range(labels.shape[0]):
        if labels[r] < 0 or labels[r] >= n_out:
            return BAD_LABEL
    z = np.empty(n_out, np.float32)
    e = np.empty(n_out, np.float32)
    step_size = np.empty(steps + 1, np.float32)
    inv_bc2 = np.empty(steps + 1, np.float32)
    last = np.zeros(n_feat, np.int64)  # the last step whose update column j has taken
    active = np.empty(n_feat, np.int64)
    c1 = np.float32(1.0 - beta1)
    fb2 = np.float32(beta2)
    c2 = np.float32(1.0 - beta2)
    feps = np.float32(eps)
    flr = np.float32(lr)
    for s in range(1, steps + 1):  # bias corrections in double precision, as torch.optim.Adam
        step_size[s] = np.float32(lr / (1.0 - beta1 ** s)) if adam else flr
        inv_bc2[s] = np.float32(1.0 / math.sqrt(1.0 - beta2 ** s))
    for t in range(1, steps + 1):
        row = order[t - 1]
        xr = x[row]
        n_active = 0
        for j in range(n_feat):
            if xr[j] != 0:
                active[n_active] = j
                n_active += 1
        for i in range(n_out):
            z[i] = b[i]
        for a in range(n_active):
            j = active[a]
            if adam and last[j] < t - 1:
                if last[j] > 0:  # a column never touched has m = v = 0: its idle steps are no-ops
                    _catch_up(wt[j], mt[j], vt[j], last[j] + 1, t - 1, step_size, inv_bc2, c1, fb2, c2, feps)
                last[j] = t - 1
            xj = xr[j]
            w = wt[j]
            for i in range(n_out):
                z[i] += w[i] * xj
        top = z[0]
        for i in range(1, n_out):
            top = z[i] if z[i] > top else top
        total = 0.0  # double, like the softmax's sum
        for i in range(n_out):
            e[i] = np.float32(math.exp(z[i] - top))
            total += e[i]
        inv = np.float32(1.0 / total)
        for i in range(n_out):
            e[i] *= inv
        e[labels[row]] -= np.float32(1.0)  # softmax minus one-hot: dL/dlogits
        st = step_size[t]
        bc = inv_bc2[t]
        for a in range(n_active):
            j = active[a]
            w = wt[j]
            xj = xr[j]
            if adam:
                m = mt[j]
                v = vt[j]
                for i in range(n_out):
                    _adam(w, m, v, i, e[i] * xj, st, bc, c1, fb2, c2, feps)
            else:
                for i in range(n_out):
                    w[i] = w[i] - flr * (e[i] * xj)
            last[j] = t
        for i in range(n_out):  # the bias sees a gradient at every step
            g = e[i]
            if adam:
                _adam(b, mb, vb, i, g, st, bc, c1, fb2, c2, feps)
            else:
                b[i] = b[i] - flr * g
    if adam:
        for j in range(n_feat):
            if last[j] > 0 and last[j] < steps:
                _catch_up(wt[j], mt[j], vt[j], last[j] + 1, steps, step_size, inv_bc2, c1, fb2, c2, feps)
    return 0
