"""model/baselines.py by hand: the SR-NN set-sparsity penalty and the pretraining head bank."""
import math

import pytest
import torch
from torch import nn

from model.baselines import HeadBank, set_kl_sparsity


def _penalty(mean, beta):
    r = beta / (mean + 1e-4)
    return r - math.log(r) - 1.0


def test_sparsity_penalty_is_zero_when_no_unit_is_busier_than_beta():
    rep = torch.tensor([[0.0, 0.2, 0.6], [0.4, 0.2, 0.0]])  # unit means 0.2, 0.2, 0.3
    assert set_kl_sparsity(rep, 0.3).item() == 0.0  # 0.3 is not above beta: also 0
    assert set_kl_sparsity(torch.zeros(5, 4), 0.05).item() == 0.0
    rep.requires_grad_(True)
    set_kl_sparsity(rep, 0.3).backward()
    assert rep.grad.abs().max().item() == 0.0  # nothing pushes a unit that is already sparse enough


def test_sparsity_penalty_by_hand():
    # 3 units, batch of 2: means 1.0, 0.05, 0.5; beta 0.1 -> units 0 and 2 are penalised.
    rep = torch.tensor([[1.5, 0.1, 0.0], [0.5, 0.0, 1.0]], dtype=torch.float64)
    want = (_penalty(1.0, 0.1) + 0.0 + _penalty(0.5, 0.1)) / 3  # mean over all units, zeros included
    assert set_kl_sparsity(rep, 0.1).item() == pytest.approx(want, rel=1e-12)
    assert _penalty(1.0, 0.1) == pytest.approx(0.1 / 1.0001 - math.log(0.1 / 1.0001) - 1, rel=1e-15)
    # Each penalised unit's gradient pushes its activations down: d/dm (r - ln r - 1) = (1/r - 1) * (-beta/(m+eps)^2) / B
    rep.requires_grad_(True)
    set_kl_sparsity(rep, 0.1).backward()
    for unit, mean in ((0, 1.0), (2, 0.5)):
        r = 0.1 / (mean + 1e-4)
        per_sample = (1 - 1 / r) * (-0.1 / (mean + 1e-4) ** 2) / 2 / 3
        torch.testing.assert_close(rep.grad[:, unit], torch.full((2,), per_sample, dtype=torch.float64))
        assert per_sample > 0  # gradient descent lowers the unit's activations
    assert rep.grad[:, 1].abs().max().item() == 0.0


def _bank():
    torch.manual_seed(0)
    last = nn.Linear(3, 1)
    bank = HeadBank(last, n_heads=4)
    with torch.no_grad():  # distinct, known heads
        bank.weight.copy_(torch.arange(12.0).reshape(4, 3))
        bank.bias.copy_(torch.tensor([0.5, -1.0, 2.0, 10.0]))
    return last, bank


def test_head_bank_shapes_and_init():
    torch.manual_seed(0)
    last = nn.Linear(5, 1)
    bank = HeadBank(last, n_heads=3)
    assert bank.weight.shape == (3, 5) and bank.bias.shape == (3,)
    assert torch.equal(bank.bias, last.bias.detach().repeat(3))  # biases start from the layer's
    assert not torch.equal(bank.weight[0], bank.weight[1])  # each head its own Kaiming draw
    assert bank.weight.data_ptr() != last.weight.data_ptr()


def test_head_bank_forward_uses_each_samples_head():
    _, bank = _bank()
    hidden = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [2.0, -1.0, 0.5], [1.0, 1.0, 1.0]])
    heads = torch.tensor([0, 1, 2, 3, 0])
    out = bank(hidden, heads)
    # sample i: hidden[i] . weight[heads[i]] + bias[heads[i]], weight row h = (3h, 3h+1, 3h+2)
    want = [[0 + 0.5], [4 - 1.0], [6 + 7 + 8 + 2.0], [2 * 9 - 10 + 0.5 * 11 + 10.0], [0 + 1 + 2 + 0.5]]
    assert out.shape == (5, 1)
    torch.testing.assert_close(out, torch.tensor(want))
    # the gradient reaches only the heads that were used
    bank.zero_grad()
    bank(hidden[:2], torch.tensor([1, 1])).sum().backward()
    assert bank.weight.grad[[0, 2, 3]].abs().max().item() == 0.0 and bank.weight.grad[1].abs().max().item() > 0


@pytest.mark.parametrize("head", [0, 2, 3])
def test_copy_head_into_copies_exactly_that_head(head):
    last, bank = _bank()
    bank.copy_head_into(last, head)
    assert torch.equal(last.weight, bank.weight[head : head + 1]) and torch.equal(last.bias, bank.bias[head : head + 1])
    hidden = torch.randn(6, 3)
    torch.testing.assert_close(last(hidden), bank(hidden, torch.full((6,), head)))
    assert last.weight.data_ptr() != bank.weight.data_ptr()  # a copy, not a view
