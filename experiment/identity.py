"""What a results file says about the model it measured."""
from pathlib import Path

from utils.files import file_digest


def checkpoint_identity(payload: dict | None, config: dict) -> dict:
    if payload is None:
        return {"checkpoint": None, "method": "random", "preset": config.get("preset"), "step": 0}
    return {"checkpoint": Path(payload["path"]).name, "sha256": file_digest(payload["path"]),
            "method": payload["method"], "preset": config.get("preset"), "step": payload["step"],
            **({"evaluation_defaults": payload["evaluation_defaults"]} if payload.get("evaluation_defaults") else {})}
