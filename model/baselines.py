"""The paper's baseline representations: i.i.d. pretraining, and SR-NN (the same with a
set-sparsity penalty on the representation, paper section 5.4)."""
import torch
from torch import nn


def set_kl_sparsity(representation: torch.Tensor, beta: float) -> torch.Tensor:
    """Mean over units of r - ln r - 1 with r = beta / (mean activation + 1e-4), for the units
    whose batch-mean activation exceeds beta (others contribute 0): it pushes each unit to be
    active, on average over a batch, at most beta."""
    mean_activation = representation.mean(dim=0)
    ratio = beta / (mean_activation + 1e-4)
    penalty = ratio - torch.log(ratio) - 1.0
    return torch.where(mean_activation > beta, penalty, torch.zeros_like(penalty)).mean()


class HeadBank(nn.Module):
    """Several output heads for the PLN's last Linear layer, one per group of tasks.

    Pretraining on many regression functions through one output is ill-posed (the slot alone does
    not identify a function), so, like the original's toy baseline, each group of `capacity`
    functions gets its own output unit. Head 0 becomes the PLN's output layer in the checkpoint.
    """

    def __init__(self, last: nn.Linear, n_heads: int):
        super().__init__()
        self.weight = nn.Parameter(last.weight.detach().repeat(n_heads, 1).clone())
        self.bias = nn.Parameter(last.bias.detach().repeat(n_heads).clone())
        nn.init.kaiming_normal_(self.weight, nonlinearity="relu")

    def forward(self, hidden: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
        return (hidden * self.weight[heads]).sum(-1, keepdim=True) + self.bias[heads, None]

    @torch.no_grad()
    def copy_head_into(self, last: nn.Linear, head: int = 0) -> None:
        last.weight.copy_(self.weight[head : head + 1])
        last.bias.copy_(self.bias[head : head + 1])
