"""Incremental sine: the meta-training step (OML), the i.i.d. baselines, and the evaluation protocol."""
import math

import numpy as np
import torch
import torch.nn.functional as F

from datasets.sine import SineFamily, sample_iid, sample_trajectory
from model import online
from model.baselines import HeadBank, set_kl_sparsity
from model.config import from_dict
from model.meta_learner import InnerLoopRule, meta_loss
from model.networks import build_sine_net
from model.sine_presets import SineConfig
from utils.errors import UserError
from utils.seeding import run_streams, stream
from utils.stats import bootstrap_ci


def build_model(cfg: SineConfig):
    return build_sine_net(cfg.arch, cfg.width, cfg.capacity, cfg.rln)


def training_functions(cfg: SineConfig) -> SineFamily:
    return SineFamily.draw(cfg.n_train_functions, stream(cfg.seed, "functions"))


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

    def step(self) -> dict:
        cfg = self.cfg
        batch = sample_trajectory(self.functions, self.rng, tasks=cfg.tasks, update_step=cfg.update_step,
                                  batch_size=cfg.batch_size, extra_per_task=cfg.meta_batch,
                                  capacity=cfg.capacity, slot_mode=cfg.slot_mode)
        x_meta = self._tensor(batch["x_extra"]).flatten(0, 1)
        y_meta = self._tensor(batch["y_extra"]).flatten(0, 1)
        loss, before, _ = meta_loss(self.model, self._tensor(batch["x_traj"]), self._tensor(batch["y_traj"]),
                                    x_meta, y_meta, F.mse_loss, self.rule)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return {"loss": loss.item(), "meta_loss_before": before.item()}

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
        self.heads = HeadBank(self.model.pln[-1], math.ceil(cfg.n_train_functions / cfg.capacity)).to(device)
        self.optimizer = torch.optim.Adam([*self.model.parameters(), *self.heads.parameters()], lr=cfg.meta_lr)

    def step(self) -> dict:
        cfg = self.cfg
        x, y, heads = sample_iid(self.functions, self.rng, n_functions=cfg.iid_functions,
                                 samples=cfg.iid_samples, capacity=cfg.capacity)
        rep = self.model.rln(self._tensor(x))
        out = self.heads(self.model.pln[:-1](rep), torch.as_tensor(heads, device=self.device))
        mse = F.mse_loss(out, self._tensor(y))
        loss = mse + cfg.srnn_weight * set_kl_sparsity(rep, cfg.srnn_beta) if cfg.method == "srnn" else mse
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item(), "mse": mse.item()}

    def export(self):
        self.heads.copy_head_into(self.model.pln[-1])
        return self.model

    def training_state(self) -> dict:
        return {**super().training_state(), "heads": self.heads.state_dict()}

    def load_training_state(self, state: dict) -> None:
        super().load_training_state(state)
        self.heads.load_state_dict(state["heads"])


def make_training(cfg: SineConfig, device):
    return OMLTraining(cfg, device) if cfg.method == "oml" else IIDTraining(cfg, device)


def config_from_checkpoint(payload: dict) -> SineConfig:
    return from_dict(SineConfig, payload["config"])


# --- evaluation --------------------------------------------------------------------------------

EVAL_SEED = 103450  # the original evaluate_regression.py's seed


def headline(result) -> str:
    final = result["final_mse"]
    return (f"{result['label']}: MSE after {len(result['curve']['mean'])} functions "
            f"{final['mean']:.3f} (95% CI {final['ci_low']:.3f}-{final['ci_high']:.3f}, {result['protocol']['runs']} runs)")

def _run_data(functions, rngs, cfg, test_samples, device):
    runs = [sample_trajectory(functions, rng, tasks=cfg.tasks, update_step=cfg.update_step,
                              batch_size=cfg.batch_size, extra_per_task=test_samples,
                              capacity=cfg.capacity, slot_mode=cfg.slot_mode) for rng in rngs]
    stack = lambda key: torch.as_tensor(np.stack([r[key] for r in runs]), device=device)
    return stack("x_traj"), stack("y_traj"), stack("x_extra"), stack("y_extra")


def _features(rln, x):
    with torch.no_grad():
        flat = x.reshape(-1, x.shape[-1])
        return torch.cat([rln(c) for c in flat.split(8192)]).reshape(*x.shape[:-1], -1)


def _test_mse(params, feats_test, y_test, upto):
    """[R, upto] MSE of each run on each of its first `upto` functions' test samples."""
    with torch.no_grad():
        r, t, n, f = feats_test[:, :upto].shape
        out = online.forward(params, feats_test[:, :upto].reshape(r, t * n, f)).reshape(r, t, n, 1)
        return ((out - y_test[:, :upto]) ** 2).mean(dim=(2, 3))


def _train(params, feats, y, order, lr, clip):
    idx = torch.arange(feats.shape[0], device=feats.device)[:, None]
    for k in range(order.shape[1]):
        params = online.sgd_step(params, feats[idx, order[:, k : k + 1]].squeeze(1),
                                 y[idx, order[:, k : k + 1]].squeeze(1), _mse_per_run, lr, clip)
    return params


