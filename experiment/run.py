"""One folder per run, never overwritten: <root>/<DDMonthYYYY>/<dataset>/<name>_<n>/.

It holds config.json, metadata.json (argv, git sha, versions, device, times), metrics.jsonl,
results.json, checkpoint.pt and plots. Timings live in metadata.json only, so results.json is
byte-identical for the same seed on the same machine.
"""
import datetime as dt
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from experiment.files import write_json

DEFAULT_RESULTS_ROOT = "../results"


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class Run:
    def __init__(self, folder: Path, config: dict, device, resumed: bool = False):
        self.dir = Path(folder)
        self.config = config
        self._start = time.time()
        self.metadata = self._read_metadata() if resumed else {}
        self.metadata.update({
            "argv": sys.argv,
            "git_sha": _git_sha(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "platform": platform.platform(),
            "device": str(device),
            "seed": config.get("seed"),
        })
        self.metadata.setdefault("started", dt.datetime.now().isoformat(timespec="seconds"))
        if resumed:
            self.metadata["wall_seconds_before"] = self.metadata.get("wall_seconds", 0.0)
            self.metadata.setdefault("resumed", []).append(dt.datetime.now().isoformat(timespec="seconds"))
        write_json(self.dir / "config.json", config)
        self.save_metadata()

    @classmethod
    def create(cls, config: dict, *, dataset: str, name: str, results_dir=DEFAULT_RESULTS_ROOT, device="cpu") -> "Run":
        day = dt.date.today()
        parent = Path(results_dir) / f"{day.day:02d}{day.strftime('%B%Y')}" / dataset
        parent.mkdir(parents=True, exist_ok=True)
        for n in range(1, 100_000):
            folder = parent / f"{name}_{n}"
            try:
                folder.mkdir()
                break
            except FileExistsError:
                continue
        return cls(folder, config, device)

    def _read_metadata(self) -> dict:
        path = self.dir / "metadata.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def log(self, record: dict) -> None:
        with open(self.dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")

    def truncate_log(self, after_step: int) -> None:
        """On resume, drop records past the checkpoint so the log reads as one uninterrupted run."""
        path = self.dir / "metrics.jsonl"
        if not path.exists():
            return
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", -1) <= after_step]
        path.write_text("".join(line + "\n" for line in kept))

    def write_json(self, name: str, obj) -> Path:
        write_json(self.dir / name, obj)
        return self.dir / name

    def save_metadata(self, **extra) -> None:
        self.metadata.update(extra)
        self.metadata["wall_seconds"] = round(self.metadata.get("wall_seconds_before", 0.0) + time.time() - self._start, 2)
        write_json(self.dir / "metadata.json", self.metadata)
