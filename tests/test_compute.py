"""The compute of the evidence: each sweep job records its script's CPU time (experiment/sweep_job.py),
the summaries count every sweep's jobs and hours with the command that reruns it
(experiment/sweep_compute.py), and docs/compute.md's table shows them (analysis/compute_table.py).

Sweep folders are made by hand (sweep.json and jobs/r<i>.json as the launcher and the jobs write
them), so no sweep runs here; the one child process is a short busy loop.
"""
import json
import subprocess
import sys
import time

from experiment import sweep_job


def _busy_child(seconds: float) -> subprocess.Popen:
    code = f"import time\nt = time.process_time()\nwhile time.process_time() - t < {seconds}: pass"
    return subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)


def test_an_ended_attempt_records_its_childs_cpu_seconds():
    child = _busy_child(0.3)
    start = time.time()
    code, usage = sweep_job._reap(child.pid)
    wall = time.time() - start
    attempt = sweep_job.attempt_ended({"started": "2026-12-03T10:00:00"}, code, usage)
    assert attempt["returncode"] == 0 and attempt["started"] == "2026-12-03T10:00:00" and "ended" in attempt
    # the child's own CPU time: at least the 0.3 s it spun, at most its wall time (one thread)
    assert 0.3 <= attempt["cpu_s"] <= wall + 0.05
    assert json.loads(json.dumps(attempt)) == attempt


def test_unknown_usage_is_recorded_as_none_never_zero():
    assert sweep_job.attempt_ended({}, 1, None)["cpu_s"] is None


def test_a_stopped_childs_cpu_time_is_returned_by_stop_child():
    job = sweep_job.SweepJob.__new__(sweep_job.SweepJob)
    job._child = _busy_child(60)
    time.sleep(0.5)
    code, usage = job._stop_child()  # Ctrl-C: the busy loop ends with KeyboardInterrupt
    assert code != 0 and usage.ru_utime + usage.ru_stime > 0.05 and job._child is None
    assert job._stop_child() is None  # nothing left to stop
