"""One attempt of a sweep job at a time, and its record naming what that attempt did.

Seen on a real sweep: SIGTERM to a local launcher's process group ended the shell submitit had
started its controller with, so the launcher believed its job stopped and released sweep.lock; the
job itself took the SIGTERM for a preemption and had the controller requeue it, so a second attempt
ran on, and a relaunch started a third beside it. The job's record then kept the attempt that wrote
it last and named the newest run folder of the job's name, which the interrupted third attempt had
made. Here with a tiny fake script (no training), except the launcher test, which needs a real one.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from experiment import sweep, sweep_executor, sweep_job, sweep_plan, sweep_records
from experiment.run import Run
from tests.conftest import REPO, ctrl_c_restored
from tests.polling import wait_until
from utils.files import write_json

# A script that makes its run folder as experiment.run.Run does (metadata.json naming its pid and host),
# then sleeps; Ctrl-C ends it with an `interrupted:` line and exit 130, as utils.cli.run_main does.
# With a record's path it also writes into that record, as another process might, once the job has.
FAKE = r'''
import datetime as dt, json, os, socket, sys, time
from pathlib import Path
results, name, pause = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
folder = results / "04December2026" / "fake" / f"{name}_1"
folder.mkdir(parents=True)
(folder / "metadata.json").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                  "started": dt.datetime.now().isoformat(timespec="seconds")}))
if len(sys.argv) > 4:
    record = Path(sys.argv[4])
    while json.loads(record.read_text()).get("state") != "running":
        time.sleep(0.05)
    state = json.loads(record.read_text())
    state["attempts"].insert(0, {"started": "2026-12-03T23:36:33", "note": "another process's"})
    record.write_text(json.dumps(state))
try:
    time.sleep(pause)
except KeyboardInterrupt:
    time.sleep(0.5)  # its last files
    print("interrupted: the fake script stopped", file=sys.stderr)
    sys.exit(130)
'''


@pytest.fixture
def fake(tmp_path):
    script = tmp_path / "fake.py"
    script.write_text(FAKE)
    return script


def _job(fake, results, pause: float, *extra) -> dict:
    return {"rank": 0, "run_name": "fake_r0", "command": [sys.executable, str(fake), str(results), "fake_r0", str(pause),
                                                          *map(str, extra)], "resume_command": None}


def _other_attempts_folder(results, name="fake_r0_2"):
    """A newer run folder of the same job, made by another attempt's script (another pid)."""
    other = results / "04December2026" / "fake" / name
    other.mkdir(parents=True)
    write_json(other / "metadata.json", {"pid": 1, "host": socket.gethostname(), "started": "2026-12-04T00:00:00"})
    return other


def _still_running(attempt: dict) -> int | None:
    """The pid of an attempt's script if that process still runs, whatever its record says."""
    return sweep_records.script_running({k: v for k, v in attempt.items() if k != "ended"})


def _sleeper(seconds=60):
    """A live process and its command line, standing for an earlier attempt's script."""
    command = [sys.executable, "-c", f"import time; time.sleep({seconds})"]
    return subprocess.Popen(command, preexec_fn=ctrl_c_restored), command


def test_a_runs_metadata_names_the_process_writing_it(tmp_path):
    run = Run.create({}, dataset="d", name="n", results_dir=tmp_path)
    meta = json.loads((run.dir / "metadata.json").read_text())
    assert (meta["pid"], meta["host"]) == (os.getpid(), socket.gethostname())


def test_a_jobs_run_dir_is_the_folder_its_own_script_wrote_not_the_newest(tmp_path, fake):
    results = tmp_path / "results"
    _other_attempts_folder(results)
    result = sweep_job.SweepJob(tmp_path / "sweep", _job(fake, results, 0), results, tmp_path)()
    own = str(results / "04December2026" / "fake" / "fake_r0_1")
    assert result["run_dir"] == own
    assert json.loads((tmp_path / "sweep" / "jobs" / "r0.json").read_text())["run_dir"] == own


def test_a_job_writes_its_attempt_into_the_record_as_it_is_on_disk_when_it_ends(tmp_path, fake):
    results = tmp_path / "results"
    record = tmp_path / "sweep" / "jobs" / "r0.json"
    sweep_job.SweepJob(tmp_path / "sweep", _job(fake, results, 0, record), results, tmp_path)()
    state = json.loads(record.read_text())
    assert state["state"] == "finished"
    assert [a.get("note") for a in state["attempts"]] == ["another process's", None]  # kept, not overwritten
    assert state["attempts"][1]["returncode"] == 0


