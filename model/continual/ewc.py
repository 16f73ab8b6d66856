"""EWC: elastic weight consolidation (Kirkpatrick et al., PNAS 2017).

Eq. 3: L(theta) = L_B(theta) + sum_i lambda/2 F_i (theta_i - theta*_A,i)^2, with F the diagonal of
the Fisher information at the end of task A. For more tasks the paper keeps one such penalty per
finished task ("either with two separate penalties, or as one by noting that the sum of two
quadratic penalties is itself a quadratic penalty"); here the sum over tasks t is kept as one:
  sum_t F_t (theta - theta*_t)^2 = S theta^2 - 2 theta P + const,  S = sum_t F_t,  P = sum_t F_t theta*_t,
whose gradient is 2 (S theta - P). Each step is SGD on the online sample's cross-entropy plus this
penalty. F_t is the empirical diagonal Fisher: each parameter's squared gradient of the
cross-entropy at the true label, averaged over the task's samples (the common approximation of
the expected Fisher; it needs no sampling of labels).
"""
from __future__ import annotations

import torch

from model.continual.models import LearnerModel
from model.continual.sgd import sgd_step_


def penalty(params, fisher_sum, fisher_anchor_sum, anchor_sq_sum, lam: float) -> torch.Tensor:
    """lambda/2 * sum_t sum_i F_t,i (theta_i - theta*_t,i)^2 from the summed statistics."""
    total = sum(((s * p - 2 * a) * p).sum() + c for p, s, a, c in zip(params, fisher_sum, fisher_anchor_sum,
                                                                     anchor_sq_sum))
    return lam / 2 * total


def penalty_grads(params, fisher_sum, fisher_anchor_sum, lam: float) -> list[torch.Tensor]:
    """d penalty / d theta = lambda * (S theta - P)."""
    return [lam * (s * p - a) for p, s, a in zip(params, fisher_sum, fisher_anchor_sum)]


class EWC:
    def __init__(self, model: LearnerModel, lr: float, rng=None, lam: float = 1.0):
        self.model, self.lr, self.lam = model, lr, lam
        self.fisher_sum = self.fisher_anchor_sum = self.anchor_sq_sum = None

    @torch.no_grad()
    def observe(self, params, x, y) -> None:
        if self.fisher_sum is None:  # the first task: no penalty yet
            self.model.sgd_step_(params, x, y, self.lr)
            return
        grads = self.model.grads(params, x, y)[1]
        for g, p, s, a in zip(grads, params, self.fisher_sum, self.fisher_anchor_sum):
            g.addcmul_(s, p, value=self.lam).sub_(a, alpha=self.lam)  # + penalty_grads, without temporaries
        sgd_step_(params, grads, self.lr)

    @torch.no_grad()
    def end_task(self, params, xs, ys) -> None:
        """Add the finished task's penalty: its Fisher at the current parameters, anchored there."""
        fisher = self.model.sq_grads(params, xs, ys)
        anchors = [p.detach().clone() for p in params]
        if self.fisher_sum is None:
            self.fisher_sum = [torch.zeros_like(p) for p in params]
            self.fisher_anchor_sum = [torch.zeros_like(p) for p in params]
            self.anchor_sq_sum = [torch.zeros((), dtype=p.dtype) for p in params]
        for s, a, c, f, t in zip(self.fisher_sum, self.fisher_anchor_sum, self.anchor_sq_sum, fisher, anchors):
            s.add_(f)
            a.addcmul_(f, t)
            c.add_((f * t * t).sum())

    def penalty(self, params) -> torch.Tensor:
        if self.fisher_sum is None:
            return torch.zeros(())
        return penalty(params, self.fisher_sum, self.fisher_anchor_sum, self.anchor_sq_sum, self.lam)
