"""MER: Meta-Experience Replay (Riemer et al., ICLR 2019, Algorithm 1).

For each incoming sample (x, y):
  draw s batches B_1..B_s, each the current sample plus k-1 memories (uniform, without replacement
  within a batch; fewer while the memory is small); theta_A0 <- theta;
  for i = 1..s:  theta_W0 <- theta;  k SGD steps (rate alpha), one sample of B_i at a time;
                 theta <- theta_W0 + beta * (theta_Wk - theta_W0)       (within-batch Reptile)
  theta <- theta_A0 + gamma * (theta - theta_A0)                          (across-batch Reptile)
  reservoir write of (x, y) into the memory (size 200 in Table 2).
The current sample is the last of each batch (the paper's sample(x, y, k, M) always includes it).
With gamma = beta = 1 and s = 1 the two Reptile steps are identities and MER is k plain SGD steps
on one batch of memories followed by the current sample (tested).
"""
from __future__ import annotations

import numpy as np
import torch

from model.continual.models import LearnerModel
from model.continual.reservoir import MEMORY_SIZE, Reservoir


@torch.no_grad()
def reptile_(params, start, rate: float) -> None:
    """theta <- start + rate * (theta - start), in place."""
    if rate == 1.0:
        return
    for p, p0 in zip(params, start):
        p.sub_(p0).mul_(rate).add_(p0)


class MER:
    def __init__(self, model: LearnerModel, lr: float, rng: np.random.Generator, beta: float = 1.0, gamma: float = 1.0,
                 batches: int = 2, batch_size: int = 5, memory: int = MEMORY_SIZE):
        self.model, self.lr, self.beta, self.gamma = model, lr, beta, gamma
        self.s, self.k = batches, batch_size
        self.memory = Reservoir(memory, rng)

    def observe(self, params, x, y) -> None:
        batches = [[*self.memory.sample(self.k - 1), (x, y)] for _ in range(self.s)]
        across = [p.detach().clone() for p in params] if self.gamma != 1.0 else None
        for batch in batches:
            within = [p.detach().clone() for p in params] if self.beta != 1.0 else None
            for xj, yj in batch:
                self.model.sgd_step_(params, xj, yj, self.lr)
            if within is not None:
                reptile_(params, within, self.beta)
        if across is not None:
            reptile_(params, across, self.gamma)
        self.memory.add((x, y))

    def end_task(self, params, xs, ys) -> None:
        pass
