"""The classification meta-gradient, for both Omniglot presets' update rules.

mrcl2019: first-order, two-layer PLN (hidden ReLU layer); oml2020: second-order, linear PLN.
On a tiny conv net in float64 with cross-entropy and one-image inner steps, the fast path
(RLN once per meta-step, `model.meta_learner.meta_loss`) must give the brute-force
recomputation's loss and gradients (`model.reference`, the original algorithm), the
second-order gradient must agree with finite differences, and first-order must differ.
"""
import pytest
import torch
import torch.nn.functional as F

from experiment.omniglot_presets import OMNIGLOT_PRESETS
from model.meta_learner import InnerLoopRule, meta_loss
from model.networks import build_omniglot_net
from model.reference import reference_meta_loss
from tests.gradient_checks import assert_matches_finite_differences, grads

N_OUT = 6


def _case(preset):
    cfg = OMNIGLOT_PRESETS[preset]
    torch.manual_seed(0)
    hidden = 8 if cfg["pln_hidden"] else 0  # the 2019 shape (a hidden PLN layer), scaled down
    model = build_omniglot_net(channels=4, image_size=11, strides=(2, 1, 1), pln_hidden=hidden, n_outputs=N_OUT).double()
    g = torch.Generator().manual_seed(2)
    k, m = 5, 7
    x_traj = torch.rand(k, 1, 1, 11, 11, generator=g, dtype=torch.float64)
    y_traj = torch.tensor([[1], [1], [3], [3], [4]])  # class-sorted, like a trajectory
    x_meta = torch.rand(m, 1, 11, 11, generator=g, dtype=torch.float64)
    y_meta = torch.randint(0, N_OUT, (m,), generator=g)
    # The presets' inner step (0.03) barely moves a tiny net; a larger one makes the
    # second-order terms visible without changing what is compared (smaller with the hidden
    # layer, whose ReLUs a large step would switch off for the whole meta set).
    rule = InnerLoopRule(lr=0.2 if hidden else 0.5, first_order=cfg["first_order"])
    return model, (x_traj, y_traj, x_meta, y_meta), rule




@pytest.mark.parametrize("preset", ["mrcl2019", "oml2020"])
def test_feature_once_equals_brute_force(preset):
    model, data, rule = _case(preset)
    assert rule.first_order == (preset == "mrcl2019")
    fast_loss = meta_loss(model, *data, F.cross_entropy, rule)[0]
    fast = grads(model, fast_loss)
    ref_loss = reference_meta_loss(model, *data, F.cross_entropy, rule)
    ref = grads(model, ref_loss)
    assert fast_loss.item() == pytest.approx(ref_loss.item(), rel=1e-12)
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    n_rln = len(list(model.rln.parameters()))
    assert sum(g.abs().sum() for g in fast[:n_rln]) > 0  # the representation is meta-learned
    assert sum(g.abs().sum() for g in fast[n_rln:]) > 0  # and the PLN initialisation


@pytest.mark.parametrize("preset", ["mrcl2019", "oml2020"])
def test_second_order_gradient_matches_finite_differences(preset):
    model, data, rule = _case(preset)
    rule = InnerLoopRule(lr=rule.lr, first_order=False)
    assert_matches_finite_differences(model, lambda: meta_loss(model, *data, F.cross_entropy, rule).loss)


@pytest.mark.parametrize("preset", ["mrcl2019", "oml2020"])
def test_first_order_differs_from_second_order(preset):
    model, data, rule = _case(preset)
    first = grads(model, meta_loss(model, *data, F.cross_entropy, InnerLoopRule(rule.lr, first_order=True))[0])
    second = grads(model, meta_loss(model, *data, F.cross_entropy, InnerLoopRule(rule.lr, first_order=False))[0])
    n_rln = len(list(model.rln.parameters()))
    rln_gap = max((a - b).abs().max().item() for a, b in zip(first[:n_rln], second[:n_rln]))
    assert rln_gap > 1e-6
    # First order: the RLN is reached only through the meta set's features. With an all-zero meta
    # set the first convolution's weight gets no gradient; second order still reaches it through
    # the trajectory's features (the inner gradients depend on them).
    x_traj, y_traj, x_meta, y_meta = data
    blind = {order: grads(model, meta_loss(model, x_traj, y_traj, torch.zeros_like(x_meta), y_meta, F.cross_entropy,
                                            InnerLoopRule(rule.lr, first_order=order))[0])[0]
             for order in (True, False)}
    assert blind[True].abs().max().item() == 0.0
    assert blind[False].abs().max().item() > 1e-8
