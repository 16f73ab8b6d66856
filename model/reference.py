"""The original algorithm, kept as a reference: the whole network is re-run for every inner step.

`reference_meta_loss` also recomputes the meta-set loss after every inner step (kept in the graph,
though only the last one is back-propagated), as the original classification code did in both
versions. `original_meta_loss` is the meta-loss as the original *sine* code computed it, version
by version: the 2020 code computed it once, after the inner loop; the 2019 code after every step,
but on a growing prefix of the meta set, and it took every inner gradient for the RLN's weights too.

They exist for the tests (the fast meta-gradient must equal these) and for the benchmarks (speed
is quoted against them). Nothing else should call them. They share no code with
`model/meta_learner.py` beyond the `InnerLoopRule` settings, so a bug in the fast path's inner
step cannot hide in both.
"""
import torch
from torch.func import functional_call

ORIGINAL_VERSIONS = ("2019", "2020")


def _inner_sgd_step(params: dict, loss: torch.Tensor, rule, also=()) -> dict:
    """One plain SGD step on the fast weights: p - lr * clamp(dloss/dp). `also`: more tensors the
    gradient is taken for and thrown away (the 2019 code took it for the RLN's weights too)."""
    names = list(params)
    grads = torch.autograd.grad(loss, [*also, *(params[n] for n in names)], create_graph=not rule.first_order)
    grads = grads[len(also):]
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


def original_meta_loss(model, x_traj, y_traj, x_meta, y_meta, loss_fn, rule, version: str):
    """The meta-loss as the original sine meta-learner (`MetaLearnerRegression.forward`) computed
    it, in the order it did; the value and the meta-gradient are `reference_meta_loss`'s (tested),
    only the work around them differs. Both versions re-run the whole network with grad for every
    inner step, and after the first step evaluate the unadapted network's meta-loss without grad
    (logged, never back-propagated).

    version "2020" (2855a6b, the `oml2020` preset): inner gradients for the PLN only, with graph
      (second order), clamped; the meta-loss once, after the last step.
    version "2019" (55fa220, the `mrcl2019` preset): each inner gradient taken for every weight,
      the RLN's included, though only the PLN steps (first order); after every step k >= 1 the
      meta-loss on the first floor((k+1) M / K) of the M meta samples (task-major, so roughly the
      tasks seen so far), each kept in the graph; the last, on all M, is back-propagated. With
      K = 1 the 2019 code fails (no step k >= 1); here the full meta-loss is taken after the step.

    Left out, so the original's step was slower than this: the per-sample Python loop with which
    both versions picked the output unit (a width-1 output here, so the selection is the identity),
    and the data loading around the step. `rule` is applied as given (the 2019 code had no clamp).
    """
    if version not in ORIGINAL_VERSIONS:
        raise ValueError(f"version must be one of {ORIGINAL_VERSIONS}, got {version!r}")

    def meta(params, n=None):  # the first n meta samples (None: all)
        return loss_fn(functional_call(model.pln, params, (model.rln(x_meta[:n]),)), y_meta[:n])

    rln_weights = tuple(model.rln.parameters()) if version == "2019" else ()
    params = dict(model.pln.named_parameters())
    steps, kept = len(x_traj), []
    for k, (x, y) in enumerate(zip(x_traj, y_traj)):
        loss = loss_fn(functional_call(model.pln, params, (model.rln(x),)), y)
        params = _inner_sgd_step(params, loss, rule, also=rln_weights)
        if k == 0:
            with torch.no_grad():
                meta(dict(model.pln.named_parameters()))
        elif version == "2019" and (k + 1) * len(x_meta) // steps:
            kept.append(meta(params, (k + 1) * len(x_meta) // steps))
    if version == "2020" or steps < 2:
        kept.append(meta(params))
    return kept[-1]
