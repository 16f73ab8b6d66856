"""The networks: a representation network (RLN) and a prediction network (PLN), as two submodules.

At meta-training the PLN is run with explicit ("fast") weights through `functional_call`, keyed
like `pln.state_dict()`; the RLN is an ordinary module run once per meta-step.
"""
import math

import numpy as np
import torch
from torch import nn

from utils.errors import UserError


class OMLNet(nn.Module):
    def __init__(self, rln: nn.Module, pln: nn.Module):
        super().__init__()
        self.rln = rln
        self.pln = pln

    def forward(self, x):
        return self.pln(self.rln(x))


def _init(module: nn.Module) -> nn.Module:
    """Kaiming-normal weights (fan_in, ReLU gain) and zero biases, as in the original code."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return module


def kaiming_normal(shape, generator) -> torch.Tensor:
    """A fresh Kaiming-normal weight (fan_in = the product of shape[1:], ReLU gain, as `_init`) drawn
    from `generator`, a CPU torch.Generator or a numpy Generator: the same draw on any device, and
    one that never touches the global RNG. Re-initialising a layer always goes through here."""
    shape = tuple(int(s) for s in shape)
    std = (2.0 / math.prod(shape[1:])) ** 0.5
    if isinstance(generator, np.random.Generator):
        return torch.from_numpy(generator.standard_normal(shape).astype(np.float32) * std)
    return torch.randn(shape, generator=generator) * std


def _mlp(sizes: list[int], relu_last: bool) -> nn.Sequential:
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if relu_last or i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


# --- incremental sine -------------------------------------------------------------------------

def sine_layer_sizes(arch: str, width: int, capacity: int) -> list[int]:
    """Input is the one-hot task slot (capacity values) followed by x; output is one value."""
    n_in = capacity + 1
    if arch == "mrcl2019":  # nine Linear layers: 5 x width, 3 x width, 2 x width, then 1
        return [n_in] + [width] * 5 + [3 * width, width, width, 1]
    if arch == "oml2020":   # five hidden layers of `width`, then a linear output
        return [n_in] + [width] * 5 + [1]
    raise UserError(f"unknown sine architecture {arch!r} (choose mrcl2019 or oml2020)")


def build_sine_net(arch: str, width: int, capacity: int, rln: int) -> OMLNet:
    sizes = sine_layer_sizes(arch, width, capacity)
    n_layers = len(sizes) - 1
    if not 1 <= rln < n_layers:
        raise UserError(f"--rln {rln} must leave at least one layer on each side of the split (1..{n_layers - 1} for {arch})")
    return _init(OMLNet(_mlp(sizes[: rln + 1], relu_last=True), _mlp(sizes[rln:], relu_last=False)))


def resplit_sine_net(net: OMLNet, arch: str, width: int, capacity: int, rln: int) -> OMLNet:
    """The same weights with the RLN/PLN boundary after `rln` Linear layers: for the i.i.d.
    baselines, whose split is a choice made at evaluation, not something they learned."""
    layers = [m for m in net.modules() if isinstance(m, nn.Linear)]
    out = build_sine_net(arch, width, capacity, rln)
    with torch.no_grad():
        for source, target in zip(layers, [m for m in out.modules() if isinstance(m, nn.Linear)], strict=True):
            target.weight.copy_(source.weight)
            target.bias.copy_(source.bias)
    return out


# --- Omniglot -----------------------------------------------------------------------------------

def conv_output_size(image_size: int, strides) -> int:
    size = image_size
    for stride in strides:
        size = (size - 3) // stride + 1
    return size


def build_omniglot_net(channels: int, image_size: int, strides, pln_hidden: int, n_outputs: int) -> OMLNet:
    """RLN: 3x3 unpadded convolutions with ReLU, flattened channel-major; PLN: linear, or
    one hidden ReLU layer of `pln_hidden` units (the 2019 network) when pln_hidden > 0."""
    side = conv_output_size(image_size, strides)
    if side < 1:
        raise UserError(f"images of {image_size}px are too small for {len(strides)} convolutions with strides {list(strides)}")
    layers, in_ch = [], 1
    for stride in strides:
        layers += [nn.Conv2d(in_ch, channels, 3, stride=stride), nn.ReLU()]
        in_ch = channels
    rln = nn.Sequential(*layers, nn.Flatten())
    n_features = channels * side * side
    sizes = [n_features, pln_hidden, n_outputs] if pln_hidden else [n_features, n_outputs]
    return _init(OMLNet(rln, _mlp(sizes, relu_last=False)))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def features(rln: nn.Module, inputs, *, batch_size: int = 1024, convert=None, device=None,
             binary: bool = False, out_device=None, progress: bool = False) -> torch.Tensor:
    """The frozen RLN's outputs for `inputs` [N, ...], in `no_grad` chunks of `batch_size`, moved to
    `out_device` chunk by chunk (None: where the RLN ran). `convert` turns a chunk of stored inputs
    (e.g. uint8 images) into network input; `binary` keeps only `output > 0` (a bool tensor, 1/32
    of the memory). The one chunked forward pass that evaluation, the feature cache and the
    representation study share."""
    chunks = range(0, len(inputs), batch_size)
    if progress:
        from tqdm import tqdm
        chunks = tqdm(chunks, desc="features", unit="batch", disable=None)  # None: only in a terminal
    out = []
    for start in chunks:
        chunk = inputs[start:start + batch_size]
        chunk = convert(chunk) if convert is not None else chunk
        rep = rln(chunk.to(device) if device is not None else chunk)
        rep = rep > 0 if binary else rep.float()
        out.append(rep.to(out_device) if out_device is not None else rep)
    if not out:
        return torch.zeros(0, dtype=torch.bool if binary else torch.float32)
    return torch.cat(out)
