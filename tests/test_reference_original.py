"""`model.reference.original_meta_loss`, the sine benchmark's 'original' column: the meta-loss and
meta-gradient are `reference_meta_loss`'s, and the work around them is the original code's (which
losses, on how many samples, with or without graph; which weights each inner gradient is taken for).
"""
import pytest
import torch
import torch.nn.functional as F

from model.meta_learner import InnerLoopRule
from model.networks import build_sine_net
from model.reference import original_meta_loss, reference_meta_loss
from tests.gradient_checks import grads

META = 7


def _case(arch: str, rln: int, steps: int, batch: int = 3):
    torch.manual_seed(0)
    model = build_sine_net(arch, width=6, capacity=3, rln=rln).double()
    g = torch.Generator().manual_seed(5)
    x_traj, y_traj = (torch.randn(steps, batch, n, generator=g, dtype=torch.float64) for n in (4, 1))
    x_meta, y_meta = (torch.randn(META, n, generator=g, dtype=torch.float64) for n in (4, 1))
    return model, (x_traj, y_traj, x_meta, y_meta)


# (version, the preset's network, its rule): 2020 second order with the clamp, 2019 first order
CASES = {"2020": ("oml2020", 5, InnerLoopRule(lr=0.01, clip=2.0)),
         "2019": ("mrcl2019", 6, InnerLoopRule(lr=0.1, first_order=True)),
         "2019_clipped": ("mrcl2019", 6, InnerLoopRule(lr=0.1, first_order=True, clip=0.05))}


@pytest.mark.parametrize("steps", [1, 2, 6])
@pytest.mark.parametrize("case", CASES)
def test_original_gives_the_references_loss_and_meta_gradient(case, steps):
    arch, rln, rule = CASES[case]
    model, data = _case(arch, rln, steps)
    version = case[:4]
    original = original_meta_loss(model, *data, F.mse_loss, rule, version)
    reference = reference_meta_loss(model, *data, F.mse_loss, rule)
    assert original.item() == pytest.approx(reference.item(), rel=1e-12)
    for a, b in zip(grads(model, original), grads(model, reference_meta_loss(model, *data, F.mse_loss, rule))):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


def _recorded(version: str, steps: int, monkeypatch):
    arch, rln, rule = CASES[version]
    model, data = _case(arch, rln, steps)
    losses, grad_inputs = [], []

    def loss_fn(out, y):
        losses.append((len(out), torch.is_grad_enabled()))
        return F.mse_loss(out, y)

    real_grad = torch.autograd.grad

    def grad(outputs, inputs, **kwargs):
        grad_inputs.append(len(inputs))
        return real_grad(outputs, inputs, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", grad)
    original_meta_loss(model, *data, loss_fn, rule, version)
    n_rln, n_pln = len(list(model.rln.parameters())), len(list(model.pln.parameters()))
    return losses, grad_inputs, n_rln, n_pln


def test_2020_computes_the_meta_loss_once_after_the_inner_loop(monkeypatch):
    losses, grad_inputs, _, n_pln = _recorded("2020", 6, monkeypatch)
    # inner step 0, the unadapted meta-loss without graph, inner steps 1..5, the meta-loss
    assert losses == [(3, True), (META, False)] + [(3, True)] * 5 + [(META, True)]
    assert grad_inputs == [n_pln] * 6


def test_2019_computes_a_prefix_meta_loss_after_every_step_and_rln_gradients(monkeypatch):
    losses, grad_inputs, n_rln, n_pln = _recorded("2019", 6, monkeypatch)
    prefixes = [(k + 1) * META // 6 for k in range(1, 6)]  # 2, 3, 4, 5, 7 of the 7 meta samples
    assert prefixes == [2, 3, 4, 5, 7]
    want = [(3, True), (META, False)]
    for n in prefixes:
        want += [(3, True), (n, True)]
    assert losses == want
    assert grad_inputs == [n_rln + n_pln] * 6


def test_unknown_version_is_refused():
    model, data = _case("oml2020", 5, 2)
    with pytest.raises(ValueError, match="version"):
        original_meta_loss(model, *data, F.mse_loss, InnerLoopRule(lr=0.01), "2021")
