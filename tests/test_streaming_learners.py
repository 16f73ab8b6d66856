"""The exact streaming learners (model/streaming.py) and their evaluation (experiment/evaluation/streaming.py)."""
import math

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from model import streaming


def _stream(seed=0, n_classes=5, per_class=6, n_features=4):
    """A small labelled stream: class-separated Gaussian blobs, class ids not contiguous."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.tensor([3, 11, 7, 40, 2, 19, 5, 8][:n_classes])
    centres = 3 * torch.randn(n_classes, n_features, generator=gen, dtype=torch.float64)
    x = (centres[:, None] + torch.randn(n_classes, per_class, n_features, generator=gen, dtype=torch.float64))
    return x.reshape(-1, n_features), ids.repeat_interleave(per_class)


def _streamed(x, y, order):
    state = streaming.empty(x.shape[1])
    for i in order:
        state = streaming.update(state, x[i], int(y[i]))
    return state


def _scores(state, x):
    return {"ncm": streaming.ncm_scores(state, x), "slda": streaming.slda_scores(state, x, 0.1),
            "gauss": streaming.gauss_scores(state, x)}


def test_stream_update_equals_batch_closed_form():
    x, y = _stream()
    batch = streaming.from_batch(x, y)
    state = _streamed(x, y, range(len(x)))
    assert torch.equal(state.classes, batch.classes) and batch.classes.tolist() == sorted(set(y.tolist()))
    torch.testing.assert_close(state.counts, batch.counts, rtol=0, atol=0)
    torch.testing.assert_close(state.means, batch.means, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state.scatter, batch.scatter, rtol=1e-12, atol=1e-10)
    # the definition, written out: sum over classes of the centred outer products
    by_hand = sum(torch.outer(v - x[y == c].mean(0), v - x[y == c].mean(0)) for c in y.unique() for v in x[y == c])
    torch.testing.assert_close(batch.scatter, by_hand, rtol=1e-12, atol=1e-10)


def test_any_class_or_image_order_gives_the_same_predictions():
    x, y = _stream(seed=1, n_classes=6, per_class=8, n_features=5)
    probe = torch.randn(40, 5, generator=torch.Generator().manual_seed(9), dtype=torch.float64) * 3
    sorted_order = np.argsort(y.numpy(), kind="stable")  # class-sorted, the protocol's stream
    reference = _streamed(x, y, sorted_order)
    expected = {k: streaming.predict(reference, s) for k, s in _scores(reference, probe).items()}
    rng = np.random.default_rng(0)
    classes = y.unique().numpy()
    for trial in range(4):
        if trial % 2:  # another class order, images within a class shuffled
            order = np.concatenate([rng.permutation(np.flatnonzero(y.numpy() == c)) for c in rng.permutation(classes)])
        else:  # images of all classes interleaved
            order = rng.permutation(len(x))
        state = _streamed(x, y, order)
        torch.testing.assert_close(state.scatter, reference.scatter, rtol=1e-12, atol=1e-10)
        for name, scores in _scores(state, probe).items():
            torch.testing.assert_close(scores, _scores(reference, probe)[name], rtol=1e-10, atol=1e-9)
            assert torch.equal(streaming.predict(state, scores), expected[name]), name


def test_ncm_is_the_nearest_mean_and_full_shrinkage_lda_is_ncm():
    x, y = _stream(seed=2)
    state = streaming.from_batch(x, y)
    probe = x + 0.5
    nearest = state.classes[torch.cdist(probe, state.means).argmin(1)]
    assert torch.equal(streaming.predict(state, streaming.ncm_scores(state, probe)), nearest)
    assert torch.equal(streaming.predict(state, streaming.slda_scores(state, probe, 1.0)), nearest)


def test_slda_is_the_textbook_lda_with_the_pooled_covariance():
    x, y = _stream(seed=3, per_class=20)
    state = streaming.from_batch(x, y)
    eps = 0.2
    cov = state.scatter / len(x)
    shrunk = (1 - eps) * cov + eps * torch.trace(cov) / x.shape[1] * torch.eye(x.shape[1], dtype=torch.float64)
    precision = torch.linalg.inv(shrunk)
    probe = x[:7] - 0.3
    # log N(x; m_c, shrunk) up to the same constant for every class
    diff = probe[:, None] - state.means[None]
    by_hand = -0.5 * torch.einsum("mkf,fg,mkg->mk", diff, precision, diff)
    got = streaming.slda_scores(state, probe, eps)
    torch.testing.assert_close(got - got[:, :1], by_hand - by_hand[:, :1], rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError):
        streaming.slda_scores(state, probe, 0.0)


def test_gauss_posterior_of_a_small_case_computed_by_hand():
    # One feature, two classes: a = {0, 1, 2}, b = {4, 6}; N = 5, K = 2, F = 1.
    x = torch.tensor([[0.0], [1.0], [2.0], [4.0], [6.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1])
    state = streaming.from_batch(x, y)
    # scatter: (0-1)^2 + 0 + (2-1)^2 + (4-5)^2 + (6-5)^2 = 4
    assert float(state.scatter) == 4.0 and state.means.flatten().tolist() == [1.0, 5.0]
    prior = streaming.GaussPrior(psi0=2.0, nu0=3.0)
    post = streaming.gauss_posterior(state, prior)
    # IW(psi0 + S_w, nu0 + N - K) = IW(6, 6); predictive dof = 6 - 1 + 1 = 6
    assert float(post.psi) == 6.0 and post.dof == 6.0
    torch.testing.assert_close(post.log_prior, torch.log(torch.tensor([4 / 7, 3 / 7], dtype=torch.float64)))
    probe = torch.tensor([[-1.0], [3.0], [5.5]], dtype=torch.float64)
    got = streaming.gauss_log_predictive(state, post, probe)
    for c, (mean, n) in enumerate(((1.0, 3), (5.0, 2))):
        scale = math.sqrt(6.0 * (n + 1) / n / 6.0)  # shape psi (n+1) / (n dof), as a standard deviation
        want = scipy_stats.t.logpdf(probe.flatten().numpy(), df=6.0, loc=mean, scale=scale)
        np.testing.assert_allclose(got[:, c].numpy(), want, rtol=1e-12)


def test_gauss_predictive_is_the_integral_over_the_posterior():
    """The conjugate algebra checked by brute force: p(x | class a, data) as the ratio of two
    integrals over (mu_a, mu_b, sigma^2) of likelihood x prior (flat means, inverse-Wishart =
    inverse-gamma(nu0/2, psi0/2) in one dimension), on a grid."""
    data = {0: np.array([0.0, 1.0, 2.0]), 1: np.array([4.0, 6.0])}
    psi0, nu0 = 2.0, 3.0
    mu = np.linspace(-6, 12, 361)
    var = np.exp(np.linspace(np.log(0.05), np.log(200.0), 1200))
    dmu, dlogvar = mu[1] - mu[0], np.log(var[1] / var[0])

    def log_normal(v, m, s2):
        return -0.5 * np.log(2 * np.pi * s2) - (v - m) ** 2 / (2 * s2)

    log_prior_var = -(nu0 / 2 + 1) * np.log(var) - psi0 / (2 * var)  # inverse-gamma, unnormalised
    m, s2 = np.meshgrid(mu, var, indexing="ij")
    class_b = np.logaddexp.reduce(sum(log_normal(v, m, s2) for v in data[1]), axis=0) + np.log(dmu)  # mu_b out

    def evidence(points_a):
        log_a = np.logaddexp.reduce(sum(log_normal(v, m, s2) for v in points_a), axis=0) + np.log(dmu)
        return np.logaddexp.reduce(log_a + class_b + log_prior_var + np.log(var)) + dlogvar  # d var = var d log var

    state = streaming.from_batch(torch.tensor([[0.0], [1.0], [2.0], [4.0], [6.0]], dtype=torch.float64),
                                 torch.tensor([0, 0, 0, 1, 1]))
    post = streaming.gauss_posterior(state, streaming.GaussPrior(psi0, nu0))
    base = evidence(data[0])
    for probe in (-1.0, 1.5, 3.0):
        brute = evidence(np.append(data[0], probe)) - base
        exact = float(streaming.gauss_log_predictive(state, post, torch.tensor([[probe]], dtype=torch.float64))[0, 0])
        assert abs(brute - exact) < 2e-3, (probe, brute, exact)


def test_gauss_matches_scipy_multivariate_t_and_its_prior_is_order_free():
    x, y = _stream(seed=4, n_classes=3, per_class=5, n_features=3)
    state = streaming.from_batch(x, y)
    prior = streaming.gauss_prior(state)
    # psi0: the average per-feature variance about the grand mean; nu0 = F + 2
    assert prior.nu0 == 5.0 and prior.psi0 == pytest.approx(float(((x - x.mean(0)) ** 2).mean()), rel=1e-12)
    post = streaming.gauss_posterior(state, prior)
    assert post.dof == 5.0 + 15 - 3 - 3 + 1
    probe = x[:4] + 0.7
    got = streaming.gauss_log_predictive(state, post, probe)
    for c in range(3):
        n = float(state.counts[c])
        shape = (post.psi * (n + 1) / (n * post.dof)).numpy()
        want = scipy_stats.multivariate_t(loc=state.means[c].numpy(), shape=shape, df=post.dof).logpdf(probe.numpy())
        np.testing.assert_allclose(got[:, c].numpy(), want, rtol=1e-10)
    # a posterior the prior keeps proper: one image per class gives a zero scatter
    single = streaming.from_batch(x[::5], y[::5])
    assert float(single.scatter.abs().max()) == 0.0
    assert torch.isfinite(streaming.gauss_scores(single, probe)).all()
