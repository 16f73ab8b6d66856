"""Incremental-sine configurations.

- `mrcl2019`: the seed README's command (`--update_step 40 --meta_lr 0.0001 --update_lr 0.003
  --tasks 10 --capacity 10 --width 300 --rln 6`): the 9-layer network, trajectory slot = position,
  40 batches of 32 per function, meta set 32 per function, first-order, MultiStepLR
  [1500, 2500, 3500] x 0.3, 20,000 steps.
- `oml2020`: the July-2020 code defaults: 50 random slots, width 400, 5 RLN layers and a linear
  PLN, 5 batches of 10 per function plus 10 for the meta set, second-order, inner gradients
  clamped to +-10, 300,000 steps.
- `quick`: the quick start, chosen by measurement to show the effect within minutes on 2 CPU
  cores (see docs/protocols.md, "The quick preset").
"""
import math
from dataclasses import dataclass

from datasets.sine import SineFamily
from experiment.config import check_counts, check_rates, from_dict, setting
from model.networks import build_sine_net, sine_layer_sizes
from utils import bounds
from utils.errors import UserError
from utils.seeding import stream


@dataclass
class SineConfig:
    """Every setting of a sine run, each with its flags (experiment.config.setting); those with
    no flags are set by the presets only."""
    preset: str = setting("oml2020", "--preset",
                          help="named configuration: mrcl2019, oml2020 or quick (default: quick; mrcl2019 for the "
                               "seed README's command); flags override it")
    method: str = setting("oml", "--method", choices=["oml", "pretraining", "srnn"],
                          help="OML, or a baseline: pretraining (i.i.d.) or srnn (i.i.d. + sparsity)")
    arch: str = setting("oml2020", "--arch", choices=["mrcl2019", "oml2020"],
                        help="layer layout (model.networks.sine_layer_sizes)")
    width: int = setting(400, "--width", help="units per hidden layer")
    capacity: int = setting(50, "--capacity", help="one-hot task slots; the input has capacity + 1 values")
    rln: int = setting(5, "--rln", help="Linear layers in the RLN")
    tasks: int = setting(10, "--tasks", help="functions per trajectory")
    update_step: int = setting(5, "--update_step", "--update-step", help="inner batches per function")
    batch_size: int = setting(10, "--batch-size", "--batch_size", help="samples per inner batch")
    meta_batch: int = setting(10, "--meta-batch", help="meta-set samples per function")
    slot_mode: str = setting("random", "--slot-mode", choices=["random", "position"],
                             help="a trajectory function's one-hot slot: random, or its position in the trajectory")
    update_lr: float = setting(0.003, "--update_lr", "--update-lr", help="inner SGD step")
    meta_lr: float = setting(1e-4, "--meta_lr", "--meta-lr", help="Adam step of the outer loop")
    lr_milestones: tuple = setting((), help="MultiStepLR milestones of the meta-optimiser, in steps")
    lr_gamma: float = setting(0.3, help="MultiStepLR factor of the meta-optimiser")
    first_order: bool = setting(False, "--first-order", off_flags=("--second-order",),
                                help="detach the inner gradients (the pre-2020 meta-gradient)",
                                off_help="differentiate through the inner loop (the 2020 meta-gradient)")
    inner_clip: float | None = setting(10.0, "--inner-clip", none_word="0",
                                       help="element-wise clamp of the inner gradients; 0 turns clipping off")
    steps: int = setting(300_000, "--steps", "--epoch", "--epochs_meta",
                         help="meta-training steps (the original's --epoch is accepted)")
    n_train_functions: int = setting(400, help="the pool of meta-training functions")
    n_eval_functions: int = setting(500, help="the pool of evaluation functions")
    seed: int = setting(90, "--seed", help="the one seed of the torch RNG and every numpy stream")
    iid_functions: int = setting(10, help="pretraining / SR-NN: functions per batch (random ones)")
    iid_samples: int = setting(10, help="pretraining / SR-NN: samples per function per batch")
    iid_grouped: bool = setting(False, help="pretraining / SR-NN: each batch is one output head's `capacity` "
                                            "functions, heads in turn (2019)")
    iid_lr: float = setting(1e-4, "--iid-lr", "--iid_lr", help="Adam step of pretraining / SR-NN")
    iid_lr_milestones: tuple = setting((), help="MultiStepLR milestones of pretraining / SR-NN, in updates")
    iid_lr_gamma: float = setting(0.2, help="MultiStepLR factor of pretraining / SR-NN")
    srnn_beta: float = setting(0.05, "--srnn-beta", help="SR-NN: target mean activity of a representation unit")
    srnn_weight: float = setting(1.0, help="SR-NN: weight of the sparsity penalty")
    eval_runs: int = setting(50, "--eval-runs", help="runs of the evaluation after training (0: no evaluation)")
    eval_test_samples: int = setting(1000, "--eval-test-samples", help="held-out samples per function in that evaluation")

    def validate(self):
        if self.method not in ("oml", "pretraining", "srnn"):
            raise UserError(f"unknown --method {self.method!r} (choose oml, pretraining or srnn)")
        if self.slot_mode not in ("random", "position"):
            raise UserError(f"unknown slot mode {self.slot_mode!r}")
        if self.tasks > self.capacity:
            raise UserError(f"--tasks {self.tasks} needs at least as many one-hot slots, but --capacity is {self.capacity}")
        if self.tasks > self.n_eval_functions or self.tasks > self.n_train_functions:
            raise UserError(f"--tasks {self.tasks} is more than the function pools hold")
        check_counts(self, ("steps", "update_step", "batch_size", "meta_batch", "width", "tasks", "capacity"))
        check_rates(self, ("update_lr", "meta_lr", "iid_lr"))
        if self.inner_clip is not None and not (math.isfinite(self.inner_clip) and self.inner_clip > 0):
            raise UserError(f"--inner-clip must be a positive finite number (or 0 to turn clipping off), "
                            f"got {self.inner_clip}")
        bounds.positive_finite("--srnn-beta", self.srnn_beta)
        bounds.seed(self.seed)
        n_layers = len(sine_layer_sizes(self.arch, self.width, self.capacity)) - 1
        bounds.at_least("--rln", self.rln, 1, n_layers - 1, f"the {self.arch} network has {n_layers} Linear layers "
                        "and each side of the split needs one")
        bounds.at_least("--eval-runs", self.eval_runs, 0)
        bounds.at_least("--eval-test-samples", self.eval_test_samples)


