"""The original algorithm, kept as a reference: the whole network is re-run for every inner step,
and the meta-set loss is recomputed after every step (kept in the graph, as the original did,
though only the last one is back-propagated).

It exists for the tests (the fast meta-gradient must equal this one) and for the benchmarks
(speed is quoted against it). Nothing else should call it.
"""
from torch.func import functional_call

from model.meta_learner import InnerLoopRule, pln_params, sgd_step


def reference_meta_loss(model, x_traj, y_traj, x_meta, y_meta, loss_fn, rule: InnerLoopRule, track_every_step: bool = True):
    params = pln_params(model.pln)
    losses = []
    for x, y in zip(x_traj, y_traj):
        # The RLN is re-run with grad on every step, as in the original inner loop.
        loss = loss_fn(functional_call(model.pln, params, (model.rln(x),)), y)
        params = sgd_step(params, loss, rule)
        if track_every_step:
            losses.append(loss_fn(functional_call(model.pln, params, (model.rln(x_meta),)), y_meta))
    if not losses or not track_every_step:
        losses.append(loss_fn(functional_call(model.pln, params, (model.rln(x_meta),)), y_meta))
    return losses[-1]
