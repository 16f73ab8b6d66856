"""The closed-form inner loop (model/linear_inner_loop.py) against the generic autograd one.

A loss function that is not `F.mse_loss` itself (a wrapper computing the same thing) keeps
`inner_loop` on the generic path, so the two can be compared on the same data in float64.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model import linear_inner_loop
from model.meta_learner import InnerLoopRule, inner_loop, pln_params
from model.networks import build_sine_net


def generic_mse(outputs, targets):
    return F.mse_loss(outputs, targets)


def _case(outputs=2, steps=5, batch=3, features=6):
    torch.manual_seed(0)
    pln = nn.Sequential(nn.Linear(features, outputs)).double()
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(steps, batch, features, generator=g, dtype=torch.float64).requires_grad_()
    targets = torch.randn(steps, batch, outputs, generator=g, dtype=torch.float64)
    return pln, feats, targets


def _adapt_and_differentiate(pln, feats, targets, loss_fn, rule):
    """The adapted weights, and d(a fixed function of them)/d(start weights, features)."""
    adapted = inner_loop(pln, pln_params(pln), feats, targets, loss_fn, rule)
    weight, bias = adapted["0.weight"], adapted["0.bias"]
    probe = torch.linspace(-1, 1, weight.numel(), dtype=weight.dtype).reshape(weight.shape)
    objective = (weight * probe).sum() + (weight ** 2).sum() + 3 * bias.sum()
    inputs = [pln[0].weight, pln[0].bias] + ([feats] if feats.requires_grad else [])
    return [weight.detach(), bias.detach()] + list(torch.autograd.grad(objective, inputs))


@pytest.mark.parametrize("clip", [None, 1.0], ids=["unclipped", "clipped"])
@pytest.mark.parametrize("first_order", [False, True], ids=["second_order", "first_order"])
def test_closed_form_equals_the_generic_loop(clip, first_order):
    pln, feats, targets = _case()
    rule = InnerLoopRule(lr=0.2, first_order=first_order, clip=clip)
    if first_order:  # meta_loss computes the trajectory's features without a graph when first order
        feats = feats.detach()
    closed = _adapt_and_differentiate(pln, feats, targets, F.mse_loss, rule)
    generic = _adapt_and_differentiate(pln, feats, targets, generic_mse, rule)
    for a, b in zip(closed, generic, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


def test_the_clipped_case_clamps_some_gradients_and_not_others():
    """Otherwise the clipped comparison above would not test the clamp's derivative."""
    pln, feats, targets = _case()
    params = pln_params(pln)
    clamped = passed = 0
    for f, y in zip(feats, targets):
        g = torch.autograd.grad(F.mse_loss(torch.func.functional_call(pln, params, (f,)), y), list(params.values()))
        clamped += sum(int((x.abs() > 1.0).sum()) for x in g)
        passed += sum(int((x.abs() <= 1.0).sum()) for x in g)
        params = {k: v - 0.2 * x.clamp(-1.0, 1.0) for (k, v), x in zip(params.items(), g)}
    assert clamped > 0 and passed > 0


def test_gradcheck_of_the_closed_form_loop():
    pln, feats, targets = _case(outputs=1, steps=4)
    weight = pln[0].weight.detach().clone().requires_grad_()
    bias = pln[0].bias.detach().clone().requires_grad_()
    for clip in (None, 1.0):
        def loop(w, b, f, clip=clip):
            return linear_inner_loop._LinearMSELoop.apply(w, b, f, targets, 0.2, clip, False)
        assert torch.autograd.gradcheck(loop, (weight, bias, feats), eps=1e-6, atol=1e-7)


def test_which_plns_take_the_closed_form():
    sine_2020 = build_sine_net("oml2020", width=8, capacity=3, rln=5)
    sine_2019 = build_sine_net("mrcl2019", width=8, capacity=3, rln=6)
    assert linear_inner_loop.fits(sine_2020.pln, F.mse_loss)
    assert linear_inner_loop.fits(nn.Linear(4, 2), F.mse_loss)
    assert not linear_inner_loop.fits(sine_2019.pln, F.mse_loss)            # hidden layers
    assert not linear_inner_loop.fits(sine_2020.pln, F.cross_entropy)       # another loss
    assert not linear_inner_loop.fits(sine_2020.pln, generic_mse)           # not recognisably the MSE
    assert not linear_inner_loop.fits(nn.Linear(4, 2, bias=False), F.mse_loss)


def test_a_bare_linear_pln_keeps_its_parameter_names():
    torch.manual_seed(0)
    pln = nn.Linear(3, 1).double()
    feats, targets = torch.randn(2, 4, 3, dtype=torch.float64), torch.randn(2, 4, 1, dtype=torch.float64)
    adapted = inner_loop(pln, pln_params(pln), feats, targets, F.mse_loss, InnerLoopRule(lr=0.1))
    assert set(adapted) == {"weight", "bias"}
    want = inner_loop(pln, pln_params(pln), feats, targets, generic_mse, InnerLoopRule(lr=0.1))
    torch.testing.assert_close(adapted["weight"], want["weight"], rtol=1e-13, atol=1e-14)
