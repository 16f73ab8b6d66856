"""Online (and Approx IID): one plain SGD step of the mean cross-entropy per incoming sample.

The paper's two baselines of Table 2 (§5): "(a) fully online SGD updates that update one point at
a time in order on the trajectory and (b) approximate IID training where SGD updates are used on
a random shuffling of the trajectory". Both are this learner; they differ only in the order the
protocol feeds the samples.
"""
from __future__ import annotations

import torch

from model.continual.models import LearnerModel


@torch.no_grad()
def sgd_step_(params, grads, lr: float) -> None:
    """theta <- theta - lr * g, in place."""
    for p, g in zip(params, grads):
        p.sub_(g, alpha=lr)


class Online:
    """theta <- theta - lr * grad CE(theta; x_t, y_t) for every incoming (x_t, y_t)."""

    def __init__(self, model: LearnerModel, lr: float, rng=None):
        self.model, self.lr = model, lr

    def observe(self, params, x, y) -> None:
        self.model.sgd_step_(params, x, y, self.lr)

    def end_task(self, params, xs, ys) -> None:
        pass
