"""Split-Omniglot: the OML meta-training step, the i.i.d. baselines (pretraining, SR-NN) and the
few-shot meta-learning baseline (MAML-Rep).

Meta-training uses the background split's classes 0..n_classes-1 (963: the original never uses
the 964th) with all 20 images of each class, as the original's `all=True`. With
`hold_out_selection` the meta-validation classes (datasets/omniglot_selection.py) are removed
before anything else sees the array: the kept classes are renumbered 0..865 and the class split
becomes the number of kept classes below it (481 -> 417), so every sampler runs unchanged on
them and no index can reach a selection image.
"""

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from datasets.omniglot import load_omniglot
from datasets.omniglot_sampler import ImageBank, iid_batch, sample_few_shot, sample_oml, steps_per_epoch
from datasets.omniglot_selection import kept_classes
from experiment.omniglot_presets import OmniglotConfig, build_model
from model.baselines import set_kl_sparsity
from model.maml_rep import clamp_gradients, few_shot_loss
from model.meta_learner import InnerLoopRule, MetaBatch, meta_loss
from model.networks import kaiming_normal
from utils.errors import UserError
from utils.seeding import STREAM_TAGS, stream


def load_meta_training_images(cfg: OmniglotConfig, path, *, cache_dir=None, download=False, progress=True,
                              standard=False) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [n, 20, H, W], the background class id of each of the n rows): classes 0..n_classes-1,
    all 20 drawers, less the selection classes when `cfg.hold_out_selection` (n = 866 of 963).
    `standard`: refuse a tree whose class counts are not the official ones (datasets.omniglot)."""
    background = load_omniglot(path, "background", cfg.image_size, cache_dir=cache_dir, download=download,
                               progress=progress, standard=standard)
    if background.n_classes < cfg.n_classes:
        raise UserError(f"the background split at '{path}' has {background.n_classes} classes, "
                        f"fewer than the {cfg.n_classes} meta-training classes of the config")
    if not cfg.hold_out_selection:
        return background.images[: cfg.n_classes], np.arange(cfg.n_classes)  # a view: no copy of the array
    classes = kept_classes(background.class_names, cfg.n_classes, standard)
    return background.images[classes], classes


def iid_default_steps(cfg: OmniglotConfig) -> int:
    # n_classes even with the selection classes held out: a selection run is as long, in steps,
    # as the run whose settings it chooses.
    return cfg.iid_epochs * steps_per_epoch(cfg.n_classes, cfg.iid_batch)


class _CrossEntropy:
    """F.cross_entropy that also keeps the logits of its one no-grad call inside `meta_loss` (the
    meta set before adaptation), so the accuracy before the inner loop costs no extra forward."""

    computes = staticmethod(F.cross_entropy)  # so the inner loop may take its closed form (model/linear_inner_loop.py)

    def __init__(self):
        self.unadapted = None

    def __call__(self, logits, targets):
        if not torch.is_grad_enabled():
            self.unadapted = logits
        return F.cross_entropy(logits, targets)


def sampling_layout(cfg: OmniglotConfig, classes: np.ndarray) -> tuple[int, int | None]:
    """(classes sampled from, class split) in row numbers of the image array whose rows are the
    background classes `classes`: the config's split becomes the count of rows below it."""
    n = len(classes)
    split = None if cfg.class_split is None else int(np.sum(np.asarray(classes) < cfg.class_split))
    if cfg.hold_out_selection:  # the config's own checks counted the classes before the hold-out
        what = f"with the selection classes held out, {n} of the {cfg.n_classes} classes are left"
        if split is not None and not 0 < split < n:
            raise UserError(f"{what} and {split} of them lie below --class-split {cfg.class_split}: "
                            "both sides of the split need classes")
        pool = n - (split or 0)
        if cfg.method in ("oml", "anml") and cfg.tasks > pool:
            raise UserError(f"{what}: --tasks {cfg.tasks} exceeds the {pool} trajectory classes")
        if cfg.method in ("oml", "anml") and cfg.meta_random > (split or n) * 20:
            raise UserError(f"{what}: --meta-random {cfg.meta_random} exceeds their {(split or n) * 20} images")
        if cfg.method == "maml-rep" and cfg.ways > n:
            raise UserError(f"{what}: --ways {cfg.ways} exceeds them")
    return n, split


