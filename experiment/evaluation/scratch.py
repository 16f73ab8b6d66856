"""Scratch: the paper's baseline of a fresh random network learned online (the 2019 `--scratch`).

Every run builds a new network of the evaluated architecture, initialised from the run's own
seed (Kaiming-normal weights, fan_in, ReLU gain; zero biases: the original's init), and trains
ALL of it (every RLN convolution and the PLN) online: batch 1, one class-sorted pass over the 15
training images of each class, Adam (or SGD), cross-entropy over all outputs. Everything else
(run streams, class sets, learning-rate search on trajectory accuracy, reporting) is the
frozen-RLN protocol's `run_protocol`, so Scratch's run i sees the classes, order and seed of
every other method's run i.

Because the RLN changes at every step, nothing can be cached: each step runs the network forward
and backward on one image. The loop is kept lean (images converted once per run, gradients set to
None rather than zeroed, fused Adam), and the accuracy passes run in `no_grad` batches.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from datasets.omniglot import OmniglotSplit, split_drawers, to_float
from experiment.evaluation.omniglot import Protocol, RunSpec, run_protocol
from experiment.evaluation.omniglot_protocols import protocol_record
from experiment.evaluation.online_learner import engine_name, torch_adam
from model.networks import kaiming_normal
from utils.errors import UserError

EVAL_CHUNK = 1024  # images per no_grad accuracy batch


@dataclass
class EvalImages:
    """The evaluation split's uint8 images, as the learner consumes them: train [C, 15, H, W]
    (drawers 1-15) and test [C, 5, H, W] (drawers 16-20)."""
    train: torch.Tensor
    test: torch.Tensor

    @property
    def n_classes(self) -> int:
        return self.train.shape[0]

    @classmethod
    def from_split(cls, split: OmniglotSplit, device="cpu") -> EvalImages:
        images = torch.from_numpy(np.ascontiguousarray(split.images)).to(device)
        train, test = split_drawers(images)
        return cls(train.contiguous(), test.contiguous())


def _trainable_layers(net: nn.Module) -> list[nn.Module]:
    layers = [m for m in net.modules() if any(True for _ in m.parameters(recurse=False))]
    if any(not isinstance(m, (nn.Conv2d, nn.Linear)) for m in layers):
        raise UserError("Scratch supports networks whose parameters are in Conv2d and Linear layers only")
    return layers


def fresh_params(net: nn.Module, seed: int) -> list[torch.Tensor]:
    """A new initialisation of every parameter, in `net.parameters()` order, from `seed` alone:
    weights Kaiming-normal (model.networks.kaiming_normal), biases 0.
    Drawn on the CPU so a run starts from the same weights on any device."""
    gen = torch.Generator().manual_seed(seed)
    params = []
    for layer in _trainable_layers(net):
        params += [kaiming_normal(layer.weight.shape, gen), torch.zeros(layer.bias.shape)]
    return params


def check_protocol(protocol: Protocol) -> None:
    """The frozen-RLN learners' batching and engines have no Scratch counterpart."""
    if engine_name(protocol.engine) not in ("auto", "autograd") or protocol.run_batch != 1:
        raise UserError("--scratch trains one whole network per run with autograd: --engine "
                        f"{protocol.engine} and --run-batch do not apply")


class ScratchLearner:
    """Trains a fresh copy of `net` per run on images and scores it; an `EvaluationLearner`
    (experiment/evaluation/omniglot.py), like the frozen-RLN OnlineLearner (online_learner.py), so run_protocol drives both."""

    engine = "autograd"

    def __init__(self, net: nn.Module, protocol: Protocol, device="cpu"):
        protocol.validate()
        check_protocol(protocol)
        _trainable_layers(net)
        self.protocol = protocol
        self.device = torch.device(device)
        # The working copy: each run loads its own parameters into it (no weights are kept from `net`).
        self.net = copy.deepcopy(net).to(self.device).train()
        self.n_outputs = _trainable_layers(net)[-1].weight.shape[0]

    def init(self, seed: int) -> list[torch.Tensor]:
        return fresh_params(self.net, seed)

    def record(self) -> dict:
        layers = _trainable_layers(self.net)
        return {"learner": "scratch", "engine": self.engine, "n_outputs": self.n_outputs,
                "trained": "the whole network: every RLN convolution and every PLN layer, online",
                "initialisation": "a fresh random network per run from the run's seed (Kaiming-normal weights, "
                                  "zero biases); the architecture only is taken from the preset or checkpoint",
                "layers": [type(m).__name__ for m in layers],
                "n_parameters": int(sum(p.numel() for p in self.net.parameters()))}

    def _load(self, params):
        with torch.no_grad():
            for p, v in zip(self.net.parameters(), params):
                p.copy_(v)

    def _images(self, images: torch.Tensor, classes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """A run's images [n * k, 1, H, W] as floats in [0, 1] (to_float, as the feature pass), class by
        class, and their labels (class ids)."""
        picked = images[torch.as_tensor(classes, device=images.device)]
        x = to_float(picked).reshape(-1, 1, *images.shape[-2:]).to(self.device)
        y = torch.as_tensor(np.repeat(classes, images.shape[1]), device=self.device)
        return x, y

    def train(self, images_train: torch.Tensor, specs: list[RunSpec], lr: float) -> list[list[torch.Tensor]]:
        """Final parameters of each run, trained on its trajectory (images from `images_train` only)."""
        finals = []
        for spec in specs:
            x, y = self._images(images_train, spec.classes)
            self._load(self.init(spec.init_seed))
            params = list(self.net.parameters())
            if self.protocol.optimizer == "adam":
                opt = torch_adam(params, lr)  # fused where this torch has it (CPU: torch >= 2.4)
            else:
                opt = torch.optim.SGD(params, lr=lr)
            for t in spec.order.tolist():
                loss = F.cross_entropy(self.net(x[t:t + 1]), y[t:t + 1])
                opt.zero_grad(set_to_none=True)  # no fill + accumulate: backward writes fresh gradients
                loss.backward()
                opt.step()
            finals.append([p.detach().clone() for p in params])
        return finals

    @torch.no_grad()
    def _accuracy(self, params, x: torch.Tensor, y: torch.Tensor) -> float:
        self._load(params)
        correct = sum((self.net(x[i:i + EVAL_CHUNK]).argmax(1) == y[i:i + EVAL_CHUNK]).sum().item()
                      for i in range(0, len(x), EVAL_CHUNK))
        return correct / len(x)

    def trajectory_accuracy(self, images_train, specs, params) -> list[float]:
        return [self._accuracy(ps, *self._images(images_train, s.classes)) for s, ps in zip(specs, params)]

    def held_out_accuracy(self, images_test, specs, params) -> list[float]:
        return [self._accuracy(ps, *self._images(images_test, s.classes)) for s, ps in zip(specs, params)]


def evaluate_scratch(net: nn.Module, bank: EvalImages, schedule, protocol: Protocol, *, device="cpu",
                     progress: bool = False, report=None) -> dict:
    """The Scratch baseline for every class count in `schedule` (same protocol as `evaluate`)."""
    learner = ScratchLearner(net, protocol, device)
    result = run_protocol(learner, bank, schedule, progress=progress, report=report)
    result["protocol"].update(protocol_record(protocol.name, asdict(protocol), scratch=True))
    result["protocol"]["reset"] = None  # a fresh whole network per run: no reset rule applies
    return {**result, "images": {"image_size": int(bank.train.shape[-1]), "n_classes": bank.n_classes}}
