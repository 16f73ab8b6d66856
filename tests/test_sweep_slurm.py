"""The SLURM path of experiment/sweep.py against a fake SLURM on PATH that runs the jobs.

`sbatch` records the batch script and, when asked to, runs each array task in the background as
slurmd would (the SLURM_* variables set, the script's `srun` line executed); `scontrol requeue`
makes that runner start the task again under the same job id once it has ended; `squeue` lists
the tasks still running. With it a job is preempted the way SLURM does it: SIGTERM to every
process of the job (the script's child included) and, before a time limit, submitit's USR2
first. The preempted job must resume its run folder and end with the bytes of an uninterrupted
run. Also: no SLURM on the machine, an sbatch that refuses the job, the new sbatch flags, a
relaunch while jobs are queued. No cluster needed.
"""
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

import oml_regression
from experiment import sweep, sweep_executor, sweep_records
from experiment.lock import LOCK_NAME
from tests.polling import wait_until
from utils.errors import UserError

SBATCH = r'''#!{python}
import os, re, shutil, subprocess, sys
from pathlib import Path
state = Path(os.environ["FAKE_SLURM"])
script = Path(sys.argv[-1])
refusal = state / "refuse"
if refusal.is_file():
    print(refusal.read_text().strip(), file=sys.stderr)
    sys.exit(1)
counter = state / "next_id"
job = int(counter.read_text()) if counter.is_file() else 1234
counter.write_text(str(job + 1))
kept = state / "scripts" / f"{{job}}.sh"
shutil.copy(script, kept)  # submitit moves its file away once sbatch returns
found = re.search(r"^#SBATCH --array=0-(\d+)", kept.read_text(), re.M)
if (state / "run").is_file():
    for task in range(int(found.group(1)) + 1) if found else [None]:
        subprocess.Popen([sys.executable, str(state / "slurmd.py"), str(kept), str(job), str(task)],
                         start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
print(f"Submitted batch job {{job}}")
'''

SLURMD = r'''import os, subprocess, sys
from pathlib import Path
state = Path(__file__).parent
script, job, task = sys.argv[1:]
job_id = job if task == "None" else f"{job}_{task}"
env = dict(os.environ, SLURM_JOB_ID=job if task == "None" else f"{job}{task}", SLURM_JOB_NUM_NODES="1",
           SLURM_NODEID="0", SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NTASKS="1", SLURM_JOB_NODELIST="node1")
if task != "None":
    env.update(SLURM_ARRAY_JOB_ID=job, SLURM_ARRAY_TASK_ID=task)
(state / "queue" / job_id).touch()
while True:
    with open(state / f"slurmd_{job_id}.log", "a") as log:
        code = subprocess.call(["bash", script], env=env, stdout=log, stderr=log)
    requeued = state / f"requeue_{job_id}"
    if not requeued.is_file():
        break
    requeued.unlink()
(state / "queue" / job_id).unlink()
(state / f"exit_{job_id}").write_text(str(code))
'''

SRUN = r'''#!{python}
import os, sys
args = sys.argv[1:]
streams = {{}}
while args and args[0].startswith("-"):
    flag = args.pop(0)
    if flag in ("--output", "--error"):
        streams[flag] = args.pop(0)
fill = {{"%A": os.environ.get("SLURM_ARRAY_JOB_ID", ""), "%a": os.environ.get("SLURM_ARRAY_TASK_ID", ""),
        "%j": os.environ["SLURM_JOB_ID"], "%t": "0"}}
for flag, fd in (("--output", 1), ("--error", 2)):
    if flag in streams:
        path = streams[flag]
        for key, value in fill.items():
            path = path.replace(key, value)
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644), fd)
os.execvp(args[0], args)
'''

SCONTROL = r'''#!{python}
import os, sys
from pathlib import Path
state = Path(os.environ["FAKE_SLURM"])
with open(state / "scontrol.log", "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\n")
if (state / "refuse_requeue").is_file():
    print("scontrol: error: Job has already finished", file=sys.stderr)
    sys.exit(1)
if sys.argv[1:2] == ["requeue"]:
    (state / f"requeue_{{sys.argv[2]}}").touch()
'''

SQUEUE = r'''#!{python}
import os
from pathlib import Path
for job in sorted((Path(os.environ["FAKE_SLURM"]) / "queue").iterdir()):
    print(job.name)
'''