class _Training:
    """What the generic trainer needs: step() -> metrics, and state to checkpoint and resume.
    `classes`: the background class id of each row of `images` (default 0..n_classes-1); a
    config that holds the selection classes out must say which rows it was given."""

    def __init__(self, cfg: OmniglotConfig, device, images: np.ndarray, classes=None):
        if classes is None:
            if cfg.hold_out_selection:
                raise ValueError("hold_out_selection needs the class ids of the image rows "
                                 "(load_meta_training_images gives both)")
            classes = np.arange(cfg.n_classes)
        self.n_classes, self.class_split = sampling_layout(cfg, classes)
        if images.shape[0] != self.n_classes or images.shape[-1] != cfg.image_size:
            raise UserError(f"images of shape {images.shape} do not match the config "
                            f"({self.n_classes} classes of {cfg.image_size}px)")
        self.cfg, self.device = cfg, device
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg).to(device)
        self.bank = ImageBank(images, device)
        self.rng = stream(cfg.seed, "data")

    def _labels(self, classes):
        return torch.as_tensor(classes, dtype=torch.int64, device=self.device)

    def training_state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_training_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


class OMLTraining(_Training):
    def __init__(self, cfg: OmniglotConfig, device, images: np.ndarray, classes=None):
        super().__init__(cfg, device, images, classes)
        self.rule = InnerLoopRule(cfg.update_lr, cfg.first_order)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.meta_lr)

    def sample(self):
        cfg = self.cfg
        return sample_oml(self.rng, n_classes=self.n_classes, tasks=cfg.tasks, update_step=cfg.update_step,
                          held_out=cfg.held_out, meta_random=cfg.meta_random, class_split=self.class_split,
                          meta_repeats_trajectory=cfg.meta_repeats_trajectory)

    @torch.no_grad()
    def reset_rows(self, classes) -> None:
        """Re-initialise the output row of each trajectory class on the meta-parameters
        (Kaiming-normal over a 1 x fan_in row; the bias is kept), as the original does.

        The original re-draws the row for every image of the class it samples; all draws happen
        before the inner loop, so only the last survives: one draw per class is the same thing.
        The draw comes from the numpy stream, so it is the same on every device and resumes exactly."""
        last = self.model.pln[-1]
        rows = kaiming_normal((len(classes), last.in_features), self.rng)
        last.weight[self._labels(classes)] = rows.to(self.device)

    loss_fn = staticmethod(F.cross_entropy)

    def batch(self) -> MetaBatch:
        """The next trajectory (one image per inner step: [K, 1, 1, H, W]) and its meta set, after
        re-initialising the trajectory classes' output rows (`reset`)."""
        s = self.sample()
        if self.cfg.reset:
            self.reset_rows(s.classes)
        k = len(s.traj_classes)
        x = self.bank.gather(np.concatenate([s.traj_classes, s.meta_classes]),
                             np.concatenate([s.traj_drawers, s.meta_drawers]))
        return MetaBatch(x[:k].unsqueeze(1), self._labels(s.traj_classes).reshape(k, 1), x[k:],
                         self._labels(s.meta_classes))

    def update(self, loss) -> None:
        """One Adam step of the meta-parameters on `loss`."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def step(self) -> dict:
        cfg = self.cfg
        batch = self.batch()
        y_meta = batch.y_meta
        loss_fn = _CrossEntropy()
        loss, before, outputs = meta_loss(self.model, *batch, loss_fn, self.rule)
        self.update(loss)
        correct_after = (outputs.argmax(1) == y_meta).float()
        metrics = {"loss": loss.item(), "meta_loss_before": before.item(),
                   "accuracy_before": (loss_fn.unadapted.argmax(1) == y_meta).float().mean().item(),
                   "accuracy_after": correct_after.mean().item()}
        n_random = cfg.meta_random
        if n_random and len(y_meta) > n_random:  # both parts present: learning vs remembering
            metrics["accuracy_after_trajectory_classes"] = correct_after[n_random:].mean().item()
            metrics["accuracy_after_random"] = correct_after[:n_random].mean().item()
        return metrics


# Consecutive i.i.d. steps with every representation unit at 0 on every image of the batch after
# which a run is stopped: a ReLU that outputs 0 passes no gradient, so no unit can come back, and the
# rest of the run would only fit the output bias (a cpu_wide pretraining seed died so by step 200).
DEAD_STEPS = 200


class IIDTraining(_Training):
    """Pretraining (and SR-NN with method='srnn'): the whole network, i.i.d. cross-entropy over
    the same classes and images, Adam(iid_lr), batches of iid_batch, as the original's
    pretraining and SR-NN baselines (khurramjaved96/mrcl: baseline_srnn.py, srnn_omniglot.py)."""

    def __init__(self, cfg: OmniglotConfig, device, images: np.ndarray, classes=None):
        super().__init__(cfg, device, images, classes)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.iid_lr)
        self.steps_done = 0
        self.dead_steps = 0  # consecutive steps with no active representation unit (DEAD_STEPS)
        self.entropy = (cfg.seed, STREAM_TAGS["data"], 1)  # batches: epochs of permutations, see iid_batch

    def step(self) -> dict:
        cfg = self.cfg
        classes, drawers = iid_batch(self.entropy, self.steps_done, n_classes=self.n_classes, batch_size=cfg.iid_batch)
        self.steps_done += 1
        x, y = self.bank.gather(classes, drawers), self._labels(classes)
        rep = self.model.rln(x)
        logits = self.model.pln(rep)
        ce = F.cross_entropy(logits, y)
        metrics = {"cross_entropy": ce.item(), "accuracy": (logits.argmax(1) == y).float().mean().item()}
        loss = ce
        if cfg.method == "srnn":
            sparsity = set_kl_sparsity(rep, cfg.srnn_beta)
            loss = ce + cfg.srnn_weight * sparsity
            metrics["sparsity_penalty"] = sparsity.item()
        with torch.no_grad():
            metrics["active_fraction"] = (rep > 0).float().mean().item()  # instance sparsity
        self.dead_steps = self.dead_steps + 1 if metrics["active_fraction"] == 0 else 0
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item(), **metrics}

    def stuck(self) -> str | None:
        if self.dead_steps < DEAD_STEPS:
            return None
        return (f"every representation unit has output 0 on every image for {self.dead_steps} steps (dead ReLUs pass "
                "no gradient, so the RLN cannot learn again); start again with another --seed or a smaller --iid-lr")

    def training_state(self) -> dict:
        return {**super().training_state(), "steps_done": self.steps_done, "dead_steps": self.dead_steps}

    def load_training_state(self, state: dict) -> None:
        super().load_training_state(state)
        self.steps_done = int(state["steps_done"])
        self.dead_steps = int(state.get("dead_steps", 0))  # checkpoints from before the guard have none


class FewShotBatch(NamedTuple):
    """One MAML-Rep task: the support set (every inner step's batch) and the query set, labels 0..ways-1."""
    x_support: torch.Tensor  # [ways * shots, 1, H, W]
    y_support: torch.Tensor
    x_query: torch.Tensor    # [ways * query, 1, H, W]
    y_query: torch.Tensor


class MAMLRepTraining(_Training):
    """MAML-Rep (model/maml_rep.py): few-shot tasks over all n_classes classes (the original's
    few-shot code ignores the class split), batch inner steps of the PLN, Adam(maml_meta_lr) on
    every parameter with the meta-gradient clamped to +-maml_clip. No output-row reset."""

    divergence_hint = "lower --maml-meta-lr or --maml-update-lr"

    def __init__(self, cfg: OmniglotConfig, device, images: np.ndarray, classes=None):
        super().__init__(cfg, device, images, classes)
        self.rule = InnerLoopRule(cfg.maml_update_lr, cfg.first_order)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.maml_meta_lr)

    def batch(self) -> FewShotBatch:
        cfg = self.cfg
        s = sample_few_shot(self.rng, n_classes=self.n_classes, ways=cfg.ways, shots=cfg.shots, query=cfg.query)
        b = len(s.support_classes)
        x = self.bank.gather(np.concatenate([s.support_classes, s.query_classes]),
                             np.concatenate([s.support_drawers, s.query_drawers]))
        return FewShotBatch(x[:b], self._labels(s.support_labels), x[b:], self._labels(s.query_labels))

    def step(self) -> dict:
        cfg = self.cfg
        batch = self.batch()
        loss_fn = _CrossEntropy()
        loss, before, outputs = few_shot_loss(self.model, *batch, loss_fn, self.rule, cfg.inner_steps)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clamp_gradients(self.model.parameters(), cfg.maml_clip)
        self.optimizer.step()
        y = batch.y_query
        return {"loss": loss.item(), "meta_loss_before": before.item(),
                "accuracy_before": (loss_fn.unadapted.argmax(1) == y).float().mean().item(),
                "accuracy_after": (outputs.argmax(1) == y).float().mean().item()}


def make_training(cfg: OmniglotConfig, device, images: np.ndarray, classes=None):
    if cfg.method == "anml":  # imported here: ANML's task builds on OMLTraining, defined above
        from experiment.training.anml import ANMLTraining
        return ANMLTraining(cfg, device, images, classes)
    kinds = {"oml": OMLTraining, "maml-rep": MAMLRepTraining}
    return kinds.get(cfg.method, IIDTraining)(cfg, device, images, classes)

