"""One writer per run folder: `run.lock`, created with O_CREAT|O_EXCL, names its holder.

Two processes training the same folder would both append to metrics.jsonl and overwrite each
other's checkpoints. The lock file holds {"pid", "host", "since"}; a second process refuses with
a line naming that holder. A lock left by a killed process (its pid is gone on this host) is
stale and taken over with a note. A lock from another host is never taken over: this host
cannot tell whether that process still runs.

SIGTERM (`kill`, a scheduler's preemption or time limit) would end a process without running its
`finally` blocks, leaving the lock behind. While a process holds a lock, SIGTERM therefore raises
`Terminated`, a KeyboardInterrupt: it stops the work the way Ctrl-C does (the training loop keeps
its last checkpoint and says so) and the lock is released on the way out. A process that was
started with SIGTERM ignored (a sweep job's script, experiment/sweep_job.py) keeps ignoring it: the
parent that ignored it for the child answers the signal.
"""
import datetime as dt
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

from utils.errors import UserError
from utils.messages import note

LOCK_NAME = "run.lock"
# A lock file still empty after this long was left by a process killed between creating and
# filling it (both happen within microseconds).
EMPTY_LOCK_GRACE_S = 10.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _holder(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None
    except (OSError, ValueError):
        return None


def _stale(path: Path, holder: dict | None) -> str | None:
    """Why the lock can be taken over, or None while its holder may be running."""
    if holder is None:
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return "it was just released"
        return f"it names no holder and is {age:.0f} s old" if age > EMPTY_LOCK_GRACE_S else None
    if holder.get("host") == socket.gethostname() and not _alive(holder["pid"]):
        return f"its holder, pid {holder['pid']} on {holder['host']}, is no longer running"
    return None


class Terminated(KeyboardInterrupt):
    """SIGTERM while holding a lock: unwinds like Ctrl-C, so `finally` blocks release the lock."""


_held: set[str] = set()    # the locks this process holds
_previous_handler = None   # SIGTERM's handler before the first of them was taken


def _raise_terminated(signum, frame):
    raise Terminated(f"{signal.Signals(signum).name} received")


def _answer_sigterm() -> None:
    global _previous_handler
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers; the main thread's own code answers then
    current = signal.getsignal(signal.SIGTERM)
    if current in (signal.SIG_IGN, _raise_terminated):
        return  # ignored by whoever started us (they answer it), or answered already
    _previous_handler = current
    signal.signal(signal.SIGTERM, _raise_terminated)


def _restore_sigterm() -> None:
    global _previous_handler
    if (not _held and _previous_handler is not None and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is _raise_terminated):
        signal.signal(signal.SIGTERM, _previous_handler)
        _previous_handler = None


def acquire(folder, name: str = LOCK_NAME, what: str = "run folder") -> Path:
    """Take `folder`/`name` or raise a UserError naming who holds it; SIGTERM raises Terminated until
    the last lock this process holds is released."""
    path = Path(folder) / name
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": dt.datetime.now().isoformat(timespec="seconds")}
    for _ in range(3):  # a stale lock is removed and the exclusive create tried again
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            reason = _stale(path, holder)
            if reason is None:
                who = (f"pid {holder['pid']} on {holder.get('host')} since {holder.get('since')}" if holder
                       else "a process that is still writing the lock file")
                raise UserError(f"{what} '{folder}' is in use by {who} ({path}); wait for it to finish or stop "
                                f"it; if it is not running, delete {path}") from None
            note(f"taking over the stale lock {path}: {reason}")
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(me) + "\n")
        _held.add(str(path))
        _answer_sigterm()
        return path
    raise UserError(f"could not take the lock {path}: other processes keep taking it; try again")


def release(path) -> None:
    """Remove the lock if this process holds it (never another's, e.g. after a takeover)."""
    if path is None:
        return
    path = Path(path)
    holder = _holder(path)
    if holder is not None and holder["pid"] == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)
    _held.discard(str(path))
    _restore_sigterm()
