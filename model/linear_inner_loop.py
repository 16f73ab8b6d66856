"""The inner loop in closed form when the PLN is one linear layer, for the MSE and the cross-entropy.

The generic inner loop (model/meta_learner.py) asks autograd for each step's gradient with
`create_graph=True` and then differentiates through those graphs. For a linear PLN the step is
known in closed form, so both paths below compute the generic loop's adapted weights and
meta-gradient (to float rounding; tests/test_linear_inner_loop.py), second or first order.

MSE (the 2020 sine network: a 400 -> 1 PLN, 50 steps of 10 samples, gradients clamped). There
some 60 tiny operators per step, their dispatch rather than their arithmetic, cost more than the
RLN's forward and backward (benchmarks/sine_speed.py). Here the whole loop is one autograd node
whose backward runs the recurrence in reverse. One step, with features F [B, D], targets Y
[B, O], weights W [O, D], bias b [O], s = 2 / (B O):

    R = F W^T + b - Y                       the residual
    G = s R^T F,   g = s sum_rows(R)        the MSE's gradient
    W' = W - lr clamp(G),  b' = b - lr clamp(g)

Backward, from the adjoints W'^, b'^ of the next step's weights (M, m: where the clamp passed):

    A = -lr M * W'^,  a = -lr m * b'^      the adjoints of G and g (zero when first order)
    R^ = s (F A^T + a)
    W^ = W'^ + R^^T F,   b^ = b'^ + sum_rows(R^),   F^ = s R A + R^ W

Cross-entropy (the Omniglot networks: a D -> 1000 PLN, 15 one-image steps). There each generic
step builds, and differentiates through, a full [1000, D] weight update. Without a clamp every
update is low rank, E_j^T F_j with E_j = (softmax(logits_j) - onehot_j) / B, so step k's logits are

    F_k W_0^T + b_0 - lr sum_{j<k} (F_k F_j^T + 1) E_j

and only the last weights are formed, W_K = W_0 - lr sum_j E_j^T F_j, b_K = b_0 - lr sum_j 1 E_j:
a few [B, C] operators per step, left to autograd.
"""
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable


def linear_layer(pln: nn.Module) -> nn.Linear | None:
    """The PLN's only layer when the PLN is a single nn.Linear (bare or in a Sequential), else None."""
    layers = [m for m in pln.modules() if not isinstance(m, nn.Sequential)]
    if len(layers) == 1 and isinstance(layers[0], nn.Linear) and layers[0].bias is not None:
        return layers[0]
    return None


def loss_kind(loss_fn):
    """F.mse_loss or F.cross_entropy when loss_fn is one of them, or a callable declaring that it
    computes one (its `computes` attribute, e.g. a wrapper that also records logits); else None."""
    kind = getattr(loss_fn, "computes", loss_fn)
    return kind if kind is F.mse_loss or kind is F.cross_entropy else None


def fits(pln: nn.Module, loss_fn, rule) -> bool:
    """Whether a closed form below computes this inner loop (the cross-entropy one has no clamp)."""
    kind = loss_kind(loss_fn)
    if linear_layer(pln) is None or kind is None:
        return False
    return kind is F.mse_loss or rule.clip is None


