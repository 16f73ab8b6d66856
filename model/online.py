"""Online learning of the PLN on frozen features, for many independent runs at once.

Each run's PLN weights carry a leading run dimension; the loss is the sum of the runs' losses,
so each run receives exactly its own gradient (SGD and element-wise clipping are per-element).
With one run per batch this is the plain loop, which the tests compare against.
"""
import torch
from torch import nn

from model.networks import kaiming_normal


def pln_linears(pln: nn.Module) -> list[nn.Linear]:
    layers = [m for m in pln.modules() if isinstance(m, nn.Linear)]
    if any(not isinstance(m, (nn.Linear, nn.ReLU, nn.Sequential)) for m in pln.modules()):
        raise ValueError("online learner supports PLNs of Linear and ReLU layers only")
    return layers


def stacked_params(pln: nn.Module, n_runs: int, reset_generators=None) -> list[torch.Tensor]:
    """[W0, b0, W1, b1, ...] each with a leading run dimension, from the PLN's own weights or,
    with `reset_generators` (one torch.Generator per run), freshly Kaiming-initialised."""
    params = []
    for layer in pln_linears(pln):
        w = layer.weight.detach().unsqueeze(0).repeat(n_runs, 1, 1)
        b = layer.bias.detach().unsqueeze(0).repeat(n_runs, 1)
        if reset_generators is not None:
            w = torch.stack([kaiming_normal(layer.weight.shape, g) for g in reset_generators]).to(w)
            b = torch.zeros_like(b)
        params += [w.requires_grad_(), b.requires_grad_()]
    return params


def forward(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """x [R, B, F] -> [R, B, out]; ReLU between layers, none after the last."""
    n_layers = len(params) // 2
    for i in range(n_layers):
        w, b = params[2 * i], params[2 * i + 1]
        x = torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))
        if i < n_layers - 1:
            x = torch.relu(x)
    return x


def sgd_step_runs(params, x, y, loss_fn, lr: float, clip: float | None):
    """One SGD step for every run on its own batch x[r], y[r] (runs on the leading dimension)."""
    out = forward(params, x)
    loss = loss_fn(out, y).sum()
    grads = torch.autograd.grad(loss, params)
    with torch.no_grad():
        new = []
        for p, g in zip(params, grads):
            if clip is not None:
                g = g.clamp(-clip, clip)
            new.append((p - lr * g).requires_grad_())
    return new


def per_run_mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each run over its batch: [R]."""
    return ((out - y) ** 2).flatten(1).mean(1)
