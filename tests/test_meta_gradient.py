"""The fast meta-gradient (RLN once per meta-step) must be the original algorithm's gradient.

Checked in float64 on tiny networks, for regression (MSE, with and without inner clipping) and
classification (cross-entropy, one-image steps): equal to the brute-force recomputation, equal
to finite differences, and first-order mode equal to detaching the inner gradients.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model.meta_learner import InnerLoopRule, meta_loss
from model.networks import build_omniglot_net, build_sine_net
from model.reference import reference_meta_loss
from tests.gradient_checks import assert_matches_finite_differences, grads


def _regression_case(arch: str, rln: int, steps: int, batch: int, data_seed: int):
    """A float64 sine network and random data: `steps` inner batches of `batch`, 7 meta samples."""
    torch.manual_seed(0)
    model = build_sine_net(arch, width=6, capacity=3, rln=rln).double()
    g = torch.Generator().manual_seed(data_seed)
    x_traj, y_traj = (torch.randn(steps, batch, n, generator=g, dtype=torch.float64) for n in (4, 1))
    x_meta, y_meta = (torch.randn(7, n, generator=g, dtype=torch.float64) for n in (4, 1))
    return model, (x_traj, y_traj, x_meta, y_meta), F.mse_loss


def _sine_case():
    """The 2019 layout: a three-layer PLN, so meta_loss takes the autograd inner loop."""
    return _regression_case("mrcl2019", rln=6, steps=5, batch=4, data_seed=1)


def _linear_pln_case():
    """The 2020 layout: the PLN is one linear layer, so meta_loss takes the closed-form inner loop."""
    return _regression_case("oml2020", rln=5, steps=6, batch=3, data_seed=4)


def _classification_case():
    torch.manual_seed(0)
    model = build_omniglot_net(channels=3, image_size=9, strides=[2, 1], pln_hidden=0, n_outputs=5).double()
    g = torch.Generator().manual_seed(2)
    x_traj = torch.rand(6, 1, 1, 9, 9, generator=g, dtype=torch.float64)
    y_traj = torch.randint(0, 5, (6, 1), generator=g)
    x_meta, y_meta = torch.rand(8, 1, 9, 9, generator=g, dtype=torch.float64), torch.randint(0, 5, (8,), generator=g)
    return model, (x_traj, y_traj, x_meta, y_meta), F.cross_entropy


CASES = {"sine": (_sine_case, InnerLoopRule(lr=0.1)),
         "sine_clipped": (_sine_case, InnerLoopRule(lr=0.1, clip=0.05)),
         "sine_linear_pln": (_linear_pln_case, InnerLoopRule(lr=0.01)),
         "sine_linear_pln_clipped": (_linear_pln_case, InnerLoopRule(lr=0.01, clip=2.0)),  # clamps some, not all
         "omniglot": (_classification_case, InnerLoopRule(lr=0.5))}




@pytest.mark.parametrize("case", CASES)
def test_feature_once_equals_brute_force_recomputation(case):
    make, rule = CASES[case]
    model, data, loss_fn = make()
    fast_loss, _, _ = meta_loss(model, *data, loss_fn, rule)
    fast = grads(model, fast_loss)
    ref = grads(model, reference_meta_loss(model, *data, loss_fn, rule))
    assert fast_loss.item() == pytest.approx(reference_meta_loss(model, *data, loss_fn, rule).item(), rel=1e-12)
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    rln_grad = sum(g.abs().sum() for g in fast[: len(list(model.rln.parameters()))])
    assert rln_grad > 0


@pytest.mark.parametrize("case", ["sine", "sine_linear_pln", "sine_linear_pln_clipped", "omniglot"])
def test_meta_gradient_matches_finite_differences(case):
    make, rule = CASES[case]
    model, data, loss_fn = make()
    assert_matches_finite_differences(model, lambda: meta_loss(model, *data, loss_fn, rule).loss)


@pytest.mark.parametrize("case", ["sine", "sine_linear_pln_clipped", "omniglot"])
def test_first_order_differs_and_equals_detached_inner_gradients(case):
    make, rule = CASES[case]
    model, data, loss_fn = make()
    second = grads(model, meta_loss(model, *data, loss_fn, rule)[0])
    first_rule = InnerLoopRule(lr=rule.lr, first_order=True, clip=rule.clip)
    first = grads(model, meta_loss(model, *data, loss_fn, first_rule)[0])
    # The original pre-2020 code: the whole network re-run per step, inner gradients not differentiated.
    detached = grads(model, reference_meta_loss(model, *data, loss_fn, first_rule))
    for a, b in zip(first, detached):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert max((a - b).abs().max().item() for a, b in zip(first, second)) > 1e-6


def test_one_inner_step_is_plain_sgd():
    torch.manual_seed(0)
    pln = nn.Linear(3, 1).double()
    x, y = torch.randn(1, 2, 3, dtype=torch.float64), torch.randn(1, 2, 1, dtype=torch.float64)
    from model.meta_learner import inner_loop, pln_params
    adapted = inner_loop(pln, pln_params(pln), x, y, F.mse_loss, InnerLoopRule(lr=0.1))
    pln.zero_grad()
    F.mse_loss(pln(x[0]), y[0]).backward()
    torch.testing.assert_close(adapted["weight"], pln.weight - 0.1 * pln.weight.grad)
    torch.testing.assert_close(adapted["bias"], pln.bias - 0.1 * pln.bias.grad)


def test_the_reference_does_not_share_the_fast_paths_inner_step(monkeypatch):
    """A wrong inner step in model/meta_learner.py must show as a mismatch, not hide in both."""
    make, rule = CASES["sine_clipped"]
    model, data, loss_fn = make()
    reference = reference_meta_loss(model, *data, loss_fn, rule).item()
    import model.meta_learner as ml
    right = ml.sgd_step
    wrong = lambda params, loss, r: right(params, loss, InnerLoopRule(r.lr * 1.01, r.first_order, r.clip))
    monkeypatch.setattr(ml, "sgd_step", wrong)
    assert reference_meta_loss(model, *data, loss_fn, rule).item() == reference  # untouched by the patch
    assert abs(meta_loss(model, *data, loss_fn, rule).loss.item() - reference) > 1e-9


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("implementation", ["reference", "fast"])
def test_reference_two_inner_steps_by_hand(first_order, implementation):
    """A linear PLN on an identity RLN, two clamped SGD steps written out, and the meta-gradient
    of the PLN's bias: second order flows through the inner gradients, first order does not."""
    torch.manual_seed(0)
    model = nn.Module()
    model.rln, model.pln = nn.Identity(), nn.Linear(2, 1).double()
    x_traj = torch.tensor([[[1.0, 2.0]], [[-0.5, 1.0]]], dtype=torch.float64)
    y_traj = torch.tensor([[[3.0]], [[-2.0]]], dtype=torch.float64)
    x_meta = torch.tensor([[0.5, -1.0], [2.0, 0.0]], dtype=torch.float64)
    y_meta = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
    lr, clip = 0.1, 0.8
    w, b = model.pln.weight.detach().clone().requires_grad_(), model.pln.bias.detach().clone().requires_grad_()
    fw, fb = w, b
    for x, y in zip(x_traj, y_traj):  # d/dw (x.w + b - y)^2 = 2 r x, d/db = 2 r
        r = (x @ fw.T + fb - y).squeeze()
        gw, gb = (2 * r * x).clamp(-clip, clip), (2 * r).clamp(-clip, clip).reshape(1)
        if first_order:
            gw, gb = gw.detach(), gb.detach()
        fw, fb = fw - lr * gw, fb - lr * gb
    want = ((x_meta @ fw.T + fb - y_meta) ** 2).mean()
    want.backward()
    objective = reference_meta_loss if implementation == "reference" else lambda *a: meta_loss(*a).loss
    got = objective(model, x_traj, y_traj, x_meta, y_meta, F.mse_loss, InnerLoopRule(lr, first_order, clip))
    assert got.item() == pytest.approx(want.item(), rel=1e-12)
    got.backward()
    torch.testing.assert_close(model.pln.weight.grad, w.grad, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(model.pln.bias.grad, b.grad, rtol=1e-12, atol=1e-14)
