"""Checks of one input each, raising a one-line UserError: sizes, rates, seeds, run names, the
folders a script writes to, and whether an estimated allocation fits in memory.

Pure functions of their arguments (and, for folders and memory, of the machine), so every
script family states its bounds in one place (experiment/limits.py) instead of scattered ifs,
and refuses before it has created anything.
"""
import math
import os
import shutil
import stat
import tempfile
from pathlib import Path

from utils.errors import UserError

# numpy's SeedSequence takes no negative entropy and torch.manual_seed nothing past 2**64 - 1;
# below 2**63 both accept the seed and it fits a signed 64-bit integer everywhere it is stored.
SEED_LIMIT = 2**63
MIN_FREE_BYTES = 64 * 2**20   # a results folder gets JSON, PNGs and at most a checkpoint or two
MAX_NAME_LENGTH = 200         # file names stop at 255 bytes; `_<n>` and the date go beside it
# Evaluation counts: 200x the paper's 50 runs and 5 search runs, 200x the Oracle's 5 epochs.
# Past them a run only takes days: each run keeps its own stream and its numbers in results.json.
MAX_RUNS = 10_000
MAX_SEARCH_RUNS = 1_000
MAX_EPOCHS = 1_000


def size_text(n_bytes: float) -> str:
    """'74.5 GiB': binary units, one decimal."""
    value, unit = float(n_bytes), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if value < 1024 or unit == "EiB":
            break
        value /= 1024
    return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"


def at_least(flag: str, value: int, low: int = 1, high: int | None = None, why: str = "") -> int:
    """An integer in low..high (high None: no upper bound); `why` says where high comes from."""
    if value < low or (high is not None and value > high):
        if high is None:
            raise UserError(f"{flag} must be at least {low}, got {value}")
        raise UserError(f"{flag} must be in {low}..{high}{f' ({why})' if why else ''}, got {value}")
    return value


def positive_finite(flag: str, value: float) -> float:
    """A learning rate, clamp or target: > 0 and finite (nan and inf fail, and 0 too)."""
    if not (math.isfinite(value) and value > 0):
        raise UserError(f"{flag} must be a positive finite number, got {value}")
    return value


def count(flag: str, value: int, high: int) -> int:
    """A run or epoch count: 1..high, high being the sane bound above."""
    return at_least(flag, value, 1, high, "a sane bound: the paper uses far fewer")


def seed(value: int, flag: str = "--seed") -> int:
    if not 0 <= value < SEED_LIMIT:
        raise UserError(f"{flag} must be in 0..2**63-1, got {value}")
    return value


def run_name(name: str | None) -> str | None:
    """A run name is one folder name inside the results folder: no separators, no '.'/'..'."""
    if name is None:
        return None
    bad = (not name.strip() or name in (".", "..") or any(c in name for c in "/\\\0")
           or len(name.encode()) > MAX_NAME_LENGTH)
    if bad:
        raise UserError(f"--name {name!r} must be a plain folder name (no '/', '\\', '.' or '..', at most "
                        f"{MAX_NAME_LENGTH} bytes): runs are written as <results-dir>/<date>/<dataset>/<name>_<n>")
    return name


def _existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists():
        path = path.parent
    return path


def _writable(folder: Path) -> str | None:
    """None if a file can be created in `folder`, else why not. os.access alone is not enough
    (it says yes to root on /sys), so a temp file is created and removed at once."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return "not writable"
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".oml-write-check-")
    except OSError as err:
        return (err.strerror or type(err).__name__).lower()
    os.close(fd)
    os.unlink(probe)
    return None


def _folder_problem(path: Path, need_bytes: int) -> str | None:
    """Why a new folder or file at `path` cannot be written (None: it can): its nearest existing
    ancestor must be a writable folder with `need_bytes` free. Nothing is left behind."""
    base = _existing_ancestor(path)
    if not base.is_dir():
        return f"'{base}' is a file, not a folder"
    why = _writable(base)
    if why:
        return f"cannot write in '{base}' ({why})"
    free = shutil.disk_usage(base).free
    if free < need_bytes:
        return (f"only {size_text(free)} free on its disk, and this needs about {size_text(need_bytes)}; "
                "free some space or choose another place")
    return None


def folder_path(flag: str, path) -> Path:
    """A folder to use or create: neither it nor the nearest existing folder above it is a file."""
    base = _existing_ancestor(Path(path))
    if not base.is_dir():
        raise UserError(f"{flag} '{path}': '{base}' is a file, not a folder")
    return Path(path)


def writable_folder(flag: str, path, need_bytes: int = MIN_FREE_BYTES) -> Path:
    """`path` (created later if missing) can take a new run folder of about `need_bytes`."""
    problem = _folder_problem(Path(path), need_bytes)
    if problem:
        raise UserError(f"{flag} '{path}': {problem}")
    return Path(path)


def output_file(flag: str, path, need_bytes: int = MIN_FREE_BYTES, create_folder: bool = False) -> Path:
    """A file to write: not a folder; its folder existing (or, with create_folder, creatable),
    writable and not full."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} '{path}' is a folder; give the path of the file to write")
    if not create_folder and not path.parent.exists():
        raise UserError(f"{flag} '{path}': the folder '{path.parent}' does not exist")
    problem = _folder_problem(path.parent, need_bytes)
    if problem:
        raise UserError(f"{flag} '{path}': {problem}")
    return path


def private_folder_problem(path) -> str | None:
    """Why another user could have placed a file in folder `path` (None: no one could). Every
    folder from `path` up to / must belong to this user or root; `path` must be writable by no one
    else, and a folder above it only with the sticky bit (as /tmp), which keeps others from renaming
    what is not theirs; `path`'s own entries must belong to this user or root. POSIX only."""
    if not hasattr(os, "getuid"):
        return None
    trusted = {os.getuid(), 0}  # root can already do anything as anyone
    path = Path(path).resolve()
    for folder in (path, *path.parents):
        info = os.stat(folder)
        if info.st_uid not in trusted:
            return f"'{folder}' belongs to another user (uid {info.st_uid})"
        shared = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if shared and (folder == path or not info.st_mode & stat.S_ISVTX):
            return f"'{folder}' is writable by other users (mode {stat.filemode(info.st_mode)})"
    for entry in sorted(path.iterdir()):
        if entry.lstat().st_uid not in trusted:
            return f"'{entry}' belongs to another user (uid {entry.lstat().st_uid})"
    return None


def available_memory() -> int | None:
    """Bytes the kernel says a new allocation can get (MemAvailable), else the physical memory;
    None where neither is known (then memory is not checked)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def fits_in_memory(parts: list[tuple[str, str, float]], available: int | None = None) -> None:
    """Refuse, with the estimate, work whose memory exceeds what is available now: past it the
    process swaps or the kernel kills it, minutes later and with no message. `parts`: (the flags
    that size it, what it is, bytes); the message names the largest part and the total."""
    available = available_memory() if available is None else available
    total = sum(need for _, _, need in parts)
    if available is None or total <= available:
        return
    flags, what, _ = max(parts, key=lambda part: part[2])
    raise UserError(f"{flags} needs about {size_text(total)} of memory for {what}, and this machine has "
                    f"{size_text(available)} available")
