"""The OML meta-objective: online SGD of the PLN along a trajectory, then a loss on a meta set.

The RLN does not change inside the inner loop, so its features for the trajectory and the meta
set are computed once, in one forward pass with grad enabled. Differentiating through the K
inner steps (`create_graph=True`) gives the exact second-order meta-gradient of the original
algorithm, which re-ran the whole network at every step (see `model/reference.py`, and the
tests that compare the two). `first_order=True` treats the inner gradients as constants: the
pre-2020 behaviour. Where the PLN is one linear layer under the MSE or the cross-entropy,
`inner_loop` hands over to the closed forms of model/linear_inner_loop.py (the same result,
without a graph of graphs).
"""
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch.func import functional_call

from model import linear_inner_loop


@dataclass
class InnerLoopRule:
    lr: float
    first_order: bool = False
    clip: float | None = None  # element-wise clamp of each inner gradient (the 2020 sine code)


def pln_params(pln: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The PLN's weights as a fast-weight dict: at step 0 these are the meta-parameters themselves."""
    return dict(pln.named_parameters())


def sgd_step(params: dict, loss: torch.Tensor, rule: InnerLoopRule) -> dict:
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=not rule.first_order)
    if rule.clip is not None:
        grads = [g.clamp(-rule.clip, rule.clip) for g in grads]
    return {name: p - rule.lr * g for (name, p), g in zip(params.items(), grads)}


def inner_loop(pln, params: dict, traj_features, traj_targets, loss_fn, rule: InnerLoopRule) -> dict:
    """K SGD steps, one per leading index of traj_features ([K, B, F], a batch of B per step)."""
    if linear_inner_loop.fits(pln, loss_fn, rule):  # the same result without a graph of graphs
        return linear_inner_loop.closed_form_inner_loop(pln, params, traj_features, traj_targets, loss_fn, rule)
    for feats, targets in zip(traj_features, traj_targets):
        loss = loss_fn(functional_call(pln, params, (feats,)), targets)
        params = sgd_step(params, loss, rule)
    return params


class MetaBatch(NamedTuple):
    """What one meta-step learns from: a trajectory of K inner steps and a meta set."""
    x_traj: torch.Tensor    # [K, B, ...]: B inputs per inner step
    y_traj: torch.Tensor    # [K, B, ...]
    x_meta: torch.Tensor    # [M, ...]
    y_meta: torch.Tensor    # [M, ...]


class MetaLoss(NamedTuple):
    loss: torch.Tensor      # the meta-loss after adaptation, with its graph into RLN and PLN init
    before: torch.Tensor    # the meta-set loss of the unadapted PLN (detached): what adaptation gained
    outputs: torch.Tensor   # the adapted PLN's meta-set outputs (detached), for accuracy


def meta_loss(model, x_traj, y_traj, x_meta, y_meta, loss_fn, rule: InnerLoopRule) -> MetaLoss:
    """The meta-loss after adapting the PLN along (x_traj, y_traj); x_traj is [K, B, ...]."""
    k, b = x_traj.shape[:2]
    flat_traj = x_traj.reshape(k * b, *x_traj.shape[2:])
    if rule.first_order:
        # The inner gradients are constants, so nothing flows back through the trajectory's
        # features: computing them without a graph saves the RLN backward over the trajectory.
        with torch.no_grad():
            traj_feats = model.rln(flat_traj).reshape(k, b, -1)
        meta_feats = model.rln(x_meta)
    else:
        feats = model.rln(torch.cat([flat_traj, x_meta]))
        traj_feats, meta_feats = feats[: k * b].reshape(k, b, -1), feats[k * b:]
    return adapted_loss(model.pln, traj_feats, y_traj, meta_feats, y_meta, loss_fn, rule)


def adapted_loss(pln, traj_feats, traj_targets, meta_feats, meta_targets, loss_fn, rule: InnerLoopRule) -> MetaLoss:
    """From RLN features: adapt the PLN along the trajectory ([K, B, F], one step per leading
    index), then the loss on the meta set, with the unadapted PLN's loss for comparison."""
    start = pln_params(pln)
    adapted = inner_loop(pln, start, traj_feats, traj_targets, loss_fn, rule)
    outputs = functional_call(pln, adapted, (meta_feats,))
    with torch.no_grad():
        before = loss_fn(functional_call(pln, start, (meta_feats,)), meta_targets)
    return MetaLoss(loss_fn(outputs, meta_targets), before.detach(), outputs.detach())