class _LinearMSELoop(torch.autograd.Function):
    """W and b travel as one matrix [W | b] against features [F | 1], so each step is four operators."""

    @staticmethod
    def forward(ctx, weight, bias, feats, targets, lr: float, clip: float | None, first_order: bool):
        steps, batch = feats.shape[:2]
        scale = 2.0 / (batch * targets.shape[-1])
        feats1 = torch.cat([feats, feats.new_ones(steps, batch, 1)], dim=2)  # [K, B, D + 1]
        scaled = scale * feats1
        wb = torch.cat([weight, bias[:, None]], dim=1)                      # [O, D + 1]
        weights, residuals, grads = [], [], []
        for f, f_scaled, y in zip(feats1.unbind(0), scaled.unbind(0), targets.unbind(0)):
            weights.append(wb)
            r = torch.addmm(y, f, wb.t(), alpha=1, beta=-1)   # F W^T + b - Y
            g = r.t() @ f_scaled                              # [G | g]
            residuals.append(r)
            grads.append(g)
            wb = torch.add(wb, g if clip is None else g.clamp(-clip, clip), alpha=-lr)
        ctx.lr, ctx.clip, ctx.first_order, ctx.scale = lr, clip, first_order, scale
        ctx.save_for_backward(feats1, torch.stack(weights), torch.stack(residuals), torch.stack(grads))
        return wb[:, :-1], wb[:, -1]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_w, grad_b):
        feats1, weights, residuals, grads = ctx.saved_tensors
        zeros = weights.new_zeros(weights.shape[1:])
        adj = torch.cat([zeros[:, :-1] if grad_w is None else grad_w,
                         zeros[:, -1:] if grad_b is None else grad_b[:, None]], dim=1)
        if ctx.first_order:  # the inner gradients are constants: the end weights' adjoint is the start's
            return adj[:, :-1], adj[:, -1], None, None, None, None, None
        # -lr times where the clamp let the gradient through: the adjoint of [G | g] is this times the next adjoint
        passed = (grads.abs() <= ctx.clip).to(grads.dtype).mul_(-ctx.lr) if ctx.clip is not None else None
        scaled = ctx.scale * feats1
        adj_g, adj_r = [None] * len(grads), [None] * len(grads)
        for k in range(len(grads) - 1, -1, -1):
            a = adj * passed[k] if passed is not None else (-ctx.lr) * adj
            r_adj = scaled[k] @ a.t()
            adj = torch.addmm(adj, r_adj.t(), feats1[k])
            adj_g[k], adj_r[k] = a, r_adj
        adj_g, adj_r = torch.stack(adj_g), torch.stack(adj_r)
        # every step's feature adjoint at once: s R A + R^ W (the ones column dropped)
        grad_feats = torch.baddbmm(adj_r @ weights, residuals, adj_g, alpha=ctx.scale)[..., :-1]
        return adj[:, :-1], adj[:, -1], grad_feats, None, None, None, None


def _cross_entropy_loop(weight, bias, feats, targets, lr: float, first_order: bool):
    """(W_K, b_K) after K SGD steps on the mean cross-entropy; feats [K, B, D], targets [K, B]."""
    steps, batch, width = feats.shape
    flat = feats.reshape(steps * batch, width)
    start_logits = torch.addmm(bias, flat, weight.t()).reshape(steps, batch, -1)
    gram = (flat @ flat.t() + 1.0).reshape(steps, batch, steps * batch)  # F_k F_j^T + 1 (the bias)
    onehot = F.one_hot(targets, start_logits.shape[-1]).to(start_logits.dtype)
    errors = []
    for k in range(steps):
        logits = start_logits[k]
        if k:
            logits = logits - lr * (gram[k, :, : k * batch] @ torch.cat(errors))
        error = (torch.softmax(logits, dim=1) - onehot[k]) / batch  # d loss / d logits
        errors.append(error.detach() if first_order else error)
    errors = torch.cat(errors)
    return torch.addmm(weight, errors.t(), flat, alpha=-lr), bias - lr * errors.sum(0)


def closed_form_inner_loop(pln: nn.Module, params: dict, traj_features, traj_targets, loss_fn, rule) -> dict:
    """The generic inner_loop's result (the adapted fast weights) where `fits` says so."""
    layer = linear_layer(pln)
    names = {id(p): name for name, p in pln.named_parameters()}
    weight_name, bias_name = names[id(layer.weight)], names[id(layer.bias)]
    weight, bias = params[weight_name], params[bias_name]
    if loss_kind(loss_fn) is F.mse_loss:
        weight, bias = _LinearMSELoop.apply(weight, bias, traj_features, traj_targets,
                                            rule.lr, rule.clip, rule.first_order)
    else:
        weight, bias = _cross_entropy_loop(weight, bias, traj_features, traj_targets, rule.lr, rule.first_order)
    return {weight_name: weight, bias_name: bias}