def _mse_per_run(out, y):
    return online.per_run_mse(out, y)


def evaluate(model, cfg: SineConfig, *, runs: int, seed: int, reset: bool = False, iid: bool = False,
             epochs: int = 1, lr: float | None = None, test_samples: int | None = None,
             run_batch: int = 10, device="cpu", progress=None) -> dict:
    """The continual-regression protocol: per run, `tasks` new functions learned one after another
    (online SGD of the PLN on the frozen RLN's features), MSE on held-out samples.

    curve[t-1]: mean MSE over functions 1..t after learning functions 1..t (one sequential pass
    gives every t; with --iid or --epochs > 1 the PLN is retrained from its start for each t).
    per_function[j]: MSE of function j after learning all of them.
    """
    if runs < 1 or epochs < 1:
        raise UserError("--runs and --epochs must be at least 1")
    lr = cfg.update_lr if lr is None else lr
    test_samples = test_samples or cfg.eval_test_samples
    functions = SineFamily.draw(cfg.n_eval_functions, stream(seed, "eval", 10**6))
    all_rngs = run_streams(seed, "eval", runs)
    model = model.to(device).eval()
    curves, finals = [], []
    for start in range(0, runs, run_batch):
        rngs = all_rngs[start : start + run_batch]
        x_traj, y_traj, x_test, y_test = _run_data(functions, rngs, cfg, test_samples, device)
        feats_traj, feats_test = _features(model.rln, x_traj), _features(model.rln, x_test)
        generators = [torch.Generator().manual_seed(int(rng.integers(2**62))) for rng in rngs] if reset else None
        orders = _orders(rngs, cfg, iid, epochs, device)
        start_params = online.stacked_params(model.pln, len(rngs), generators)
        start_params = [p.detach().to(device).requires_grad_() for p in start_params]
        curve = torch.zeros(len(rngs), cfg.tasks, device=device)
        if not iid and epochs == 1:
            params = start_params
            for t in range(cfg.tasks):
                params = _train(params, feats_traj, y_traj, orders[t], lr, cfg.inner_clip)
                curve[:, t] = _test_mse(params, feats_test, y_test, t + 1).mean(1)
        else:
            for t in range(cfg.tasks):
                params = _train(start_params, feats_traj, y_traj, orders[t], lr, cfg.inner_clip)
                curve[:, t] = _test_mse(params, feats_test, y_test, t + 1).mean(1)
        curves.append(curve.cpu())
        finals.append(_test_mse(params, feats_test, y_test, cfg.tasks).cpu())
        if _diverged(curves[-1]) or _diverged(finals[-1]):
            break  # stop early; the check below reports it
        if progress is not None:
            progress.update(len(rngs))
    curve, final = torch.cat(curves).double().numpy(), torch.cat(finals).double().numpy()
    if _diverged(curve) or _diverged(final):
        raise UserError(f"online learning diverged (MSE non-finite or above {DIVERGED_MSE:g}) at learning rate {lr}; "
                        "try a smaller --lr")
    return {
        "curve": bootstrap_ci(curve), "per_function": bootstrap_ci(final),
        "final_mse": bootstrap_ci(curve[:, -1]),
        "runs": {"curve": np.round(curve, 8).tolist(), "per_function": np.round(final, 8).tolist()},
        "protocol": {"runs": runs, "seed": seed, "reset": reset, "iid": iid, "epochs": epochs, "lr": lr,
                     "inner_clip": cfg.inner_clip, "tasks": cfg.tasks, "update_step": cfg.update_step,
                     "batch_size": cfg.batch_size, "test_samples": test_samples,
                     "slot_mode": cfg.slot_mode, "capacity": cfg.capacity, "eval_functions": cfg.n_eval_functions},
    }


# Targets are bounded by the amplitude (|y| <= 5), so even predicting 0 scores an MSE below 25;
# anything past this is a blow-up, reported as divergence rather than as a number.
DIVERGED_MSE = 1e4


def _diverged(mse) -> bool:
    mse = torch.as_tensor(mse)
    return bool(~torch.isfinite(mse).all() or (mse > DIVERGED_MSE).any())


def _orders(rngs, cfg, iid, epochs, device):
    """orders[t]: [R, steps] indices into the trajectory's batches for learning functions < t+1
    (sequential: only function t's batches, continuing from the previous state)."""
    per = cfg.update_step
    orders = []
    for t in range(cfg.tasks):
        if not iid and epochs == 1:
            orders.append(np.tile(np.arange(t * per, (t + 1) * per), (len(rngs), 1)))
            continue
        base = np.arange((t + 1) * per)
        rows = []
        for rng in rngs:
            rows.append(np.concatenate([rng.permutation(base) if iid else base for _ in range(epochs)]))
        orders.append(np.stack(rows))
    return [torch.as_tensor(o, device=device) for o in orders]
