"""What a continual learner trains, as a mean cross-entropy gradient of a batch.

* `LinearHead`: the PLN on a frozen RLN's cached features, params [Wt [F, O], b [O]] (the weight
  stored feature-major), in closed form: for logits z = x Wt + b, d CE / d z = softmax(z) - onehot(y)
  =: e, so dWt = x^T e / B and db = mean(e). No graph is built. Its `sgd_step_` touches only the
  rows of the features the batch uses (a ReLU RLN's features are mostly zeros, ~92% for the `cpu`
  OML model): the other rows' gradient is exactly zero.
* `Network`: every parameter of a network (the Standard column: RLN and PLN learned online),
  through `torch.func.functional_call` and `torch.autograd.grad`.

Both give `grads` (dense), `sgd_step_` (theta <- theta - lr * grad, in place), `sq_grads` (the
mean over samples of each sample's squared gradient: EWC's empirical diagonal Fisher) and `logits`.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from model.online import cross_entropy_logit_grad


@runtime_checkable
class LearnerModel(Protocol):
    """What a continual learner trains: the calls every learner in model/continual/ makes.
    `params` is the list of tensors being learned (updated in place by `sgd_step_`)."""

    trains_representation: bool

    def logits(self, params: list, x: torch.Tensor) -> torch.Tensor: ...

    def grads(self, params: list, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]: ...

    def sgd_step_(self, params: list, x: torch.Tensor, y: torch.Tensor, lr: float) -> None: ...

    def sq_grads(self, params: list, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]: ...


class LinearHead:
    """A linear PLN [Wt [F, O], b [O]] on features x [B, F]."""

    trains_representation = False

    @staticmethod
    def from_pln(w: torch.Tensor, b: torch.Tensor) -> list[torch.Tensor]:
        """[W [O, F], b] as nn.Linear stores them -> this head's params."""
        return [w.t().contiguous(), b.clone()]

    @staticmethod
    def logits(params, x: torch.Tensor) -> torch.Tensor:
        wt, b = params
        return torch.addmm(b, x, wt)

    def _error(self, params, x, y) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.logits(params, x)
        return F.cross_entropy(z, y), cross_entropy_logit_grad(z, y)

    def grads(self, params, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(mean cross-entropy over the batch, [dW, db])."""
        loss, e = self._error(params, x, y)
        e /= len(y)
        return loss.detach(), [x.t() @ e, e.sum(0)]

    @torch.no_grad()
    def sgd_step_(self, params, x: torch.Tensor, y: torch.Tensor, lr: float) -> None:
        """One SGD step on the batch's mean cross-entropy, over the rows of Wt its features use."""
        wt, b = params
        rows = (x != 0).any(0).nonzero().squeeze(1)
        xs = x[:, rows]
        e = cross_entropy_logit_grad(torch.addmm(b, xs, wt[rows]), y)
        e /= len(y)
        wt.index_add_(0, rows, xs.t() @ e, alpha=-lr)
        b.sub_(e.sum(0), alpha=lr)

    def sq_grads(self, params, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """Mean over the B samples of each sample's squared gradient: (e_i x_i^T)^2 = e_i^2 (x_i^2)^T."""
        _, e = self._error(params, x, y)
        e2 = e * e
        return [(x * x).t() @ e2 / len(y), e2.mean(0)]


class Network:
    """Every parameter of `net` (in `net.named_parameters()` order), trained on its inputs."""

    trains_representation = True

    def __init__(self, net: nn.Module):
        self.net = net
        self.names = [name for name, _ in net.named_parameters()]

    def logits(self, params, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.net, dict(zip(self.names, params)), (x,))

    def grads(self, params, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with torch.enable_grad():
            live = [p.detach().requires_grad_() for p in params]
            loss = F.cross_entropy(self.logits(live, x), y)
            return loss.detach(), list(torch.autograd.grad(loss, live))

    @torch.no_grad()
    def sgd_step_(self, params, x: torch.Tensor, y: torch.Tensor, lr: float) -> None:
        for p, g in zip(params, self.grads(params, x, y)[1]):
            p.sub_(g, alpha=lr)

    def sq_grads(self, params, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        total = [torch.zeros_like(p) for p in params]
        for i in range(len(y)):
            for t, g in zip(total, self.grads(params, x[i:i + 1], y[i:i + 1])[1]):
                t.addcmul_(g, g)
        return [t / len(y) for t in total]
