"""Samplers for Omniglot meta-training: index arrays into the in-memory uint8 image array.

No DataLoaders and no worker processes (the original built one single-class DataLoader per
trajectory class at every meta-step and decoded the PNGs again each time). Every sampler draws
from a `numpy.random.Generator`, so a seed fixes the whole sequence and a checkpoint of the
Generator's state resumes it exactly.

An image is addressed by (class, drawer) with drawer 0..19; the images are then gathered and
converted to float on the training device, once per step (`ImageBank.gather`).

The two trajectory layouts (the original's 2019 and July-2020 `oml_omniglot.py`):

* 2020 (`held_out > 0`): for each of `tasks` classes, one shuffled pass over its 20 images; the
  first `update_step` images are the inner steps, the next `held_out` go to the meta set.
* 2019 (`meta_repeats_trajectory=True`): the inner steps as above, then a *second* shuffled pass
  over each trajectory class gives `update_step` images to the meta set (with 20 steps of one
  class these are the trajectory's own 20 images, reshuffled).

plus `meta_random` images drawn without replacement from classes < `class_split` (or from all
classes when there is no split), as the first batch of a shuffled loader over those images.

MAML-Rep's few-shot task (the original's `sample_few_shot_training_data`, model/maml_rep.py):
`ways` classes from all meta-training classes; for each, one shuffled pass over its 20 images,
the first `shots` are support and the next `query` query images; labels are 0..ways-1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from datasets.omniglot import N_DRAWERS


@dataclass
class OMLSample:
    """Index arrays of one meta-step. Labels are class ids (the original's targets)."""
    traj_classes: np.ndarray   # [K] class of each inner step, in trajectory order
    traj_drawers: np.ndarray   # [K]
    meta_classes: np.ndarray   # [M] meta set: random images first, then the trajectory classes' part
    meta_drawers: np.ndarray   # [M]
    classes: np.ndarray        # [tasks] the trajectory classes, in the order they are learned


def trajectory_pool(n_classes: int, class_split: int | None) -> np.ndarray:
    """Classes a trajectory is drawn from: those >= class_split (2020: 481..962), else all."""
    return np.arange(class_split or 0, n_classes)


def random_pool(n_classes: int, class_split: int | None) -> np.ndarray:
    """Classes the random part of the meta set comes from: those < class_split, else all."""
    return np.arange(class_split if class_split else n_classes)


def sample_oml(rng: np.random.Generator, *, n_classes: int, tasks: int, update_step: int, held_out: int,
               meta_random: int, class_split: int | None, meta_repeats_trajectory: bool,
               images_per_class: int = N_DRAWERS) -> OMLSample:
    pool = trajectory_pool(n_classes, class_split)
    classes = rng.choice(pool, size=tasks, replace=False)
    traj_c, traj_d, meta_c, meta_d = [], [], [], []
    for c in classes:
        order = rng.permutation(images_per_class)
        traj_d.append(order[:update_step])
        traj_c.append(np.full(update_step, c))
        if held_out:
            meta_d.append(order[update_step:update_step + held_out])
            meta_c.append(np.full(held_out, c))
    if meta_repeats_trajectory:
        for c in classes:
            meta_d.append(rng.permutation(images_per_class)[:update_step])
            meta_c.append(np.full(update_step, c))
    rand_c = rand_d = np.zeros(0, dtype=np.int64)
    if meta_random:
        rand_pool = random_pool(n_classes, class_split)
        flat = rng.choice(len(rand_pool) * images_per_class, size=meta_random, replace=False)
        rand_c, rand_d = rand_pool[flat // images_per_class], flat % images_per_class
    return OMLSample(
        traj_classes=np.concatenate(traj_c).astype(np.int64),
        traj_drawers=np.concatenate(traj_d).astype(np.int64),
        meta_classes=np.concatenate([rand_c, *meta_c]).astype(np.int64),
        meta_drawers=np.concatenate([rand_d, *meta_d]).astype(np.int64),
        classes=classes.astype(np.int64),
    )


@dataclass
class FewShotSample:
    """Index arrays of one MAML-Rep task. Class `classes[i]` is labelled i, class by class."""
    classes: np.ndarray          # [ways] in the order drawn
    support_classes: np.ndarray  # [ways * shots]
    support_drawers: np.ndarray
    support_labels: np.ndarray   # 0..ways-1
    query_classes: np.ndarray    # [ways * query]
    query_drawers: np.ndarray
    query_labels: np.ndarray


def sample_few_shot(rng: np.random.Generator, *, n_classes: int, ways: int, shots: int, query: int,
                    images_per_class: int = N_DRAWERS) -> FewShotSample:
    classes = rng.choice(n_classes, size=ways, replace=False)
    orders = [rng.permutation(images_per_class) for _ in classes]
    support_d = np.concatenate([order[:shots] for order in orders])
    query_d = np.concatenate([order[shots:shots + query] for order in orders])
    labels = np.arange(ways)
    return FewShotSample(
        classes=classes.astype(np.int64),
        support_classes=np.repeat(classes, shots).astype(np.int64),
        support_drawers=support_d.astype(np.int64),
        support_labels=np.repeat(labels, shots).astype(np.int64),
        query_classes=np.repeat(classes, query).astype(np.int64),
        query_drawers=query_d.astype(np.int64),
        query_labels=np.repeat(labels, query).astype(np.int64),
    )


def iid_batch(seed_sequence_entropy, step: int, *, n_classes: int, batch_size: int,
              images_per_class: int = N_DRAWERS) -> tuple[np.ndarray, np.ndarray]:
    """Batch `step` (0-based) of i.i.d. training: epochs of a fresh permutation of all
    n_classes x 20 images, cut into batches (the last one of an epoch may be smaller).

    Stateless: the permutation of epoch e comes from SeedSequence([*entropy, e]), so a resumed
    run draws exactly the batches the uninterrupted one would have."""
    total = n_classes * images_per_class
    per_epoch = -(-total // batch_size)
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng(np.random.SeedSequence([*seed_sequence_entropy, epoch])).permutation(total)
    flat = order[position * batch_size:(position + 1) * batch_size]
    return (flat // images_per_class).astype(np.int64), (flat % images_per_class).astype(np.int64)


def steps_per_epoch(n_classes: int, batch_size: int, images_per_class: int = N_DRAWERS) -> int:
    return -(-n_classes * images_per_class // batch_size)


class ImageBank:
    """The meta-training images as one uint8 tensor on the training device.

    gather(classes, drawers) -> float [N, 1, H, W] in [0, 1]: one index and one conversion per step
    (the same values as datasets.omniglot.to_float, i.e. the original's ToTensor: background 1)."""

    def __init__(self, images: np.ndarray, device):
        self.images = torch.from_numpy(np.ascontiguousarray(images)).to(device)
        self.device = self.images.device

    def gather(self, classes: np.ndarray, drawers: np.ndarray) -> torch.Tensor:
        c = torch.from_numpy(np.asarray(classes, dtype=np.int64)).to(self.device)
        d = torch.from_numpy(np.asarray(drawers, dtype=np.int64)).to(self.device)
        return self.images[c, d].unsqueeze(1).to(torch.float32).div_(255.0)