def test_a_job_does_not_start_beside_a_running_script_of_its_earlier_attempt(tmp_path, fake):
    earlier, command = _sleeper()
    try:
        job = sweep_job.SweepJob(tmp_path / "sweep", _job(fake, tmp_path / "results", 0), tmp_path / "results", tmp_path)
        attempt = {"started": "2026-12-03T23:36:30", "command": command,
                   "child": {"pid": earlier.pid, "host": socket.gethostname()}}
        before = job.write_state({"rank": 0, "attempts": [attempt]}, state="running")
        with pytest.raises(RuntimeError, match=f"earlier attempt \\(pid {earlier.pid} on .*still running"):
            job()
        assert job.read_state() == before and not (tmp_path / "results").exists()  # nothing started, nothing recorded
    finally:
        earlier.kill()
        earlier.wait()
    assert job()["state"] == "finished"  # once it has ended (a zombie counts as ended: reaped above)


def _sweep_with_a_running_attempt(tmp_path, command, pid) -> tuple[list, object]:
    """A local sweep (not run) whose job r0's record names a running script; (its argv, its folder)."""
    words = ["oml_regression.py", "--preset", "oml2020", "--steps", "10", "--eval-runs", "0", "--results-dir",
             str(tmp_path / "results"), "--name", "busy"]
    args = sweep.SweepFlags().parse_args(words)
    record = sweep_plan.plan(args, args.script_argv)
    folder = sweep_records.sweep_folder(record)
    write_json(folder / "sweep.json", record)
    attempt = {"started": "2026-12-03T23:36:33", "command": command, "child": {"pid": pid, "host": socket.gethostname()}}
    write_json(folder / "jobs" / "r0.json", {"rank": 0, "state": "running", "attempts": [attempt]})
    return words, folder


def test_a_relaunch_refuses_while_an_earlier_launchs_script_still_runs(tmp_path, capsys):
    earlier, command = _sleeper()
    try:
        words, folder = _sweep_with_a_running_attempt(tmp_path, command, earlier.pid)
        recorded = (folder / "sweep.json").read_bytes()
        with pytest.raises(SystemExit) as info:
            sweep.cli(words)
        err = capsys.readouterr().err.strip()
        assert info.value.code == 2 and "\n" not in err, err
        assert err.startswith(f"error: the script of r0 (pid {earlier.pid}) from an earlier launch is still running")
        assert f"kill -INT {earlier.pid}" in err
        # nothing written: no submission, the sweep's record as it was, its lock released
        assert (folder / "sweep.json").read_bytes() == recorded
        assert sorted(p.name for p in folder.iterdir()) == ["jobs", "sweep.json"]
    finally:
        earlier.kill()
        earlier.wait()


def test_a_pid_reused_by_another_program_is_not_the_attempts_script(tmp_path):
    other, _ = _sleeper()
    try:
        attempt = {"started": "x", "command": [sys.executable, "evaluate_omniglot.py", "--model", "m"],
                   "child": {"pid": other.pid, "host": socket.gethostname()}}
        assert sweep_records.script_running(attempt) is None
        assert sweep_records.script_running({**attempt, "child": {**attempt["child"], "host": "elsewhere"}}) is None
    finally:
        other.kill()
        other.wait()


class _Done:
    """submitit's handle of a local job whose controller shell has already ended."""
    def done(self):
        return True


def test_stopping_a_launcher_waits_for_the_script_itself_not_submitits_handle(tmp_path, fake):
    folder, results = tmp_path / "sweep", tmp_path / "results"
    job = _job(fake, results, 60)
    script = subprocess.Popen(job["command"], stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_restored)
    wait_until(lambda: (results / "04December2026" / "fake" / "fake_r0_1" / "metadata.json").is_file(),
               what="the script's run folder")
    write_json(folder / "jobs" / "r0.json", {"rank": 0, "state": "running", "attempts": [
        {"started": "2026-12-04T00:00:00", "command": job["command"],
         "child": {"pid": script.pid, "host": socket.gethostname()}}]})
    sweep_executor.stop_scripts(folder, {0: _Done()})
    assert _still_running(json.loads((folder / "jobs" / "r0.json").read_text())["attempts"][0]) is None  # a zombie at most
    assert script.wait(timeout=5) == 130 and script.stderr.read().startswith("interrupted: the fake script stopped")


