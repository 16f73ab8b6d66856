"""The original algorithm, kept as a reference: the whole network is re-run for every inner step,
and the meta-set loss is recomputed after every step (kept in the graph, as the original did,
though only the last one is back-propagated).

It exists for the tests (the fast meta-gradient must equal this one) and for the benchmarks
(speed is quoted against it). Nothing else should call it. It shares no code with
`model/meta_learner.py` beyond the `InnerLoopRule` settings, so a bug in the fast path's inner
step cannot hide in both.
"""
import torch
from torch.func import functional_call


def _inner_sgd_step(params: dict, loss: torch.Tensor, rule) -> dict:
    """One plain SGD step on the fast weights: p - lr * clamp(dloss/dp)."""
    names = list(params)
    grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=not rule.first_order)
    if rule.first_order:
        # First order: the inner gradients are constants. No graph was built for them, so this
        # detach changes nothing numerically; it states the rule where the step is taken.
        grads = [g.detach() for g in grads]
    if rule.clip is not None:
        grads = [torch.clamp(g, min=-rule.clip, max=rule.clip) for g in grads]
    return {n: params[n] - rule.lr * g for n, g in zip(names, grads)}


def reference_meta_loss(model, x_traj, y_traj, x_meta, y_meta, loss_fn, rule):
    """The meta-loss after K inner steps along (x_traj, y_traj), x_traj [K, B, ...]; `rule` is an
    InnerLoopRule (lr, first_order, clip)."""
    params = dict(model.pln.named_parameters())  # step 0: the meta-parameters themselves
    meta_losses = []
    for x, y in zip(x_traj, y_traj):
        # The RLN is re-run with grad on every step, as in the original inner loop.
        loss = loss_fn(functional_call(model.pln, params, (model.rln(x),)), y)
        params = _inner_sgd_step(params, loss, rule)
        meta_losses.append(loss_fn(functional_call(model.pln, params, (model.rln(x_meta),)), y_meta))
    if not meta_losses:  # no trajectory: the unadapted network's meta-loss
        meta_losses.append(loss_fn(functional_call(model.pln, params, (model.rln(x_meta),)), y_meta))
    return meta_losses[-1]
