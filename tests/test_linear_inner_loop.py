"""The closed-form inner loops (model/linear_inner_loop.py) against the generic autograd one.

A loss function that is not `F.mse_loss` / `F.cross_entropy` itself (a wrapper computing the
same thing, declaring nothing) keeps `inner_loop` on the generic path, so the two can be
compared on the same data in float64.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model import linear_inner_loop
from model.meta_learner import InnerLoopRule, inner_loop, pln_params
from model.networks import build_omniglot_net, build_sine_net


def generic_mse(outputs, targets):
    return F.mse_loss(outputs, targets)


def generic_cross_entropy(outputs, targets):
    return F.cross_entropy(outputs, targets)


class DeclaredCrossEntropy:
    """A wrapper that says what it computes, as the Omniglot training's logit-recording loss does."""
    computes = staticmethod(F.cross_entropy)

    def __call__(self, outputs, targets):
        return F.cross_entropy(outputs, targets)


def _case(outputs=2, steps=5, batch=3, features=6, classes=False):
    torch.manual_seed(0)
    pln = nn.Sequential(nn.Linear(features, outputs)).double()
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(steps, batch, features, generator=g, dtype=torch.float64).requires_grad_()
    if classes:  # class indices, as the Omniglot trajectory's
        return pln, feats, torch.randint(0, outputs, (steps, batch), generator=g)
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


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("first_order", [False, True], ids=["second_order", "first_order"])
def test_cross_entropy_closed_form_equals_the_generic_loop(first_order, batch):
    pln, feats, targets = _case(outputs=7, steps=6, batch=batch, features=5, classes=True)
    rule = InnerLoopRule(lr=0.7, first_order=first_order)
    if first_order:
        feats = feats.detach()
    assert linear_inner_loop.fits(pln, F.cross_entropy, rule)
    closed = _adapt_and_differentiate(pln, feats, targets, F.cross_entropy, rule)
    declared = _adapt_and_differentiate(pln, feats, targets, DeclaredCrossEntropy(), rule)
    generic = _adapt_and_differentiate(pln, feats, targets, generic_cross_entropy, rule)
    for a, b, c in zip(closed, declared, generic, strict=True):
        torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-13)
        assert torch.equal(a, b)


def test_cross_entropy_closed_form_gradcheck():
    pln, feats, targets = _case(outputs=4, steps=4, batch=2, features=3, classes=True)
    weight = pln[0].weight.detach().clone().requires_grad_()
    bias = pln[0].bias.detach().clone().requires_grad_()

    def loop(w, b, f):
        return linear_inner_loop._cross_entropy_loop(w, b, f, targets, 0.7, False)
    assert torch.autograd.gradcheck(loop, (weight, bias, feats), eps=1e-6, atol=1e-7)


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


def test_which_inner_loops_take_a_closed_form():
    plain, clipped = InnerLoopRule(lr=0.1), InnerLoopRule(lr=0.1, clip=10.0)
    fits = linear_inner_loop.fits
    sine_2020 = build_sine_net("oml2020", width=8, capacity=3, rln=5)
    sine_2019 = build_sine_net("mrcl2019", width=8, capacity=3, rln=6)
    omniglot_2020 = build_omniglot_net(channels=2, image_size=9, strides=[2, 1], pln_hidden=0, n_outputs=5)
    omniglot_2019 = build_omniglot_net(channels=2, image_size=9, strides=[2, 1], pln_hidden=4, n_outputs=5)
    assert fits(sine_2020.pln, F.mse_loss, plain) and fits(sine_2020.pln, F.mse_loss, clipped)
    assert fits(nn.Linear(4, 2), F.mse_loss, plain)
    assert fits(omniglot_2020.pln, F.cross_entropy, plain) and fits(omniglot_2020.pln, DeclaredCrossEntropy(), plain)
    assert not fits(omniglot_2020.pln, F.cross_entropy, clipped)           # a clamp breaks the low rank
    assert not fits(sine_2019.pln, F.mse_loss, plain)                      # hidden layers
    assert not fits(omniglot_2019.pln, F.cross_entropy, plain)
    assert not fits(sine_2020.pln, F.l1_loss, plain)                       # another loss
    assert not fits(sine_2020.pln, generic_mse, plain)                     # not recognisably the MSE
    assert not fits(nn.Linear(4, 2, bias=False), F.mse_loss, plain)


def test_the_omniglot_training_loss_declares_the_cross_entropy():
    from experiment.training.omniglot import _CrossEntropy
    assert linear_inner_loop.loss_kind(_CrossEntropy()) is F.cross_entropy


def test_a_bare_linear_pln_keeps_its_parameter_names():
    torch.manual_seed(0)
    pln = nn.Linear(3, 1).double()
    feats, targets = torch.randn(2, 4, 3, dtype=torch.float64), torch.randn(2, 4, 1, dtype=torch.float64)
    adapted = inner_loop(pln, pln_params(pln), feats, targets, F.mse_loss, InnerLoopRule(lr=0.1))
    assert set(adapted) == {"weight", "bias"}
    want = inner_loop(pln, pln_params(pln), feats, targets, generic_mse, InnerLoopRule(lr=0.1))
    torch.testing.assert_close(adapted["weight"], want["weight"], rtol=1e-13, atol=1e-14)
