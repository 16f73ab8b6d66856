"""Incremental sine: the meta-training step (OML) and the i.i.d. baselines (evaluation: experiment/evaluation/sine.py)."""
import math

import torch
import torch.nn.functional as F

from datasets.sine import sample_iid, sample_trajectory
from experiment.sine_presets import SineConfig, build_model, training_functions
from model.baselines import HeadBank, set_kl_sparsity
from model.meta_learner import InnerLoopRule, MetaBatch, meta_loss
from utils.seeding import stream


class _Training:
    """What the generic trainer needs: step() -> metrics, and state to checkpoint and resume."""

    def __init__(self, cfg: SineConfig, device):
        self.cfg, self.device = cfg, device
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg).to(device)
        self.functions = training_functions(cfg)
        self.rng = stream(cfg.seed, "data")

    def _tensor(self, array):
        return torch.as_tensor(array, device=self.device)

    def training_state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_training_state(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


class OMLTraining(_Training):
    def __init__(self, cfg: SineConfig, device):
        super().__init__(cfg, device)
        self.rule = InnerLoopRule(cfg.update_lr, cfg.first_order, cfg.inner_clip)
        if cfg.inner_clip is None:
            # Long unclipped inner loops (mrcl2019: 400 steps) blow up on some trajectories.
            self.divergence_hint = "clamp the inner gradients with --inner-clip 10 (the 2020 code's), or lower --update_lr"
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.meta_lr)
        self.scheduler = (torch.optim.lr_scheduler.MultiStepLR(self.optimizer, list(cfg.lr_milestones), cfg.lr_gamma)
                          if cfg.lr_milestones else None)

    loss_fn = staticmethod(F.mse_loss)

    def batch(self) -> MetaBatch:
        """The next trajectory ([K, B, D] inputs, one batch per inner step) and its meta set."""
        cfg = self.cfg
        batch = sample_trajectory(self.functions, self.rng, tasks=cfg.tasks, update_step=cfg.update_step,
                                  batch_size=cfg.batch_size, extra_per_task=cfg.meta_batch,
                                  capacity=cfg.capacity, slot_mode=cfg.slot_mode)
        return MetaBatch(self._tensor(batch["x_traj"]), self._tensor(batch["y_traj"]),
                         self._tensor(batch["x_extra"]).flatten(0, 1), self._tensor(batch["y_extra"]).flatten(0, 1))

    def update(self, loss) -> None:
        """One Adam step of the meta-parameters (and the schedule) on `loss`."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    def step(self) -> dict:
        result = meta_loss(self.model, *self.batch(), self.loss_fn, self.rule)
        self.update(result.loss)
        return {"loss": result.loss.item(), "meta_loss_before": result.before.item()}

    def training_state(self) -> dict:
        state = super().training_state()
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def load_training_state(self, state: dict) -> None:
        super().load_training_state(state)
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])


class IIDTraining(_Training):
    """Pretraining (and SR-NN with method='srnn'): the whole network, i.i.d. over all functions."""

    def __init__(self, cfg: SineConfig, device):
        super().__init__(cfg, device)
        self.n_heads = math.ceil(cfg.n_train_functions / cfg.capacity)
        self.heads = HeadBank(self.model.pln[-1], self.n_heads).to(device)
        self.optimizer = torch.optim.Adam([*self.model.parameters(), *self.heads.parameters()], lr=cfg.iid_lr)
        self.scheduler = (torch.optim.lr_scheduler.MultiStepLR(self.optimizer, list(cfg.iid_lr_milestones), cfg.iid_lr_gamma)
                          if cfg.iid_lr_milestones else None)
        self.updates = 0

    def step(self) -> dict:
        cfg = self.cfg
        group = self.updates % self.n_heads if cfg.iid_grouped else None
        x, y, heads = sample_iid(self.functions, self.rng, n_functions=cfg.iid_functions,
                                 samples=cfg.iid_samples, capacity=cfg.capacity, group=group)
        rep = self.model.rln(self._tensor(x))
        out = self.heads(self.model.pln[:-1](rep), torch.as_tensor(heads, device=self.device))
        mse = F.mse_loss(out, self._tensor(y))
        loss = mse + cfg.srnn_weight * set_kl_sparsity(rep, cfg.srnn_beta) if cfg.method == "srnn" else mse
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.updates += 1
        return {"loss": loss.item(), "mse": mse.item()}

    def export(self):
        self.heads.copy_head_into(self.model.pln[-1])
        return self.model

    def training_state(self) -> dict:
        state = {**super().training_state(), "heads": self.heads.state_dict(), "updates": self.updates}
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def load_training_state(self, state: dict) -> None:
        super().load_training_state(state)
        self.heads.load_state_dict(state["heads"])
        self.updates = state.get("updates", 0)
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])


def make_training(cfg: SineConfig, device):
    return OMLTraining(cfg, device) if cfg.method == "oml" else IIDTraining(cfg, device)
