"""Means with percentile-bootstrap confidence intervals (numpy only, seeded)."""
import numpy as np


def bootstrap_ci(values, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Mean of `values` over runs (axis 0) with a percentile bootstrap CI, per remaining index."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape[0] == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.shape[0], size=(n_resamples, values.shape[0]))
    means = values[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha], axis=0)
    return {"mean": _plain(values.mean(axis=0)), "ci_low": _plain(low), "ci_high": _plain(high)}


def _plain(x):
    """numpy scalars/arrays to JSON-ready floats or lists, rounded so JSON is stable and readable."""
    x = np.asarray(x, dtype=np.float64)
    return round(float(x), 8) if x.ndim == 0 else [round(float(v), 8) for v in x.ravel()]