TRAIN = ["--preset", "oml2020", "--width", "16", "--steps", "200", "--log-every", "10", "--save-every", "10",
         "--eval-runs", "2", "--eval-test-samples", "20", "--eval-steps", "2", "--eval-lr", "0.01", "--no-progress",
         "--seed", "3"]


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    """The fake SLURM's state folder; `touch run` in it to have sbatch run the jobs."""
    bin_dir, state = tmp_path / "bin", tmp_path / "slurm"
    for folder in (bin_dir, state, state / "scripts", state / "queue"):
        folder.mkdir()
    for name, text in (("sbatch", SBATCH), ("srun", SRUN), ("scontrol", SCONTROL), ("squeue", SQUEUE)):
        (bin_dir / name).write_text(text.format(python=sys.executable))
        (bin_dir / name).chmod(0o755)
    (state / "slurmd.py").write_text(SLURMD)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(state))
    return state


def sweep_cli(argv, capsys) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `python -m experiment.sweep ARGV`, run in-process."""
    capsys.readouterr()
    try:
        sweep.cli(argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def files_under(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- refusals before anything is written ---------------------------------------------------------

def test_no_slurm_here_is_one_line_and_nothing_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code, _, err = sweep_cli(["oml_regression.py", "--seed", "1", "2", "--executor", "slurm",
                              "--results-dir", str(tmp_path / "results")], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: --executor slurm: no SLURM on this machine")
    assert not (tmp_path / "results").exists()


def test_an_sbatch_refusal_is_one_line_with_its_message_and_leaves_nothing(tmp_path, slurm, capsys):
    (slurm / "refuse").write_text("sbatch: error: Batch job submission failed: Invalid account or account/partition "
                                  "combination specified")
    results = tmp_path / "results"
    argv = ["oml_regression.py", *TRAIN, "--method", "oml", "pretraining", "--executor", "slurm", "--account", "nope",
            "--results-dir", str(results), "--name", "refused"]
    code, _, err = sweep_cli(argv, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: sbatch refused the sweep: sbatch: error: Batch job submission failed: Invalid account")
    assert not results.exists()  # nor its dated parents
    # a relaunch of an existing sweep refused by sbatch leaves that sweep's folder as it was
    (slurm / "refuse").unlink()
    assert sweep_cli(argv, capsys)[0] == 0
    folder = sweep_records.find_sweep(results, "refused")
    before = files_under(folder)
    (slurm / "refuse").write_text("sbatch: error: QOSMaxSubmitJobPerUserLimit")
    code, _, err = sweep_cli(argv, capsys)
    assert code == 2 and err.count("\n") == 1 and "QOSMaxSubmitJobPerUserLimit" in err
    assert files_under(folder) == before


def test_account_qos_constraint_options_and_the_requeue_limit_reach_sbatch(tmp_path, slurm):
    folder = sweep.main(*_parsed(["oml_regression.py", *TRAIN, "--method", "oml", "pretraining", "--executor", "slurm",
                                  "--account", "lab", "--qos", "high", "--constraint", "a100|h100",
                                  "--slurm-option", "reservation=mine", "--slurm-option", "exclusive",
                                  "--requeue-limit", "30", "--results-dir", str(tmp_path / "results"), "--name", "c"]))
    text = (slurm / "scripts" / "1234.sh").read_text()
    for line in ("#SBATCH --account=lab", "#SBATCH --qos=high", "#SBATCH --constraint='a100|h100'",
                 "#SBATCH --reservation=mine", "#SBATCH --exclusive", "#SBATCH --array=0-1%2"):
        assert line in text, line
    import submitit
    delayed = submitit.helpers.DelayedSubmission.load(submitit.SlurmJob(folder / "submitit", "1234_1").paths.submitted_pickle)
    assert delayed._timeout_countdown == 30
    options = json.loads((folder / "sweep.json").read_text())["executor_options"]
    assert options["requeue_limit"] == 30 and options["slurm_options"] == ["reservation=mine", "exclusive"]


def _parsed(argv):
    args, rest = sweep.get_args_parser().parse_known_args(argv)
    return args, rest


def test_a_relaunch_leaves_the_jobs_slurm_still_holds(tmp_path, slurm, capsys):
    argv = ["oml_regression.py", *TRAIN, "--method", "oml", "pretraining", "srnn", "--executor", "slurm",
            "--results-dir", str(tmp_path / "results"), "--name", "q"]
    folder = sweep.main(*_parsed(argv))
    for job_id in ("1234_0", "1234_2"):  # still pending or running; 1234_1 ended without a record (node lost)
        (slurm / "queue" / job_id).touch()
    capsys.readouterr()
    sweep.main(*_parsed(argv))
    assert "2 still in SLURM's queue (r0, r2)" in capsys.readouterr().out
    assert "#SBATCH --array" not in (slurm / "scripts" / "1235.sh").read_text()  # one job: r1 alone
    assert [job["job_ids"] for job in json.loads((folder / "sweep.json").read_text())["jobs"]] == [
        ["1234_0"], ["1234_1", "1235"], ["1234_2"]]


# --- preemption: SIGTERM to every process, in either order, and USR2 before it -------------------

@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The run a preempted job must equal, byte for byte (the same flags and run name, not preempted)."""
    results = tmp_path_factory.mktemp("whole")
    return oml_regression.main(oml_regression.get_args_parser().parse_args([*TRAIN, "--name", "pre_r0",
                                                                            "--results-dir", str(results)]))


