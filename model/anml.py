"""ANML (Beaulieu et al., ECAI 2020): a neuromodulatory (NM) network gates a prediction network.

The network, as uvm-neurobotics-lab/ANML builds it (sources and line numbers: docs/anml.md):

* both networks see the image as three identical channels at 28x28, shifted and scaled by the
  original's constants;
* NM: three 3x3 convolutions (112 channels), each followed by a per-image normalisation with a
  learned scale and shift (the original's batch norm in training mode on one image at a time,
  i.e. instance norm) and a ReLU, the first two by a 2x2 max-pool; then a linear layer to one
  sigmoid per feature of the prediction network: the gate, in (0, 1);
* prediction network: the same body with 256 channels (2304 features at 28x28), multiplied
  element-wise by the gate, then one linear layer to the 1000 outputs.

Here the two parts that evaluation treats differently are submodules: `rln` (the NM network and
the prediction body, with the gate applied: ANML's frozen part at meta-test) and `pln` (the final
linear layer, the only part ANML's meta-test trains). In ANML's own words the prediction network
is `rln.body` plus `pln`; the inner loop of meta-training adapts both, never `rln.nm`.

The meta-objective (`anml_meta_loss`): K one-image SGD steps of the prediction network (body and
head, as fast weights through `functional_call`) with the NM network's gates held fixed, then the
cross-entropy on a meta set with the adapted weights. The gates of every image are computed once
per meta-step: the NM network does not change in the inner loop, so this is exact. The original
ran it first order (the inner gradients are constants); `first_order=False` differentiates
through the inner steps.
"""
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from model.meta_learner import InnerLoopRule, sgd_step

IN_CHANNELS = 3  # the original converts the grey image to RGB: three identical channels
# The original's normalisation of a 0..255 pixel: Normalize(mean=0.92206*256, std=0.08426*256*256)
# applied to ToTensor of a float32 array, which (unlike a uint8 one) is not divided by 255.
PIXEL_MEAN = 0.92206 * 256
PIXEL_STD = 0.08426 * 256 * 256


def anml_input(x: torch.Tensor) -> torch.Tensor:
    """[N, 1, H, W] grey values in [0, 1] (background 1) -> the original's [N, 3, H, W] input."""
    x = (x * 255.0 - PIXEL_MEAN) / PIXEL_STD
    return x.expand(-1, IN_CHANNELS, -1, -1)


def body_side(image_size: int) -> int:
    """Side of the last feature map: conv, pool, conv, pool, conv (3x3 unpadded, 2x2 pools)."""
    side = image_size - 2
    side = side // 2 - 2
    return side // 2 - 2


def _conv_stack(channels: int) -> nn.Sequential:
    layers, in_ch = [], IN_CHANNELS
    for i in range(3):
        layers += [nn.Conv2d(in_ch, channels, 3), nn.InstanceNorm2d(channels, affine=True), nn.ReLU()]
        if i < 2:
            layers.append(nn.MaxPool2d(2, 2))
        in_ch = channels
    return nn.Sequential(*layers, nn.Flatten())


