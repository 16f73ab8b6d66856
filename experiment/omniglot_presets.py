"""Split-Omniglot configurations.

- `mrcl2019`: the seed README's command (`--rln 6 --update_lr 0.03 --update_step 20 --steps 15000`):
  first-order, the two-layer PLN (2304 -> 1024 -> 1000), one class per trajectory with 20 one-image
  steps, meta set = 64 random images + the trajectory class's images again, per-image output-row
  reset, trajectory classes drawn from all 963.
- `oml2020`: the August-2020 code: second-order, linear PLN (2304 -> 1000), 3 classes x 5 images,
  trajectory classes 481-962, meta set = 15 random images from classes 0-480 + the 5 held-out
  images of each trajectory class, output-row reset.
- `oml2020paper`: `oml2020` without the class split (the original's `oml_omniglot_paper.py`): the
  meta set is only the held-out images of the trajectory classes, trajectory classes from all 963.
- `cpu`: a reduced network that meta-trains in at most 30 minutes on 2 CPU cores
  (choice and measured cost in the README).
"""
from dataclasses import dataclass

from experiment.config import from_dict
from model.networks import build_omniglot_net, conv_output_size
from utils import bounds
from utils.errors import UserError

N_META_TRAIN_CLASSES = 963  # the background set has 964; the original uses classes 0..962


@dataclass
class OmniglotConfig:
    preset: str = "oml2020"
    method: str = "oml"              # oml | pretraining | srnn
    # network
    image_size: int = 84
    channels: int = 256
    strides: tuple = (2, 1, 2, 1, 2, 2)
    pln_hidden: int = 0              # 0: linear PLN (2020); 1024: the 2019 two-layer PLN
    n_outputs: int = 1000
    # meta-training data
    n_classes: int = N_META_TRAIN_CLASSES
    tasks: int = 3                   # classes per trajectory
    update_step: int = 5             # one-image inner steps per class
    held_out: int = 5                # held-out images per trajectory class in the meta set (0: none)
    meta_random: int = 15            # random images in the meta set
    meta_repeats_trajectory: bool = False  # 2019: the trajectory's images again in the meta set
    class_split: int | None = 481    # trajectory classes >= split, random images < split; None: all
    reset: bool = True               # re-initialise the output row of each class seen
    # optimisation
    update_lr: float = 0.03
    meta_lr: float = 1e-4
    first_order: bool = False
    steps: int = 20_000
    seed: int = 90
    # pretraining / SR-NN (i.i.d. on the same classes, same network)
    iid_batch: int = 256
    iid_lr: float = 1e-4
    iid_epochs: int = 45             # passes over n_classes x 20 images (sets --steps for these methods)
    srnn_beta: float = 0.1
    srnn_weight: float = 1.0

    def validate(self):
        if self.method not in ("oml", "pretraining", "srnn"):
            raise UserError(f"unknown --method {self.method!r} (choose oml, pretraining or srnn)")
        if self.n_outputs < self.n_classes:
            raise UserError(f"the network has {self.n_outputs} outputs but {self.n_classes} meta-training classes")
        if not 1 <= self.n_classes <= N_META_TRAIN_CLASSES:
            raise UserError(f"--n-classes must be in 1..{N_META_TRAIN_CLASSES}, got {self.n_classes}")
        bounds.at_least("--held-out", self.held_out, 0)
        bounds.at_least("--pln-hidden", self.pln_hidden, 0)
        random_images = (self.class_split or self.n_classes) * 20  # drawn without replacement
        bounds.at_least("--meta-random", self.meta_random, 0, random_images,
                        f"the random part of the meta set is drawn from {random_images} images")
        if self.update_step + self.held_out > 20:
            raise UserError(f"--update_step {self.update_step} plus {self.held_out} held-out images exceed a class's 20 images")
        if self.class_split is not None and not 0 < self.class_split < self.n_classes:
            raise UserError(f"class split {self.class_split} must lie inside 1..{self.n_classes - 1}")
        if self.method == "oml" and not (self.held_out or self.meta_random or self.meta_repeats_trajectory):
            raise UserError("the meta set is empty: give --held-out or --meta-random a positive value")
        if len(self.strides) < 1 or any(s < 1 for s in self.strides):
            raise UserError(f"--strides must be positive integers, got {list(self.strides)}")
        if conv_output_size(self.image_size, self.strides) < 1:
            raise UserError(f"--image-size {self.image_size} is too small for {len(self.strides)} 3x3 convolutions "
                            f"with strides {list(self.strides)}")
        pool = self.n_classes - (self.class_split or 0)
        if self.tasks > pool:
            raise UserError(f"--tasks {self.tasks} exceeds the {pool} trajectory classes")
        for name in ("steps", "update_step", "tasks", "channels", "image_size", "iid_batch", "iid_epochs"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("update_lr", "meta_lr", "iid_lr"):
            bounds.positive_finite(f"--{name}", getattr(self, name))  # inf and nan too: they only diverge
        bounds.positive_finite("--srnn-beta", self.srnn_beta)
        bounds.seed(self.seed)


PAPER_NETWORK = dict(image_size=84, channels=256, strides=(2, 1, 2, 1, 2, 2))

OMNIGLOT_PRESETS = {
    "mrcl2019": dict(**PAPER_NETWORK, pln_hidden=1024, tasks=1, update_step=20, held_out=0, meta_random=64,
                     meta_repeats_trajectory=True, class_split=None, reset=True, update_lr=0.03,
                     meta_lr=1e-4, first_order=True, steps=15_000, seed=10000, iid_epochs=30),
    "oml2020": dict(**PAPER_NETWORK, pln_hidden=0, tasks=3, update_step=5, held_out=5, meta_random=15,
                    meta_repeats_trajectory=False, class_split=481, reset=True, update_lr=0.03,
                    meta_lr=1e-4, first_order=False, steps=20_000, seed=90),
}
OMNIGLOT_PRESETS["oml2020paper"] = {**OMNIGLOT_PRESETS["oml2020"], "meta_random": 0, "class_split": None}
# Reduced network for a 2-core CPU, chosen by measurement (README, "The cpu preset"): the oml2020
# trajectory and meta set, second order, on 28x28 images through four 3x3 convolutions of 64
# channels (strides 2,1,2,1 -> 64x3x3 = 576 features), with 10x larger meta and i.i.d. steps.
OMNIGLOT_PRESETS["cpu"] = {**OMNIGLOT_PRESETS["oml2020"], "image_size": 28, "channels": 64,
                           "strides": (2, 1, 2, 1), "steps": 10_000, "update_lr": 0.03, "meta_lr": 1e-3,
                           "iid_epochs": 25, "iid_lr": 1e-3,
                           # chosen on validation among 0.05 / 0.1 / 0.2 (docs/baselines.md)
                           "srnn_beta": 0.2}


def build_model(cfg: OmniglotConfig):
    """The untrained network a config describes (the one place its sizes are spelled out)."""
    return build_omniglot_net(cfg.channels, cfg.image_size, cfg.strides, cfg.pln_hidden, cfg.n_outputs)


def config_from_checkpoint(payload: dict) -> OmniglotConfig:
    benchmark = payload.get("benchmark")
    if benchmark != "omniglot":
        where = payload.get("path", "the checkpoint")
        raise UserError(f"'{where}' is a {benchmark} checkpoint, but this needs an omniglot one")
    return from_dict(OmniglotConfig, payload["config"])