def _running_child(folder: Path, results: Path) -> tuple[int, int, Path]:
    """(the job's pid, its script's pid, the run folder) once the script has written a checkpoint."""
    def ready():
        try:
            state = json.loads((folder / "jobs" / "r0.json").read_text())
        except (OSError, ValueError):
            return None
        runs = list(results.glob("*/sine/pre_r0_1"))
        if state.get("state") == "running" and runs and (runs[0] / "checkpoint.pt").is_file():
            return state["job_pid"], state["attempts"][-1]["child"]["pid"], runs[0]
        return None
    return wait_until(ready, what="the first checkpoint")


# Each order starts with the script held (SIGSTOP) after its first checkpoint, so that the run cannot
# end before the signals; "script first" lets it run on while its SIGTERM arrives, before the job's.
# A signal after SIGCONT follows at once: a fast machine can finish the 200 steps in a pause.
SIGNAL_ORDERS = {
    "script first": [("child", signal.SIGCONT), ("child", signal.SIGTERM), ("job", signal.SIGTERM)],
    "job first": [("job", signal.SIGTERM), ("child", signal.SIGTERM), ("child", signal.SIGCONT)],
    "time limit: USR2 then SIGTERM": [("job", signal.SIGUSR2), ("job", signal.SIGTERM), ("child", signal.SIGTERM),
                                      ("child", signal.SIGCONT)],
}


@pytest.mark.parametrize("order", SIGNAL_ORDERS)
def test_a_preempted_job_is_requeued_and_ends_with_the_bytes_of_an_uninterrupted_run(tmp_path, slurm, uninterrupted,
                                                                                      order):
    (slurm / "run").touch()
    results = tmp_path / "results"
    folder = sweep.main(*_parsed(["oml_regression.py", *TRAIN, "--executor", "slurm", "--timeout", "30",
                                  "--results-dir", str(results), "--name", "pre"]))
    job, child, run = _running_child(folder, results)
    os.kill(child, signal.SIGSTOP)
    for target, signum in SIGNAL_ORDERS[order]:
        os.kill(job if target == "job" else child, signum)
        if signum != signal.SIGCONT:
            time.sleep(0.3)
    assert wait_until(lambda: (slurm / "exit_1234").is_file(), what="the job's end") and \
        (slurm / "exit_1234").read_text() == "0", (slurm / "slurmd_1234.log").read_text()
    state = json.loads((folder / "jobs" / "r0.json").read_text())
    assert state["state"] == "finished" and len(state["attempts"]) == 2
    assert state["attempts"][1]["resumed"] == str(run) and state["attempts"][1]["command"][-2:] == ["--resume", str(run)]
    assert (slurm / "scontrol.log").read_text() == "requeue 1234\n"  # requeued once, whatever came second
    log = "".join(p.read_text() for p in sorted((folder / "submitit").glob("*.err")))  # the job's stderr
    first = next(signum for target, signum in SIGNAL_ORDERS[order] if target == "job")
    assert f"{first.name} received: stopping the script" in log
    assert "interrupted: the checkpoint of step" in (folder / "jobs" / "r0.stderr").read_text()
    for name in ("checkpoint.pt", "metrics.jsonl", "results.json"):
        assert (run / name).read_bytes() == (uninterrupted / name).read_bytes(), name
    assert not (run / LOCK_NAME).exists()


