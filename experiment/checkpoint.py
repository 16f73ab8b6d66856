"""Checkpoints are plain dicts of tensors and JSON-able values: they load with weights_only=True.

    {"format": 1, "benchmark": "sine"|"omniglot", "method": ..., "config": {...},
     "state_dict": model.state_dict(), "weights_sha256": str, "step": int,
     "training": {optimizer, scheduler, rng} | absent, "evaluation_defaults": {"rln": K} | absent}

`weights_sha256` (`weights_digest`) is the SHA-256 of the state tensors, recorded when the file is
written; `load_checkpoint` refuses weights that differ from it (flipped bytes, an edited tensor) or
that are not finite (a diverged or damaged run), before anything is evaluated. Checkpoints written
before the digest was recorded (the shipped trained_models/ among them) still load; only their
finiteness can be checked (docs/reliability.md).

`evaluation_defaults` holds evaluation settings chosen on the meta-validation split for this model
(experiment/export.py --rln: a sine baseline's RLN/PLN split), so the plain evaluation command
reproduces the documented number.
"""
import hashlib
import sys
from pathlib import Path

import torch

from utils.errors import UserError
from utils.files import save_torch

FORMAT = 1
CHECKPOINT_NAME = "checkpoint.pt"
FIELDS = {"benchmark": str, "method": str, "config": dict, "state_dict": dict, "step": int}
DIGEST = "weights_sha256"


def _interned(obj):
    """`obj` with every string interned. The pickle memo shares repeated objects by identity, so
    equal strings that are distinct objects (keys of a state loaded from a checkpoint, against
    the literals of a fresh run) would give different bytes for equal checkpoints."""
    if isinstance(obj, str):
        return sys.intern(obj)
    if isinstance(obj, dict):
        return {_interned(k): _interned(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) and type(obj) in (list, tuple):
        return type(obj)(_interned(v) for v in obj)
    return obj


def weights_digest(state_dict: dict) -> str:
    """SHA-256 of the state tensors: each name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(path: Path, *, benchmark: str, config: dict, model, step: int, training: dict | None = None) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "benchmark": benchmark,
        "method": config.get("method", "oml"),
        "config": config,
        "state_dict": state,
        DIGEST: weights_digest(state),
        "step": step,
    }
    if training is not None:
        payload["training"] = training
    save_torch(path, _interned(payload))


def resolve_checkpoint_path(model_path) -> Path:
    """`--model` may name a checkpoint file or a run folder holding one."""
    path = Path(model_path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise UserError(f"no checkpoint at '{model_path}' (give a .pt file or a run folder containing {CHECKPOINT_NAME})")
    return path


def load_checkpoint(model_path, benchmark: str | None = None) -> dict:
    path = resolve_checkpoint_path(model_path)
    if path.stat().st_size == 0:  # a write cut short, or a placeholder: torch says only "EOFError"
        raise UserError(f"'{path}' is empty (0 bytes), not a checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a non-checkpoint file
        detail = (str(err).splitlines() or [""])[0][:120]  # some carry no message at all
        raise UserError(f"'{path}' is not a checkpoint this code can read "
                        f"({type(err).__name__}{': ' + detail if detail else ''})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or "state_dict" not in payload:
        raise UserError(f"'{path}' is not a checkpoint written by this repository (no format-{FORMAT} header)")
    missing = [key for key, kind in FIELDS.items() if not isinstance(payload.get(key), kind)]
    if missing:
        raise UserError(f"'{path}' is a damaged checkpoint: {', '.join(missing)} missing or of the wrong type")
    defaults = payload.get("evaluation_defaults", {})
    if not isinstance(defaults, dict) or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                 for v in defaults.values()):
        raise UserError(f"'{path}' is a damaged checkpoint: evaluation_defaults must map settings to positive integers")
    if benchmark is not None and payload["benchmark"] != benchmark:
        raise UserError(f"'{path}' is a {payload['benchmark']} checkpoint, but this script needs a {benchmark} one")
    check_weights(payload["state_dict"], payload.get(DIGEST, None), path)
    payload["path"] = str(path)
    return payload


def check_weights(state_dict: dict, recorded, path) -> None:
    """Tensors only, every floating one finite, and equal to the digest recorded at save time
    (None: a checkpoint from before digests were recorded, loaded as before)."""
    bad = sorted(name for name, value in state_dict.items() if not isinstance(name, str) or not torch.is_tensor(value))
    if bad:
        raise UserError(f"'{path}' is a damaged checkpoint: its state_dict holds {bad[0]!r}, which is not a named tensor")
    broken = [name for name, value in sorted(state_dict.items())
              if value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if broken:
        raise UserError(f"'{path}' holds non-finite weights (nan or inf in {', '.join(broken[:3])}"
                        f"{f' and {len(broken) - 3} more' if len(broken) > 3 else ''}): a diverged or damaged "
                        "checkpoint, which would only evaluate to nonsense")
    if recorded is None:  # written before digests were recorded: finiteness is all that can be checked
        return
    if not isinstance(recorded, str) or recorded != weights_digest(state_dict):
        raise UserError(f"'{path}' is damaged: its weights differ from the SHA-256 recorded when it was written "
                        "(flipped bytes or an edited tensor); restore it from a copy, or retrain")


def load_weights(model, payload: dict):
    """model.load_state_dict(payload's weights), a missing or misshapen tensor a one-line error."""
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise UserError(f"'{payload['path']}' does not fit the network its config describes "
                        f"({' '.join(str(err).split())[:240]})") from None
    return model
