"""The frozen RLN's features of an Omniglot evaluation split, computed once per checkpoint.

Cached in memory, and on disk keyed by the RLN's architecture and weights, the split (evaluation
or selection classes), the image size and the pixels: any change to one of them is a different
file. A disk file is used only if its shapes fit the split and its tensors hash to the sha256
stored with them; otherwise the features are recomputed with a `warning:` line. Learning-rate
trials and runs then train only the PLN.
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from datasets.omniglot import TRAIN_DRAWERS, OmniglotSplit, split_drawers, to_float
from model.networks import features
from utils.files import save_torch
from utils.messages import quiet_logger, warn

log = quiet_logger(__name__)

FEATURE_CACHE_VERSION = 2  # 2: the file carries its tensors' shapes and sha256


@dataclass
class FeatureBank:
    """Frozen-RLN features of the evaluation split: train [C, 15, F] (drawers 1-15) and
    test [C, 5, F] (drawers 16-20). `source` says whether they were computed or read."""
    train: torch.Tensor
    test: torch.Tensor
    key: str
    source: str = "computed"
    seconds: float = 0.0

    @property
    def n_classes(self) -> int:
        return self.train.shape[0]

    @property
    def n_features(self) -> int:
        return self.train.shape[-1]


_MEMORY_CACHE: dict[str, FeatureBank] = {}


def rln_digest(rln: nn.Module) -> str:
    """sha256 of the RLN's architecture and weights: the same digest means the same features."""
    digest = hashlib.sha256(repr(rln).encode())
    for name, tensor in rln.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def feature_key(rln: nn.Module, split: OmniglotSplit) -> str:
    # Any other split (the selection classes) names itself in the key, so no cache file is ever
    # shared between splits, whatever their pixels; the evaluation split's keys stay as they were.
    name = "" if split.name == "evaluation" else f"{split.name}:"
    digest = hashlib.sha256(f"v{FEATURE_CACHE_VERSION}:{name}{rln_digest(rln)}:{split.image_size}:".encode())
    digest.update(np.ascontiguousarray(split.images).tobytes())
    return digest.hexdigest()


def default_cache_dir() -> Path:
    return Path(os.environ.get("OML_CACHE_DIR", ".oml_cache"))


def feature_bank(rln: nn.Module, split: OmniglotSplit, *, cache_dir=None, device="cpu",
                 batch_size: int = 256, progress: bool = False) -> FeatureBank:
    """Features of every evaluation image, from memory, from disk (`cache_dir`, None: the default,
    False: no disk cache), or computed with the frozen RLN in `no_grad` chunks."""
    key = feature_key(rln, split)
    if key in _MEMORY_CACHE:
        bank = _MEMORY_CACHE[key]
        return FeatureBank(bank.train.to(device), bank.test.to(device), key, "memory", 0.0)
    start = time.perf_counter()
    path = None if cache_dir is False else Path(cache_dir or default_cache_dir()) / f"omniglot_features_{key[:24]}.pt"
    n_classes, per_class = split.images.shape[:2]
    bank = _read_features(path, key, n_classes, per_class) if path is not None else None
    if bank is None:
        feats = _compute(rln, split.images, device, batch_size, progress)
        train, test = split_drawers(feats)
        bank = FeatureBank(train.contiguous(), test.contiguous(), key)
        if path is not None:
            train, test = bank.train.cpu(), bank.test.cpu()
            try:
                save_torch(path, {"version": FEATURE_CACHE_VERSION, "key": key, "train": train, "test": test,
                                  "shapes": {"train": list(train.shape), "test": list(test.shape)},
                                  "sha256": features_sha256(train, test)})
            except OSError as err:
                warn(f"cannot write the feature cache {path} ({err}); going on without it", log)
    bank.seconds = round(time.perf_counter() - start, 2)
    _MEMORY_CACHE[key] = FeatureBank(bank.train.cpu(), bank.test.cpu(), key)
    return FeatureBank(bank.train.to(device), bank.test.to(device), key, bank.source, bank.seconds)


def features_sha256(train: torch.Tensor, test: torch.Tensor) -> str:
    """sha256 of the cached tensors' dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for tensor in (train, test):
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _features_problem(data, key: str, n_classes: int, per_class: int) -> str | None:
    """Why a loaded cache file cannot be used, or None. The name already carries the key, so any
    problem here is damage or a foreign file, never a normal miss."""
    if not isinstance(data, dict) or data.get("version") != FEATURE_CACHE_VERSION or data.get("key") != key:
        return "not this RLN's and split's features (key or version differs)"
    train, test = data.get("train"), data.get("test")
    if not isinstance(train, torch.Tensor) or not isinstance(test, torch.Tensor):
        return "malformed (no train/test tensors)"
    want = ([n_classes, TRAIN_DRAWERS], [n_classes, per_class - TRAIN_DRAWERS])
    if (train.dtype != torch.float32 or test.dtype != torch.float32 or train.ndim != 3 or test.ndim != 3
            or [list(train.shape[:2]), list(test.shape[:2])] != list(want) or train.shape[2] != test.shape[2]):
        return (f"malformed (train {list(train.shape)}, test {list(test.shape)}; expected [{n_classes}, "
                f"{TRAIN_DRAWERS}, F] and [{n_classes}, {per_class - TRAIN_DRAWERS}, F] float32)")
    if data.get("shapes") != {"train": list(train.shape), "test": list(test.shape)}:
        return "malformed (its tensors' shapes differ from those stored with them)"
    if data.get("sha256") != features_sha256(train, test):
        return "corrupt (the features' sha256 differs from the one stored with them)"
    return None


def _read_features(path: Path, key: str, n_classes: int, per_class: int) -> FeatureBank | None:
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        problem = _features_problem(data, key, n_classes, per_class)
    except Exception as err:  # a truncated or foreign file: recompute
        problem = f"unreadable ({type(err).__name__})"
    if problem is None:
        return FeatureBank(data["train"], data["test"], key, "disk")
    warn(f"feature cache {path} is {problem}; recomputing the features", log)
    return None


def _compute(rln, images: np.ndarray, device, batch_size: int, progress: bool) -> torch.Tensor:
    n_classes, per_class = images.shape[:2]
    flat = images.reshape(n_classes * per_class, *images.shape[2:])
    feats = features(rln.to(device).eval(), flat, batch_size=batch_size, convert=to_float, device=device,
                     progress=progress)
    return feats.reshape(n_classes, per_class, -1)