def test_a_local_job_answers_sigterm_by_stopping_its_script_not_by_a_requeue(tmp_path, fake):
    """The job process gets SIGTERM from submitit's controller (which forwards its own) and directly,
    when the launcher's process group is sent it: one attempt, stopped once, recorded, no requeue."""
    folder, results = tmp_path / "sweep", tmp_path / "results"
    args = sweep.SweepFlags().parse_args(["fake.py"])
    handle = sweep_executor.make_executor(args, folder / "submitit").submit(
        sweep_job.SweepJob(folder, _job(fake, results, 60), results, tmp_path))
    record_path = folder / "jobs" / "r0.json"

    def started():
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
        ready = record.get("state") == "running" and (results / "04December2026" / "fake" / "fake_r0_1").is_dir()
        return record if ready else None
    try:
        record = wait_until(started, seconds=120, what="the job's script")
        time.sleep(0.3)  # into its sleep
        for _ in range(2):  # the controller's forward, and the group's own
            os.kill(record["job_pid"], signal.SIGTERM)
        wait_until(handle.done, seconds=60, what="the job's end")
    finally:
        handle.cancel()
    time.sleep(1.5)  # a requeue would start the next attempt within this
    state = json.loads(record_path.read_text())
    assert state["state"] == "failed" and state["error"] == "interrupted: the fake script stopped"
    [attempt] = state["attempts"]
    assert attempt["returncode"] == 130 and _still_running(attempt) is None
    assert state["run_dir"] == str(results / "04December2026" / "fake" / "fake_r0_1")
    log = "".join(p.read_text() for p in sorted((folder / "submitit").glob("*.err")))
    assert "SIGTERM received: stopping the script" in log and "this local job ends" in log
    assert "Requeued" not in "".join(p.read_text() for p in sorted((folder / "submitit").glob("*.out")))


def test_a_launchers_process_group_sigtermed_stops_its_job_before_the_lock_is_released(tmp_path):
    """`kill -TERM -<pgid>`: the launcher, submitit's controller (and its shell), the job: the launcher
    exits only once the script has stopped, and no second attempt starts. (That a relaunch then resumes
    the run: tests/test_sweep_signals.py.)"""
    results = tmp_path / "results"
    words = ["oml_regression.py", "--preset", "oml2020", "--width", "16", "--steps", "100000", "--log-every", "10",
             "--save-every", "10", "--eval-runs", "0", "--no-progress", "--seed", "4", "--results-dir", str(results),
             "--name", "g"]
    launcher = subprocess.Popen([sys.executable, "-m", "experiment.sweep", *words], cwd=REPO,
                                env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        run = wait_until(lambda: next((r for r in results.glob("*/sine/g_r0_1") if (r / "checkpoint.pt").is_file()),
                                      None), what="a checkpoint")
        folder = sweep_records.find_sweep(results, "g")
        os.killpg(launcher.pid, signal.SIGTERM)
        _, err = launcher.communicate(timeout=200)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert launcher.returncode == 130, err
    state = json.loads((folder / "jobs" / "r0.json").read_text())
    assert not (folder / "sweep.lock").exists()
    assert _still_running(state["attempts"][-1]) is None  # stopped before the lock was released
    time.sleep(2)  # a requeue by an orphaned controller would start attempt 2 within this
    state = json.loads((folder / "jobs" / "r0.json").read_text())
    assert len(state["attempts"]) == 1 and state["state"] == "failed" and state["run_dir"] == str(run)
    assert state["error"].startswith("interrupted: the checkpoint of step")
    assert len(list(results.glob("*/sine/g_r0_*"))) == 1


def test_an_interrupted_evaluation_exits_130_keeping_its_partial_results(tmp_path, monkeypatch, capsys):
    """Ctrl-C (a stopped sweep job's) mid-evaluation: evaluate_omniglot keeps results.partial.json and
    exits 130, not 0, so its job is recorded failed and a relaunch evaluates it again, never 'finished'."""
    import evaluate_omniglot
    from tests.omniglot_fixtures import tiny_network_and_tree
    from utils.cli import run_main

    data, _, _, ckpt = tiny_network_and_tree(tmp_path, {"image_size": 12, "channels": 4, "strides": (2, 2),
                                                        "n_outputs": 16, "n_classes": 10, "class_split": 5})
    real = evaluate_omniglot.evaluate

    def interrupted_after_the_first_class_count(*args, report, **kwargs):
        def report_then_stop(n, entry):
            report(n, entry)
            raise KeyboardInterrupt
        return real(*args, report=report_then_stop, **kwargs)
    monkeypatch.setattr(evaluate_omniglot, "evaluate", interrupted_after_the_first_class_count)
    with pytest.raises(SystemExit) as info:
        run_main(evaluate_omniglot.main, evaluate_omniglot.get_args_parser(),
                 ["--model", str(ckpt), "--name", "cut", "--runs", "2", "--schedule", "2:4", "--search-runs", "1",
                  "--path", str(data), "--results-dir", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"),
                  "--no-progress", "--nonstandard-data"])
    assert info.value.code == 130 and capsys.readouterr().err.strip() == "interrupted"
    [run] = (tmp_path / "results").glob("*/omniglot_eval/cut_1")
    assert (run / "results.partial.json").is_file() and not (run / "results.json").exists()