class GatedRepresentation(nn.Module):
    """The prediction body's features times the NM network's gate: [N, 1, H, W] -> [N, F]."""

    def __init__(self, nm_channels: int, channels: int, image_size: int):
        super().__init__()
        side = body_side(image_size)
        self.n_features = channels * side * side
        self.nm = nn.Sequential(_conv_stack(nm_channels), nn.Linear(nm_channels * side * side, self.n_features),
                                nn.Sigmoid())
        self.body = _conv_stack(channels)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return self.nm(anml_input(x))

    def forward(self, x: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        """`gate`: the NM output for x when it is already known (the inner loop computes it once)."""
        inputs = anml_input(x)
        return self.body(inputs) * (self.nm(inputs) if gate is None else gate)


class ANMLNet(nn.Module):
    def __init__(self, nm_channels: int, channels: int, image_size: int, n_outputs: int):
        super().__init__()
        self.rln = GatedRepresentation(nm_channels, channels, image_size)
        self.pln = nn.Sequential(nn.Linear(self.rln.n_features, n_outputs))

    def forward(self, x: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        return self.pln(self.rln(x, gate))


def build_anml_net(nm_channels: int, channels: int, image_size: int, n_outputs: int) -> ANMLNet:
    """Kaiming-normal (fan_in, ReLU gain) weights and zero biases for every convolution and linear
    layer, unit scales and zero shifts for the normalisations: the original's initialisation."""
    net = ANMLNet(nm_channels, channels, image_size, n_outputs)
    for layer in net.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return net


def anml_shapes(image_size: int, channels: int, nm_channels: int, n_outputs: int):
    """(units of each convolution's output per image, both networks together; gated features; NM and
    body params; head params), without building the network (for the memory bounds)."""
    sides = [image_size - 2]
    sides += [sides[-1] // 2 - 2, (sides[-1] // 2 - 2) // 2 - 2]
    units = [(channels + nm_channels) * s * s for s in sides]
    features = channels * sides[-1] ** 2

    def convs(c):  # three convolutions and their normalisations' scales and shifts
        return IN_CHANNELS * c * 9 + c + 2 * (c * c * 9 + c) + 3 * 2 * c

    nm_head = nm_channels * sides[-1] ** 2 * features + features
    return units, features, convs(nm_channels) + nm_head + convs(channels), features * n_outputs + n_outputs


# --- the meta-objective ------------------------------------------------------------------------------

def adapted_params(net: ANMLNet) -> dict[str, torch.Tensor]:
    """What the inner loop adapts, as fast weights keyed like `net.state_dict()`: the prediction
    network (body and head). At step 0 these are the meta-parameters themselves."""
    return {name: p for name, p in net.named_parameters() if not name.startswith("rln.nm.")}


def inner_loop(net: ANMLNet, params: dict, x_traj, y_traj, traj_gates, rule: InnerLoopRule) -> dict:
    """One SGD step of the fast weights `params` per leading index of x_traj [K, B, 1, H, W], each
    under its images' gates traj_gates [K, B, F]; the NM network's weights are never among them."""
    for x, y, gate in zip(x_traj, y_traj, traj_gates):
        params = sgd_step(params, F.cross_entropy(functional_call(net, params, (x, gate)), y), rule)
    return params


class ANMLLoss(NamedTuple):
    loss: torch.Tensor      # the meta-loss after adaptation, with its graph into NM, body and head
    before: torch.Tensor    # the meta-set loss before adaptation (detached)
    outputs: torch.Tensor   # the adapted network's meta-set logits (detached)
    gate: torch.Tensor      # the meta set's gates (detached), for the sparsity diagnostics


def anml_meta_loss(net: ANMLNet, x_traj, y_traj, x_meta, y_meta, rule: InnerLoopRule) -> ANMLLoss:
    """Cross-entropy on (x_meta, y_meta) after one SGD step of the prediction network per leading
    index of x_traj ([K, B, 1, H, W]) and y_traj ([K, B]), the NM network held fixed."""
    k, b = x_traj.shape[:2]
    flat = x_traj.reshape(k * b, *x_traj.shape[2:])
    if rule.first_order:  # constant inner gradients: nothing flows back through the trajectory's gates
        with torch.no_grad():
            traj_gates = net.rln.gate(flat)
        meta_gates = net.rln.gate(x_meta)
    else:
        gates = net.rln.gate(torch.cat([flat, x_meta]))
        traj_gates, meta_gates = gates[: k * b], gates[k * b:]
    start = adapted_params(net)
    params = inner_loop(net, start, x_traj, y_traj, traj_gates.reshape(k, b, -1), rule)
    outputs = functional_call(net, params, (x_meta, meta_gates))
    with torch.no_grad():
        before = F.cross_entropy(functional_call(net, start, (x_meta, meta_gates)), y_meta)
    return ANMLLoss(F.cross_entropy(outputs, y_meta), before, outputs.detach(), meta_gates.detach())
