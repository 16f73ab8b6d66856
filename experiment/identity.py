"""What a results file says about the model it measured."""
import hashlib
from pathlib import Path


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_identity(payload: dict | None, config: dict) -> dict:
    if payload is None:
        return {"checkpoint": None, "method": "random", "preset": config.get("preset"), "step": 0}
    return {"checkpoint": Path(payload["path"]).name, "sha256": file_sha256(payload["path"]),
            "method": payload["method"], "preset": config.get("preset"), "step": payload["step"]}
