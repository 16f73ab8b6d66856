"""Gradient checks shared by the meta-gradient tests (OML, MAML-Rep): float64 models only."""
import pytest
import torch


def grads(model, loss) -> list[torch.Tensor]:
    """d loss / d every parameter of `model`, in `model.parameters()` order."""
    model.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


def assert_matches_finite_differences(model, loss_fn, directions: int = 3, eps: float = 1e-6) -> None:
    """The autograd gradient of `loss_fn()` (a scalar of the model's current weights) predicts the
    central difference along random directions: rel 1e-5, abs 1e-8. The weights are restored."""
    params = list(model.parameters())
    originals = [p.detach().clone() for p in params]

    def loss_at(values):
        with torch.no_grad():
            for p, v in zip(params, values):
                p.copy_(v)
        return loss_fn()

    analytic = grads(model, loss_at(originals))
    g = torch.Generator().manual_seed(3)
    for _ in range(directions):
        direction = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
        plus = loss_at([o + eps * d for o, d in zip(originals, direction)]).item()
        minus = loss_at([o - eps * d for o, d in zip(originals, direction)]).item()
        predicted = sum((a * d).sum() for a, d in zip(analytic, direction)).item()
        assert predicted == pytest.approx((plus - minus) / (2 * eps), rel=1e-5, abs=1e-8)
    loss_at(originals)
