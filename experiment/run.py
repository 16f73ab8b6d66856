"""One folder per run, never overwritten: <root>/<DDMonthYYYY>/<dataset>/<name>_<n>/.

It holds config.json, metadata.json (argv, git sha, versions, device, times), metrics.jsonl,
results.json, checkpoint.pt and plots. Timings live in metadata.json only, so results.json is
byte-identical for the same seed on the same machine.
"""
import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from experiment import lock as run_lock
from utils import bounds
from utils.device import cuda_math
from utils.errors import UserError
from utils.files import write_bytes, write_json
from utils.messages import note

DEFAULT_RESULTS_ROOT = "../results"


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def read_metadata(folder: Path) -> dict:
    """A run's metadata.json ({} when absent); a damaged one is a one-line error, before any write."""
    path = Path(folder) / "metadata.json"
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        raise UserError(f"'{path}' is damaged ({type(err).__name__}: {str(err)[:80]}); it holds only provenance "
                        "(argv, versions, times): restore it from a backup, or delete it to resume without "
                        "that history") from None
    return data


def repair_log(folder: Path, after_step: int) -> None:
    """On resume, keep the metrics records up to the checkpoint's step, so the log reads as one
    uninterrupted run. A last line without its newline is a write cut by a kill: dropped with a
    note. A damaged complete line is not a kill's trace: a one-line error."""
    path = Path(folder) / "metrics.jsonl"
    if not path.exists():
        return
    data = path.read_bytes()
    lines = data.split(b"\n")
    partial = lines.pop()  # b"" when the file ends with a newline
    if partial:
        note(f"dropping the unfinished last line of {path} (a write cut short by a kill)")
    kept = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            step = record.get("step", -1)
        except (ValueError, AttributeError):
            raise UserError(f"line {number} of '{path}' is not a JSON record: delete that line (the records after "
                            f"the checkpoint's step {after_step} are dropped anyway) and resume again") from None
        if step <= after_step:
            kept.append(line + b"\n")
    text = b"".join(kept)
    if text != data:
        write_bytes(path, text)


class Run:
    def __init__(self, folder: Path, config: dict, device, resumed: bool = False):
        self.dir = Path(folder)
        self.config = config
        self.lock = None  # the run.lock this process holds, released by close()
        self._start = time.time()
        self.metadata = read_metadata(self.dir) if resumed else {}
        self.metadata.update({
            "argv": sys.argv,
            "git_sha": _git_sha(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "platform": platform.platform(),
            "device": str(device),
            "cuda_math": cuda_math(device),
            "seed": config.get("seed"),
            # the process writing this folder: how a sweep job tells the folder its own script wrote
            "pid": os.getpid(),
            "host": socket.gethostname(),
        })
        self.metadata.setdefault("started", dt.datetime.now().isoformat(timespec="seconds"))
        if resumed:
            # A finished run resumed for more steps is unfinished again until this process finishes it.
            self.metadata.pop("train_finished", None)
            self.metadata["wall_seconds_before"] = self.metadata.get("wall_seconds", 0.0)
            self.metadata.setdefault("resumed", []).append(dt.datetime.now().isoformat(timespec="seconds"))
        write_json(self.dir / "config.json", config)
        self.save_metadata()

    @classmethod
    def create(cls, config: dict, *, dataset: str, name: str, results_dir=DEFAULT_RESULTS_ROOT, device="cpu",
               lock: bool = False) -> "Run":
        """A new numbered folder; `lock=True` (training) holds run.lock until close()."""
        bounds.run_name(name)  # scripts check it first; this keeps every caller inside results_dir
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
        held = run_lock.acquire(folder) if lock else None
        try:
            run = cls(folder, config, device)
        except BaseException:
            run_lock.release(held)
            raise
        run.lock = held
        return run

    def close(self) -> None:
        run_lock.release(self.lock)
        self.lock = None

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def log(self, record: dict) -> None:
        with open(self.dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")

    def write_json(self, name: str, obj) -> Path:
        write_json(self.dir / name, obj)
        return self.dir / name

    def save_metadata(self, **extra) -> None:
        self.metadata.update(extra)
        self.metadata["wall_seconds"] = round(self.metadata.get("wall_seconds_before", 0.0) + time.time() - self._start, 2)
        write_json(self.dir / "metadata.json", self.metadata)
