"""The inner loop in closed form when the PLN is one linear layer trained with the mean squared error.

The generic inner loop (model/meta_learner.py) asks autograd for each step's gradient with
`create_graph=True` and then differentiates through those graphs: for the 2020 sine network (a
400 -> 1 linear PLN, 50 inner steps of 10 samples) that is some 60 tiny operators per step, and
their dispatch, not their arithmetic, cost more than the RLN's forward and backward
(benchmarks/sine_speed.py, docs/benchmarks.md). For a linear PLN and the MSE the step is known in
closed form, and so is its derivative, so the whole loop is one autograd node whose backward runs
the recurrence in reverse. It computes the same meta-gradient as the generic loop (to float
rounding; tests/test_meta_gradient.py), second order or first order, with or without the clamp.

One step, with features F [B, D], targets Y [B, O], weights W [O, D], bias b [O], s = 2 / (B O):

    R = F W^T + b - Y                       the residual
    G = s R^T F,   g = s sum_rows(R)        the MSE's gradient
    W' = W - lr clamp(G),  b' = b - lr clamp(g)

Backward, from the adjoints W'^, b'^ of the next step's weights (M, m: where the clamp passed):

    A = -lr M * W'^,  a = -lr m * b'^      the adjoints of G and g (zero when first order)
    R^ = s (F A^T + a)
    W^ = W'^ + R^^T F,   b^ = b'^ + sum_rows(R^),   F^ = s R A + R^ W
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


def fits(pln: nn.Module, loss_fn) -> bool:
    return loss_fn is F.mse_loss and linear_layer(pln) is not None


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


def linear_mse_inner_loop(pln: nn.Module, params: dict, traj_features, traj_targets, rule) -> dict:
    """The generic inner_loop's result for a linear PLN and the MSE: the adapted fast weights."""
    layer = linear_layer(pln)
    names = {id(p): name for name, p in pln.named_parameters()}
    weight_name, bias_name = names[id(layer.weight)], names[id(layer.bias)]
    weight, bias = _LinearMSELoop.apply(params[weight_name], params[bias_name], traj_features, traj_targets,
                                        rule.lr, rule.clip, rule.first_order)
    return {weight_name: weight, bias_name: bias}
