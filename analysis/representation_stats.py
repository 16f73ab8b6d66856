"""Sparsity statistics of a representation matrix [N inputs, D units] (paper Table 1).

As in the original `visualize_representations.py` (55fa220, HEAD), a unit is *active* for an
input when its RLN output is > 0 (after the final ReLU). The paper's Table 1 reports two numbers:

* instance sparsity = mean over inputs of the fraction of units active for that input;
* dead units        = fraction of units that no input activates.

The original also printed a "lifetime sparsity", the mean over units of the fraction of inputs
that activate each unit. It is the mean of the same 0/1 matrix taken by columns instead of rows,
so it always equals instance sparsity and says nothing new; it is not reported here. What does
differ is the distribution behind it: `lifetime_activity` (per unit) is what the histogram and the
average-activation map show, summarised by its quantiles in `summarise`.

Everything here is a pure function of arrays (numpy, or torch tensors, which are converted).
"""
import math

import numpy as np

# The original reshaped the 2304-d Omniglot representation (256 channels x 3 x 3) to 32 x 72.
ORIGINAL_MAP_SHAPES = {2304: (32, 72)}
MAX_ASPECT = 3.0  # wider exact factorisations are replaced by a padded near-square map


def as_matrix(reps) -> np.ndarray:
    """[N, D] numpy array from a numpy array or a torch tensor (any device)."""
    if hasattr(reps, "detach"):
        reps = reps.detach().cpu().numpy()
    reps = np.asarray(reps)
    if reps.ndim != 2 or reps.shape[0] < 1 or reps.shape[1] < 1:
        raise ValueError(f"expected a [n_inputs, n_units] matrix with both sizes >= 1, got shape {reps.shape}")
    return reps


def binarise(reps, threshold: float = 0.0) -> np.ndarray:
    """bool [N, D]: unit active (> threshold) for each input; a bool matrix is returned as is."""
    reps = as_matrix(reps)
    return reps if reps.dtype == np.bool_ else reps > threshold


def instance_activity(reps) -> np.ndarray:
    """[N]: fraction of units active for each input."""
    return binarise(reps).mean(axis=1, dtype=np.float64)


def lifetime_activity(reps) -> np.ndarray:
    """[D]: fraction of inputs that activate each unit."""
    return binarise(reps).mean(axis=0, dtype=np.float64)


def instance_sparsity(reps) -> float:
    return float(instance_activity(reps).mean())


def dead_units(reps) -> float:
    """Fraction of units never active on these inputs."""
    return float((~binarise(reps).any(axis=0)).mean())


def activity_histogram(reps, bins: int = 20) -> dict:
    """Histogram of per-unit lifetime activity over [0, 1], plus the exact count of dead units
    (activity 0, which the first bin would mix with rarely active units)."""
    activity = lifetime_activity(reps)
    counts, edges = np.histogram(activity, bins=bins, range=(0.0, 1.0))
    return {"counts": [int(c) for c in counts], "edges": [float(e) for e in edges],
            "n_dead": int((activity == 0).sum()), "n_units": int(activity.size)}


def summarise(reps) -> dict:
    """The statistics one model contributes to statistics.json (fractions, not percentages)."""
    active = binarise(reps)
    per_input = instance_activity(active)
    per_unit = lifetime_activity(active)
    q = np.quantile(per_unit, [0.1, 0.5, 0.9])
    return {
        "instance_sparsity": _round(per_input.mean()),
        "dead_units": _round((per_unit == 0).mean()),
        "n_dead_units": int((per_unit == 0).sum()),
        "n_inputs": int(active.shape[0]),
        "representation_size": int(active.shape[1]),
        "instance_activity_min_max": [_round(per_input.min()), _round(per_input.max())],
        "lifetime_activity_quantiles_10_50_90": [_round(v) for v in q],
    }


def _round(x) -> float:
    return round(float(x), 8)


# --- 2-D maps -------------------------------------------------------------------------------

def map_shape(size: int) -> tuple[int, int]:
    """(rows, cols) to draw a `size`-unit representation as an image, rows * cols >= size.

    2304 -> 32 x 72 as the original; otherwise the most square exact factorisation, or, when
    that is wider than MAX_ASPECT (primes, 2 x large), a near-square map padded at the end.
    """
    size = int(size)
    if size < 1:
        raise ValueError(f"map size must be >= 1, got {size}")
    if size in ORIGINAL_MAP_SHAPES:
        return ORIGINAL_MAP_SHAPES[size]
    rows = max(d for d in range(1, math.isqrt(size) + 1) if size % d == 0)
    cols = size // rows
    if cols / rows <= MAX_ASPECT:
        return rows, cols
    cols = math.isqrt(size - 1) + 1  # ceil(sqrt(size))
    return math.ceil(size / cols), cols


def to_map(vector, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A [D] vector as a float [rows, cols] map, row-major; padding cells are NaN (drawn blank)."""
    vector = np.asarray(vector.detach().cpu() if hasattr(vector, "detach") else vector, dtype=np.float64).ravel()
    rows, cols = shape or map_shape(vector.size)
    if rows * cols < vector.size:
        raise ValueError(f"a {rows}x{cols} map cannot hold {vector.size} units")
    out = np.full(rows * cols, np.nan)
    out[: vector.size] = vector
    return out.reshape(rows, cols)


# --- 2-D projection -------------------------------------------------------------------------

def project_2d(reps, method: str = "pca", seed: int = 0) -> np.ndarray:
    """[N, 2] scikit-learn PCA (default, fast, deterministic) or t-SNE embedding of the rows."""
    x = as_matrix(reps).astype(np.float64)
    n = x.shape[0]
    if n < 2:
        return np.zeros((n, 2))
    if method == "pca":
        from sklearn.decomposition import PCA
        k = min(2, n, x.shape[1])
        points = PCA(n_components=k, random_state=seed).fit_transform(x)
    elif method == "tsne":
        from sklearn.manifold import TSNE
        perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))
        points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    else:
        raise ValueError(f"unknown projection {method!r} (choose pca or tsne)")
    if points.shape[1] < 2:  # a 1-unit representation: put everything on the x axis
        points = np.hstack([points, np.zeros((n, 2 - points.shape[1]))])
    return points


# --- the printed table ----------------------------------------------------------------------

def format_table(rows: list[dict]) -> str:
    """Markdown table: model | instance sparsity | dead units | inputs | units (the paper's Table 1)."""
    header = ["model", "instance sparsity", "dead units", "inputs", "units"]
    lines = [header] + [[r["label"], f"{100 * r['instance_sparsity']:.1f}%",
                         f"{100 * r['dead_units']:.1f}%", str(r["n_inputs"]), str(r["representation_size"])]
                        for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    fmt = lambda line: "| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |"
    return "\n".join([fmt(lines[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [fmt(line) for line in lines[1:]])
