"""Incremental sine waves: y = amplitude * sin(x + phase), x ~ U[-5, 5].

A function's input is a one-hot task slot (`capacity` values) followed by x. Amplitudes lie in
[0.1, 5.1] and phases in [0, pi], drawn up front from a seeded Generator, so the 400
meta-training functions are fixed by the seed alone (the original drew them lazily from the
global numpy stream, in whatever order ids were first requested).
"""
from dataclasses import dataclass

import numpy as np

X_RANGE = (-5.0, 5.0)


@dataclass(frozen=True)
class SineFamily:
    amplitudes: np.ndarray
    phases: np.ndarray

    @classmethod
    def draw(cls, n_functions: int, rng: np.random.Generator) -> "SineFamily":
        amplitudes = (rng.random(n_functions) + 0.02) * 5.0
        phases = rng.random(n_functions) * np.pi
        return cls(amplitudes, phases)

    def __len__(self) -> int:
        return len(self.amplitudes)

    def __call__(self, ids, x):
        return self.amplitudes[ids] * np.sin(x + self.phases[ids])


def encode(slots, x, capacity: int) -> np.ndarray:
    """[..., capacity + 1] inputs: one-hot `slots` then x (slots and x broadcast together)."""
    x = np.asarray(x, dtype=np.float64)
    slots = np.broadcast_to(np.asarray(slots), x.shape)
    out = np.zeros(x.shape + (capacity + 1,), dtype=np.float32)
    np.put_along_axis(out, slots[..., None], 1.0, axis=-1)
    out[..., -1] = x
    return out


def choose_slots(rng: np.random.Generator, tasks: int, capacity: int, slot_mode: str) -> np.ndarray:
    """'position': the i-th function of a trajectory uses slot i (2019); 'random': a random
    assignment of distinct slots out of `capacity` (2020)."""
    if slot_mode == "position":
        return np.arange(tasks)
    return rng.permutation(capacity)[:tasks]


def _samples(family, rng, ids, slots, n, capacity):
    """n fresh samples for each function: inputs [T, n, capacity+1], targets [T, n, 1]."""
    x = rng.uniform(*X_RANGE, size=(len(ids), n))
    y = family(np.asarray(ids)[:, None], x)
    return encode(np.asarray(slots)[:, None], x, capacity), y[..., None].astype(np.float32)


def sample_trajectory(family, rng, *, tasks, update_step, batch_size, extra_per_task, capacity, slot_mode):
    """Draw `tasks` distinct functions and their slots; for each, `update_step` batches of
    `batch_size` (the trajectory, in function order) and `extra_per_task` more samples
    (the meta set at training, the held-out test set at evaluation).

    Returns numpy arrays: x_traj [tasks*update_step, batch_size, in], y_traj [.., 1],
    x_extra [tasks, extra, in], y_extra [tasks, extra, 1], and the function ids and slots.
    """
    ids = rng.choice(len(family), size=tasks, replace=False)
    slots = choose_slots(rng, tasks, capacity, slot_mode)
    x_tr, y_tr = _samples(family, rng, ids, slots, update_step * batch_size, capacity)
    x_ex, y_ex = _samples(family, rng, ids, slots, extra_per_task, capacity)
    k = tasks * update_step
    return {
        "x_traj": x_tr.reshape(k, batch_size, -1), "y_traj": y_tr.reshape(k, batch_size, 1),
        "x_extra": x_ex, "y_extra": y_ex, "ids": ids, "slots": slots,
    }


def sample_iid(family, rng, *, n_functions, samples, capacity, group=None):
    """Pretraining data: function j always uses slot j % capacity and output head j // capacity,
    so every function is identifiable (the original's multi-head toy baseline, generalised).

    `group` None: `n_functions` functions drawn at random; an int g: the `capacity` functions of
    head g (ids g*capacity ...), as the 2019 `toy_baseline.py`, whose every batch was one head's group."""
    if group is None:
        ids = rng.choice(len(family), size=n_functions, replace=False)
    else:
        ids = np.arange(group * capacity, min((group + 1) * capacity, len(family)))
    x = rng.uniform(*X_RANGE, size=(n_functions, samples))
    y = family(ids[:, None], x)[..., None].astype(np.float32)
    inputs = encode((ids % capacity)[:, None], x, capacity)
    heads = np.broadcast_to((ids // capacity)[:, None], x.shape)
    return inputs.reshape(-1, capacity + 1), y.reshape(-1, 1), heads.reshape(-1)
