"""Means with 95% intervals (numpy only): a seeded percentile bootstrap over evaluation runs, a
Student-t interval over meta-training seeds (few values, where a bootstrap is too narrow)."""
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


# Student's t quantile t_{0.975, df}; a df between two entries takes the smaller one (a wider interval).
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
         20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
         29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t_quantile_975(df: int) -> float:
    if df < 1:
        raise ValueError("a t interval needs at least two values")
    return _T975[max(k for k in _T975 if k <= df)] if df <= 120 else 1.960


def t_interval(values) -> dict:
    """Mean over axis 0 with the 95% Student-t interval, mean +- t(n-1) * sd / sqrt(n): for a handful
    of meta-training seeds, where a percentile bootstrap of so few values is too narrow (with n
    values it never leaves their range). One value: no interval (ci_low = ci_high = mean)."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape[0] == 0:
        raise ValueError("t_interval needs at least one value")
    mean = values.mean(axis=0)
    if values.shape[0] == 1:
        return {"mean": _plain(mean), "ci_low": _plain(mean), "ci_high": _plain(mean)}
    half = t_quantile_975(values.shape[0] - 1) * values.std(axis=0, ddof=1) / np.sqrt(values.shape[0])
    return {"mean": _plain(mean), "ci_low": _plain(mean - half), "ci_high": _plain(mean + half)}
