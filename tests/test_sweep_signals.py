"""SIGTERM outside SLURM: `kill` of a training run, and of a local sweep's launcher.

Both must stop the way Ctrl-C does: the run keeps its last checkpoint, says so on stderr, and
leaves no run.lock (or sweep.lock) behind; what was stopped resumes to an uninterrupted run's
bytes. (Preemption inside a SLURM job: tests/test_sweep_slurm.py.)
"""
import json
import os
import signal
import subprocess
import sys

import oml_regression
from experiment import sweep, sweep_records
from experiment.lock import LOCK_NAME
from tests.conftest import REPO
from tests.polling import wait_until

TRAIN = ["--preset", "oml2020", "--width", "16", "--steps", "200", "--log-every", "10", "--save-every", "10",
         "--eval-runs", "0", "--no-progress", "--seed", "4"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _checkpointed(results, pattern):
    runs = [r for r in results.glob(pattern) if (r / "checkpoint.pt").is_file()]
    return runs[0] if runs else None


def test_a_sigtermed_training_run_keeps_its_checkpoint_says_so_and_frees_its_lock(tmp_path):
    results = tmp_path / "results"
    first = subprocess.Popen([sys.executable, "oml_regression.py", *TRAIN, "--steps", "100000", "--name", "t",
                              "--results-dir", str(results)], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    run = wait_until(lambda: _checkpointed(results, "*/sine/t_1"), what="a checkpoint")
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 130, err
    assert err.splitlines()[-1].startswith("interrupted: SIGTERM received; the checkpoint of step ")
    assert err.splitlines()[-1].endswith(f"is kept; continue with --resume {run}")
    assert not (run / LOCK_NAME).exists()


def test_a_sigtermed_local_sweep_stops_its_jobs_and_a_relaunch_resumes_them(tmp_path, monkeypatch):
    results = tmp_path / "results"
    argv = ["-m", "experiment.sweep", "oml_regression.py", *TRAIN, "--results-dir", str(results), "--name", "s"]
    launcher = subprocess.Popen([sys.executable, *argv], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    run = wait_until(lambda: _checkpointed(results, "*/sine/s_r0_1"), what="a checkpoint")
    folder = sweep_records.find_sweep(results, "s")
    child = json.loads((folder / "jobs" / "r0.json").read_text())["attempts"][-1]["child"]["pid"]
    launcher.send_signal(signal.SIGTERM)
    _, err = launcher.communicate(timeout=60)
    assert launcher.returncode == 130 and err.splitlines()[-1] == "interrupted: SIGTERM received", err
    assert not (folder / "sweep.lock").exists()

    def script_gone():
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        return False
    wait_until(script_gone, what="the job's script to stop")
    assert not (run / LOCK_NAME).exists()
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] < 200  # stopped mid-run
    assert json.loads((folder / "jobs" / "r0.json").read_text())["error"].startswith("interrupted: the checkpoint")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the environment (ENV) the first launch gave its job
    sweep.cli(argv[2:])  # the relaunch, in this process (its job and script still in their own): no SystemExit
    state = json.loads((folder / "jobs" / "r0.json").read_text())
    assert state["state"] == "finished" and state["attempts"][-1]["resumed"] == str(run)
    whole = oml_regression.main(oml_regression.get_args_parser().parse_args(
        [*TRAIN, "--name", "s_r0", "--results-dir", str(tmp_path / "whole")]))
    for name in ("checkpoint.pt", "metrics.jsonl"):
        assert (run / name).read_bytes() == (whole / name).read_bytes(), name