SINE_PRESETS = {
    "mrcl2019": dict(arch="mrcl2019", width=300, capacity=10, rln=6, update_step=40, batch_size=32,
                     meta_batch=32, slot_mode="position", update_lr=0.003, meta_lr=1e-4,
                     lr_milestones=(1500, 2500, 3500), lr_gamma=0.3, first_order=True, inner_clip=None,
                     steps=20_000, seed=1000,
                     # the 2019 toy_baseline.py: one head's 10 functions x 32 samples per update,
                     # Adam 1e-4, MultiStepLR [5000, 8000] x 0.2 (counted in updates)
                     iid_grouped=True, iid_samples=32, iid_lr=1e-4, iid_lr_milestones=(5000, 8000), iid_lr_gamma=0.2,
                     srnn_beta=0.1),  # November's beta, chosen on search runs from the test pool; not redone
    "oml2020": dict(arch="oml2020", width=400, capacity=50, rln=5, update_step=5, batch_size=10,
                    meta_batch=10, slot_mode="random", update_lr=0.003, meta_lr=1e-4,
                    first_order=False, inner_clip=10.0, steps=300_000, seed=90, iid_lr=1e-4,
                    # SR-NN's beta chosen on the meta-validation pool, here (20,000 updates) and at quick
                    srnn_beta=0.8),
}
# The quick start: the oml2020 network and update rule with a ~3x larger inner and meta learning
# rate and 3,000 steps, so the effect shows within minutes on 2 cores. Chosen from six 3,000-step
# probes on training loss and a 20-run evaluation (commit da348e1; the probes' numbers were not kept).
# What it reaches: docs/results.md; the choice: docs/protocols.md, "The quick preset".
SINE_PRESETS["quick"] = {**SINE_PRESETS["oml2020"], "update_lr": 0.01, "meta_lr": 3e-4, "iid_lr": 3e-4, "steps": 3000}


def build_model(cfg: SineConfig):
    """The untrained network a config describes (the one place its sizes are spelled out)."""
    return build_sine_net(cfg.arch, cfg.width, cfg.capacity, cfg.rln)


def training_functions(cfg: SineConfig) -> SineFamily:
    """The meta-training functions: drawn from the config's seed, the same in every script."""
    return SineFamily.draw(cfg.n_train_functions, stream(cfg.seed, "functions"))


def config_from_checkpoint(payload: dict) -> SineConfig:
    return from_dict(SineConfig, payload["config"])