def _relaunch_resumes_to_the_uninterrupted_bytes(argv, slurm, folder, run, uninterrupted):
    """Launch the sweep again: its job (SLURM id 1235) resumes `run` and ends with the bytes of an
    uninterrupted run."""
    sweep.main(*_parsed(argv))
    wait_until(lambda: (slurm / "exit_1235").is_file(), what="the relaunched job's end")
    state = json.loads((folder / "jobs" / "r0.json").read_text())
    assert state["state"] == "finished" and state["attempts"][-1]["resumed"] == str(run), state
    for name in ("checkpoint.pt", "metrics.jsonl", "results.json"):
        assert (run / name).read_bytes() == (uninterrupted / name).read_bytes(), name


def test_a_refused_requeue_is_recorded_and_a_relaunch_resumes(tmp_path, slurm, uninterrupted, capsys):
    """scancel (or a requeue SLURM will not take) also ends in SIGTERM: the job stops, keeps its
    checkpoint and says it was not requeued; launching the sweep again resumes it."""
    (slurm / "run").touch()
    (slurm / "refuse_requeue").touch()
    results = tmp_path / "results"
    argv = ["oml_regression.py", *TRAIN, "--executor", "slurm", "--results-dir", str(results), "--name", "pre"]
    folder = sweep.main(*_parsed(argv))
    job, child, run = _running_child(folder, results)
    os.kill(child, signal.SIGSTOP)
    os.kill(job, signal.SIGTERM)
    os.kill(child, signal.SIGCONT)
    wait_until(lambda: (slurm / "exit_1234").is_file(), what="the job's end")
    state = json.loads((folder / "jobs" / "r0.json").read_text())
    assert state["state"] == "preempted" and "not requeued" in state["error"] and "relaunch the sweep" in state["error"]
    assert not (run / LOCK_NAME).exists() and (run / "checkpoint.pt").is_file()
    (slurm / "refuse_requeue").unlink()
    _relaunch_resumes_to_the_uninterrupted_bytes(argv, slurm, folder, run, uninterrupted)


def test_flags_the_sweep_sets_are_refused_in_slurm_option():
    with pytest.raises(UserError, match="--slurm-option time: the sweep sets it, through --timeout"):
        sweep_executor.sbatch_extra(["time=10"])
    with pytest.raises(UserError, match="no-requeue"):
        sweep_executor.sbatch_extra(["--no-requeue"])
    assert sweep_executor.sbatch_extra(["--reservation=x", "exclusive"]) == {"reservation": "x", "exclusive": True}


def test_after_a_node_failure_a_relaunch_frees_the_dead_nodes_lock_and_resumes(tmp_path, slurm, uninterrupted, capsys):
    """A node that dies takes the job's processes without a signal, and its run.lock names a host this
    one cannot check. SLURM no longer holding that job id is what says the lock is stale."""
    (slurm / "run").touch()
    results = tmp_path / "results"
    argv = ["oml_regression.py", *TRAIN, "--executor", "slurm", "--results-dir", str(results), "--name", "pre"]
    folder = sweep.main(*_parsed(argv))
    job, child, run = _running_child(folder, results)
    os.kill(child, signal.SIGKILL)
    os.kill(job, signal.SIGKILL)
    wait_until(lambda: (slurm / "exit_1234").is_file(), what="the job's end")
    for path, holder in ((run / LOCK_NAME, None), (folder / "jobs" / "r0.json", "attempts")):
        record = json.loads(path.read_text())
        (record["attempts"][-1]["child"] if holder else record)["host"] = "node-that-died"
        path.write_text(json.dumps(record))
    _relaunch_resumes_to_the_uninterrupted_bytes(argv, slurm, folder, run, uninterrupted)
    assert "which SLURM (job 1234 is no longer queued) ended" in (folder / "jobs" / "r0.stderr").read_text() + \
        "".join(p.read_text() for p in (folder / "submitit").glob("*.err"))
