"""ER-Reservoir (Chaudhry et al. 2019, "On Tiny Episodic Memories in Continual Learning").

Their experience-replay algorithm (Algorithm 1) with the reservoir memory write: for each incoming
batch B_n, draw B_M from the memory M, take one SGD step on the loss of B_n united with B_M, then
write B_n into M by reservoir sampling. Here B_n is one sample (the stream is batch 1)
and |B_M| = `replay` (fewer while M holds fewer), drawn uniformly without replacement; the loss is
the mean cross-entropy over the 1 + |B_M| samples. The memory holds `size` samples (Table 2: 200).

Reservoir sampling (Vitter 1985, Algorithm R, as Chaudhry et al. write it): the n-th sample seen
(n = 1, 2, ...) fills a free slot while there is one; afterwards j ~ U{0, ..., n-1} and the sample
replaces slot j if j < size. After N samples every one of them is in M with probability size / N,
and M is a uniform random subset of them (tests/test_continual_learners.py checks both).
"""
from __future__ import annotations

import numpy as np
import torch

from model.continual.models import LearnerModel

MEMORY_SIZE = 200  # Table 2: "All memory-based methods use a buffer of 200"


class Reservoir:
    """A reservoir-sampled memory of (x, y) items."""

    def __init__(self, size: int, rng: np.random.Generator):
        self.size, self.rng = size, rng
        self.items: list = []
        self.seen = 0

    def __len__(self) -> int:
        return len(self.items)

    def add(self, item) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
            return
        j = int(self.rng.integers(self.seen))  # 0 .. seen-1
        if j < self.size:
            self.items[j] = item

    def sample(self, k: int) -> list:
        """min(k, len) items drawn uniformly without replacement."""
        k = min(k, len(self.items))
        if k == 0:
            return []
        return [self.items[i] for i in self.rng.choice(len(self.items), size=k, replace=False)]


def stack(items) -> tuple[torch.Tensor, torch.Tensor]:
    """[(x [1, ...], y [1]), ...] -> (x [k, ...], y [k])."""
    return torch.cat([x for x, _ in items]), torch.cat([y for _, y in items])


class ExperienceReplay:
    """One SGD step on {(x_t, y_t)} + `replay` memories, then the reservoir write of (x_t, y_t)."""

    def __init__(self, model: LearnerModel, lr: float, rng: np.random.Generator, replay: int = 10,
                 memory: int = MEMORY_SIZE):
        self.model, self.lr, self.replay = model, lr, replay
        self.memory = Reservoir(memory, rng)

    def observe(self, params, x, y) -> None:
        xb, yb = stack([(x, y), *self.memory.sample(self.replay)])
        self.model.sgd_step_(params, xb, yb, self.lr)
        self.memory.add((x, y))

    def end_task(self, params, xs, ys) -> None:
        pass
