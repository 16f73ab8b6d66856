"""Online learning of the PLN on frozen features, for many independent runs at once.

Each run's PLN weights carry a leading run dimension; the loss is the sum of the runs' losses,
so each run receives exactly its own gradient (SGD and element-wise clipping are per-element).
With one run per batch this is the plain loop, which the tests compare against.

The linear PLN (one Linear layer, the 2020 protocol's head) also has a closed-form online step,
used by the Omniglot evaluation instead of autograd + torch.optim: for W [R, O, F], b [R, O] and
one image x [R, F] with label y per run, the cross-entropy gradient is e = softmax(W x + b) - onehot(y)
for b and the outer product e x^T for W; Adam then updates every element with torch.optim.Adam's
arithmetic (`adam_update_`). No graph is built, nothing is allocated per step, and it runs
unchanged on CPU and CUDA, for any number of runs at once.
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


# --- the linear PLN in closed form ---------------------------------------------------------------

def linear_logits(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """w [R, O, F], b [R, O], x [R, F] -> logits [R, O] of each run's image."""
    return torch.baddbmm(b.unsqueeze(2), w, x.unsqueeze(2)).squeeze(2)


def cross_entropy_logit_grad(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """d cross_entropy(logits[r], labels[r]) / d logits[r] for each run: softmax minus one-hot, [R, O]."""
    grad = torch.softmax(logits, dim=1)
    grad[torch.arange(len(labels), device=labels.device), labels] -= 1
    return grad


def adam_update_(p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, step: int, lr: float,
                 betas: tuple[float, float], eps: float) -> None:
    """One Adam step in place (p, m, v; g is used as scratch and overwritten), with the arithmetic of
    torch.optim.Adam's single-tensor path (no weight decay, no amsgrad): bias corrections in double
    precision, denominator sqrt(v) / sqrt(1 - beta2^t) + eps."""
    beta1, beta2 = betas
    m.lerp_(g, 1 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    step_size = lr / (1 - beta1 ** step)
    denom = torch.sqrt(v, out=g).div_((1 - beta2 ** step) ** 0.5).add_(eps)
    p.addcdiv_(m, denom, value=-step_size)


def train_linear(w: torch.Tensor, b: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, orders: torch.Tensor,
                 lr: float, optimizer: str, betas=(0.9, 0.999), eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """Online training of R linear PLNs at once, batch size 1, cross-entropy: run r starts from
    w[r] [O, F], b[r] [O], and at step t sees image xs[r, orders[r, t]] with label ys[r, orders[r, t]].
    `optimizer` is "adam" (torch.optim.Adam's update) or "sgd". Returns new (w, b); the inputs are
    not modified. Each run's numbers depend on its own data only (every operation is per run)."""
    w, b = w.clone(), b.clone()
    adam = optimizer == "adam"
    gw = torch.empty_like(w)
    if adam:
        mw, vw, mb, vb = torch.zeros_like(w), torch.zeros_like(w), torch.zeros_like(b), torch.zeros_like(b)
    runs = torch.arange(xs.shape[0], device=xs.device)
    for t in range(orders.shape[1]):
        rows = orders[:, t]
        x = xs[runs, rows]
        e = cross_entropy_logit_grad(linear_logits(w, b, x), ys[runs, rows])
        torch.mul(e.unsqueeze(2), x.unsqueeze(1), out=gw)  # the outer product e x^T: dL/dW of each run
        if adam:
            adam_update_(w, gw, mw, vw, t + 1, lr, betas, eps)
            adam_update_(b, e, mb, vb, t + 1, lr, betas, eps)
        else:
            w.sub_(gw, alpha=lr)
            b.sub_(e, alpha=lr)
    return w, b
