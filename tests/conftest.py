import os
import signal
import sys
from pathlib import Path

# pytest.ini runs the suite on one worker process per core (pytest-xdist). Each worker and the
# scripts it starts then keep to one torch thread: with two threads under load the small `cpu`
# network ran about 10x slower (docs/benchmarks.md).
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED_OMNIGLOT = REPO.parent / "shared" / "omniglot"


def ctrl_c_restored():
    """preexec_fn of a test's child that must stop on Ctrl-C: a test run started in the background
    (nohup, a runner's job) passes SIGINT on ignored, and Python then installs no KeyboardInterrupt
    handler, so the child would run to its end. The jobs' own scripts get this from the job
    (experiment/sweep_job.py)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def one_line_error(capsys, main, parser, argv) -> str:
    """Run a script's main through utils.cli.run_main and return its error line, checking that it
    exited with status 2 and printed exactly one `error: ...` line."""
    import pytest

    from utils.cli import run_main

    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        run_main(main, parser, argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def die_at_step(monkeypatch, cls, n: int):
    """Make `cls.step` raise KeyboardInterrupt on its n-th call (a run killed mid-way); returns a
    function that puts the real step back (to resume the run)."""
    original, calls = cls.step, {"n": 0}

    def dying_step(self):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(cls, "step", dying_step)
    return lambda: monkeypatch.setattr(cls, "step", original)
