"""utils/stats.py: the percentile-bootstrap interval against cases worked out by hand and against
a plain-Python bootstrap of the same seed."""
import numpy as np
import pytest

from utils.stats import bootstrap_ci


def _plain_python_bootstrap(values, n_resamples, confidence, seed):
    """The percentile bootstrap written out: one index draw at a time from the same Generator
    stream, the mean of each resample, then the two percentiles by linear interpolation between
    order statistics (numpy's default 'linear' rule: position q * (B - 1) in the sorted means)."""
    rng = np.random.default_rng(seed)
    n = len(values)
    means = []
    for _ in range(n_resamples):
        picked = [values[int(rng.integers(0, n))] for _ in range(n)]
        means.append(sum(picked) / n)
    means.sort()

    def percentile(q):
        pos = q * (n_resamples - 1)
        lo = int(pos)
        hi = min(lo + 1, n_resamples - 1)
        return means[lo] + (pos - lo) * (means[hi] - means[lo])

    alpha = (1 - confidence) / 2
    return sum(values) / n, percentile(alpha), percentile(1 - alpha)


def test_constant_values_give_a_zero_width_interval():
    ci = bootstrap_ci([2.5] * 7)
    assert ci == {"mean": 2.5, "ci_low": 2.5, "ci_high": 2.5}
    ci = bootstrap_ci(np.full((4, 3), -1.25))  # per column as well
    assert ci == {"mean": [-1.25] * 3, "ci_low": [-1.25] * 3, "ci_high": [-1.25] * 3}


def test_two_values_by_hand():
    # Resamples of [0, 10] have mean 0, 5 or 10 with probabilities 1/4, 1/2, 1/4. With 1,000
    # resamples, about 250 are 0 and 250 are 10, so the 2.5% and 97.5% quantiles are 0 and 10.
    assert bootstrap_ci([0.0, 10.0]) == {"mean": 5.0, "ci_low": 0.0, "ci_high": 10.0}
    # One value: every resample is that value.
    assert bootstrap_ci([3.0]) == {"mean": 3.0, "ci_low": 3.0, "ci_high": 3.0}


@pytest.mark.parametrize("seed, confidence, n_resamples", [(0, 0.95, 1000), (7, 0.9, 333), (123, 0.5, 50)])
def test_equals_a_plain_python_bootstrap_of_the_same_seed(seed, confidence, n_resamples):
    values = [0.31, 1.7, 0.05, 2.2, 0.9, 1.1, 0.47, 3.3]
    mean, low, high = _plain_python_bootstrap(values, n_resamples, confidence, seed)
    ci = bootstrap_ci(values, n_resamples=n_resamples, confidence=confidence, seed=seed)
    assert ci["mean"] == pytest.approx(mean, abs=1e-8)
    assert ci["ci_low"] == pytest.approx(low, abs=1e-8) and ci["ci_high"] == pytest.approx(high, abs=1e-8)
    assert min(values) < ci["ci_low"] < mean < ci["ci_high"] < max(values)


def test_columns_are_independent_intervals_over_the_same_resamples():
    rng = np.random.default_rng(5)
    values = rng.normal(size=(9, 4))
    together = bootstrap_ci(values, seed=3)
    for j in range(4):  # each column resampled with the same run indices as alone
        alone = bootstrap_ci(values[:, j], seed=3)
        assert [together[k][j] for k in ("mean", "ci_low", "ci_high")] == [alone[k] for k in ("mean", "ci_low", "ci_high")]


def test_wider_confidence_wider_interval_and_rounding():
    values = [0.123456789123, 0.2, 0.9, 0.4, 0.75]
    narrow, wide = bootstrap_ci(values, confidence=0.5), bootstrap_ci(values, confidence=0.99)
    assert wide["ci_low"] < narrow["ci_low"] < narrow["ci_high"] < wide["ci_high"]
    assert bootstrap_ci([0.123456789123])["mean"] == 0.12345679  # 8 decimals, a plain float
    assert type(bootstrap_ci(values)["mean"]) is float
    with pytest.raises(ValueError, match="at least one value"):
        bootstrap_ci([])
