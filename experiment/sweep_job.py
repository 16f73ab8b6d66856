"""One job of a sweep, as submitit runs it: the script in a child process, its record
(jobs/r<i>.json), a resumed run folder, and SLURM's stop signals answered by checkpoint and requeue.

Preemption and time-outs: a job is a submitit Checkpointable. SLURM warns of the time limit with
USR2 (submitit's --signal) and preempts, or reaches the limit, with SIGTERM to every process of
the job; the job answers the first of these (later ones are noted and ignored): its checkpoint()
stops the script with Ctrl-C (the training loop keeps its last periodic checkpoint and releases
run.lock), and submitit requeues the job, which resumes that run folder. The script runs in a
child process that ignores both signals, so only the job decides. `--requeue-limit` bounds the
requeues after a time-out (submitit's max_num_timeout); preemptions are not counted.

Under submitit's local executor SIGTERM is not a preemption but someone stopping the sweep (`kill`
of its process group, or the launcher's own stop: experiment/sweep_executor.stop_scripts). A requeue
would have submitit's local controller start the job again at once, beside a relaunch; so a local
job answers SIGTERM by stopping its script with Ctrl-C and ending, recorded as failed with the
script's `interrupted: ...` line, and the same sweep command resumes it. Its USR2 (the local
--timeout) is still checkpoint and requeue.

The record: a job's attempt is written back into the record as it is on disk when the attempt ends
(never a copy read when it began, which would erase what another process wrote meanwhile), and its
run folder is the one its own script wrote (metadata.json names the script's pid and host), never
merely the newest folder of the job's name. A job does not start while a script of an earlier
attempt of it still runs on this host (experiment.sweep_records.script_running).

submitit pickles a SweepJob by reference to this module, which the job process imports.
"""
import contextlib
import datetime as dt
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path

import submitit

from experiment.lock import LOCK_NAME
from experiment.sweep_records import JOBS_DIR, script_running
from utils.files import write_json
from utils.messages import note

# experiment.checkpoint's; not imported, so that the job process (which imports this module) stays free of
# torch, whose import costs each job seconds (tests/test_sweep.py checks both)
CHECKPOINT_NAME = "checkpoint.pt"
STOP_WAIT_S = 120  # how long checkpoint() waits for the script to stop after Ctrl-C


def _run_folders(results_dir: Path, run_name: str) -> list[Path]:
    """This job's run folders (<results-dir>/<date>/<dataset>/<run_name>_<n>), oldest attempt first."""
    pattern = re.compile(re.escape(run_name) + r"_(\d+)")
    found = [p for p in Path(results_dir).glob(f"*/*/{run_name}_*") if pattern.fullmatch(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(pattern.fullmatch(p.name).group(1)))


def _own_run_folder(results_dir, run_name: str, attempt: dict) -> str | None:
    """The run folder an attempt's script wrote: the one it resumed, else the one whose metadata.json
    names the script's pid and host and a start no earlier than the attempt's; None if it made none.
    Never simply the newest folder of the job's name: another attempt may have made that one."""
    if attempt.get("resumed"):
        return attempt["resumed"]
    child = attempt.get("child") or {}
    for run in reversed(_run_folders(Path(results_dir), run_name)):
        try:
            meta = json.loads((run / "metadata.json").read_text())
        except (OSError, ValueError):
            continue
        if (isinstance(meta, dict) and meta.get("pid") == child.get("pid") and meta.get("host") == child.get("host")
                and str(meta.get("started", "")) >= attempt["started"]):
            return str(run)
    return None


def _error_text(stderr_path: Path, since: int) -> str:
    """The script's one-line `error:` message of this attempt, else the last lines it wrote."""
    try:
        with open(stderr_path, "rb") as handle:
            handle.seek(since)
            lines = [line for line in handle.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no standard error recorded"
    errors = [line for line in lines if line.startswith(("error:", "interrupted:"))]
    return errors[-1] if errors else "\n".join(lines[-5:]) or "no message"


STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)  # SLURM's time-limit warning (submitit's), preemption and the limit


def _child_setup():
    # The job, not the script, answers SLURM's signals, which reach every process of the job;
    # Ctrl-C must work even when the job inherited it ignored (as background processes do).
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def attempt_ended(attempt: dict, returncode: int, usage) -> dict:
    """The attempt's record completed when its script has ended: when, its exit status, and the CPU
    seconds (user + system) of that child as the kernel counted them on its exit (os.wait4's resource
    usage: the script and any process of its own it waited for); None where the usage is unknown,
    never a zero that would read as measured."""
    attempt.update(ended=dt.datetime.now().isoformat(timespec="seconds"), returncode=returncode,
                   cpu_s=None if usage is None else round(usage.ru_utime + usage.ru_stime, 3))
    return attempt


def _reap(pid: int, options: int = 0):
    """os.wait4 on the child: (its exit code, its resource usage), or None while it still runs (WNOHANG)."""
    ended, status, usage = os.wait4(pid, options)
    return None if ended == 0 else (os.waitstatus_to_exitcode(status), usage)


def _wait_for(child: subprocess.Popen):
    """(exit code, resource usage) of the ended child, which is then marked reaped so Popen never waits
    for it again. Where SIGCHLD was inherited ignored, the kernel reaps the child itself and leaves no
    status: exit code 0 and no usage then, as Popen.wait would say."""
    try:
        code, usage = _reap(child.pid)
    except ChildProcessError:
        code, usage = 0, None
    child.returncode = code
    return code, usage


def _submitit_job_id() -> str | None:
    try:
        return submitit.JobEnvironment().job_id
    except RuntimeError:
        return None  # called outside a submitit job (tests, a direct call)


def _submitit_cluster() -> str | None:
    try:
        return submitit.JobEnvironment().cluster  # "slurm", "local"
    except RuntimeError:
        return None


class SweepJob(submitit.helpers.Checkpointable):
    """One job of a sweep: runs its command in a child process, resuming its own run folder."""

    def __init__(self, sweep_dir, job: dict, results_dir, cwd):
        self.sweep_dir = str(sweep_dir)
        self.rank = job["rank"]
        self.run_name = job["run_name"]
        self.command = list(job["command"])
        self.resume_command = list(job["resume_command"]) if job["resume_command"] else None
        self.results_dir = str(results_dir)
        self.cwd = str(cwd)
        self._child = None
        # The job ids SLURM no longer holds, checked by the launcher (squeue) when it resubmitted this job:
        # a process of theirs cannot still be running, so a run.lock naming one is stale.
        self.ended_job_ids = ()

    def __getstate__(self):
        return {**self.__dict__, "_child": None}

    @property
    def state_path(self) -> Path:
        return Path(self.sweep_dir) / JOBS_DIR / f"r{self.rank}.json"

    def read_state(self) -> dict:
        return json.loads(self.state_path.read_text()) if self.state_path.is_file() else {"rank": self.rank, "attempts": []}

    def write_state(self, record: dict, **changes) -> dict:
        record.update(changes)
        write_json(self.state_path, record)
        return record

    def command_now(self, state: dict) -> tuple[list, str | None]:
        """(the command, the run folder it resumes): `--resume` when a run of this job holds a checkpoint."""
        runs = _run_folders(Path(self.results_dir), self.run_name)
        if self.resume_command and runs and (runs[-1] / CHECKPOINT_NAME).is_file():
            self._free_lock_of_previous_attempt(runs[-1], state)
            return self.resume_command + ["--resume", str(runs[-1])], str(runs[-1])
        return self.command, None

    def _free_lock_of_previous_attempt(self, run: Path, state: dict) -> None:
        """A requeued job may start on another host, where run.lock of its own killed attempt is not
        recognisable as stale. Requeue ends the previous attempt first, so a lock naming this job's
        previous child, left under the same job id, is removed; so is one left under a job id SLURM no
        longer holds (a node that failed, a job SLURM did not requeue, relaunched). Any other lock is
        left to experiment.lock."""
        lock = run / LOCK_NAME
        last = state["attempts"][-1] if state.get("attempts") else {}
        try:
            holder = json.loads(lock.read_text())
        except (OSError, ValueError):
            return
        job_id = _submitit_job_id()
        ended = job_id is not None and last.get("job_id") in (job_id, *getattr(self, "ended_job_ids", ()))
        if ended and {"pid": holder.get("pid"), "host": holder.get("host")} == last.get("child"):
            how = "the requeue" if last.get("job_id") == job_id else f"SLURM (job {last['job_id']} is no longer queued)"
            note(f"removing {lock}: it was taken by this job's previous attempt (pid {holder['pid']} on "
                 f"{holder['host']}), which {how} ended")
            lock.unlink(missing_ok=True)

    def _answer_stop_signals(self) -> None:
        """Inside a submitit job, SIGTERM (SLURM's preemption, or the time limit itself) goes where USR2
        (the warning before it) goes: submitit's checkpoint-and-requeue; in a local job SIGTERM stops the
        script instead, and the job ends (the module's docstring says why). Only the first of them acts;
        SLURM sends more (USR2 then SIGTERM; SIGTERM to every process), and a second requeue, or a second
        Ctrl-C to a script already stopping, must not follow."""
        requeue = signal.getsignal(signal.SIGUSR2)
        if _submitit_job_id() is None or not callable(requeue):
            return  # called directly (tests, a debugger): no submitit to requeue the job
        local = _submitit_cluster() == "local"
        first = []

        def once(signum, frame):
            name = signal.Signals(signum).name
            if first:
                note(f"{name} received while stopping for {first[0]}: nothing more to do")
                return
            first.append(name)
            if local and signum == signal.SIGTERM:
                note(f"{name} received: stopping the script (it keeps its last checkpoint); this local job ends, "
                     "and the same sweep command resumes it")
                self._stopping = True
                self._interrupt_child()
                return
            note(f"{name} received: stopping the script (it keeps its last checkpoint) and requeueing this job")
            try:
                requeue(signum, frame)
            except Exception as err:  # requeue refused (a cancelled job, the requeue limit): say so, then end
                self.write_state(self.read_state(), error=f"{name}: not requeued ({type(err).__name__}: "
                                 f"{str(err).strip()[:300]}); relaunch the sweep to resume it")
                raise

        for signum in STOP_SIGNALS:
            signal.signal(signum, once)

    def _interrupt_child(self) -> None:
        """Ctrl-C to the running script, once; __call__ then records how it ended."""
        child = self._child
        if child is not None and child.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # it has just ended
                os.kill(child.pid, signal.SIGINT)

    def _end_attempt(self, attempt: dict, **changes) -> dict:
        """This attempt written into the record as it is on disk now, with the job's new state."""
        state = self.read_state()
        attempts = state.setdefault("attempts", [])
        same = [i for i, a in enumerate(attempts) if isinstance(a, dict) and a.get("started") == attempt["started"]
                and a.get("child") == attempt.get("child")]
        if same:
            attempts[same[-1]] = attempt
        else:  # the record was replaced meanwhile: this attempt is kept all the same
            attempts.append(attempt)
        return self.write_state(state, **changes)

    def __call__(self) -> dict:
        self._stopping = False
        self._answer_stop_signals()
        state = self.read_state()
        stderr_path = self.state_path.with_suffix(".stderr")
        stderr_path.parent.mkdir(parents=True, exist_ok=True)
        running = [pid for a in state.get("attempts", []) if isinstance(a, dict) and (pid := script_running(a))]
        if running:  # the record stays the running attempt's
            message = (f"sweep job r{self.rank}: not started, since the script of an earlier attempt (pid {running[-1]} on "
                       f"{socket.gethostname()}) is still running; wait for it to end, or stop it, and relaunch")
            with open(stderr_path, "a") as err:
                err.write(f"--- {message}\n")
            raise RuntimeError(message)
        command, resumed = self.command_now(state)
        attempt = {"job_id": _submitit_job_id(), "host": socket.gethostname(), "resumed": resumed,
                   "started": dt.datetime.now().isoformat(timespec="seconds"), "command": command,
                   # the script's thread count, which its CPU time (cpu_s) is to be read against
                   "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
        state["attempts"] = [*state.get("attempts", []), attempt]
        with open(stderr_path, "ab") as err:
            since = err.tell()
            header = f"--- attempt {len(state['attempts'])}: {shlex.join(command)}\n"
            err.write(header.encode())
            err.flush()
            since += len(header.encode())
            self._child = subprocess.Popen(command, cwd=self.cwd, stderr=err, preexec_fn=_child_setup)
            try:
                attempt["child"] = {"pid": self._child.pid, "host": socket.gethostname()}
                self.write_state(state, state="running", run_dir=resumed, error=None, job_pid=os.getpid())
                if self._stopping:  # SIGTERM came while the script was being started
                    self._interrupt_child()
                code, usage = _wait_for(self._child)
            finally:  # this job ending for any reason (an exception, requeue's exit) ends the script too
                self._stop_child()
        run_dir = _own_run_folder(self.results_dir, self.run_name, attempt)
        attempt_ended(attempt, code, usage)
        if code != 0:
            error = _error_text(stderr_path, since)
            self._end_attempt(attempt, state="failed", run_dir=run_dir, error=error)
            raise RuntimeError(f"sweep job r{self.rank} failed (exit {code}): {error}")
        self._end_attempt(attempt, state="finished", run_dir=run_dir, error=None)
        return {"rank": self.rank, "state": "finished", "run_dir": run_dir}

    def _stop_child(self):
        """Ctrl-C to a running script (the training loop then keeps its checkpoint and releases
        run.lock); a kill if it has not stopped after STOP_WAIT_S. Returns (exit code, resource usage)
        of the child it reaped, else None. Waited for with os.wait4, never Popen.wait, which would
        not give the child's CPU time."""
        child, self._child = self._child, None
        if child is None or child.returncode is not None:
            return None
        try:
            os.kill(child.pid, signal.SIGINT)
            deadline = time.time() + STOP_WAIT_S
            while (reaped := _reap(child.pid, os.WNOHANG)) is None:
                if time.time() > deadline:
                    os.kill(child.pid, signal.SIGKILL)
                    return _reap(child.pid)
                time.sleep(0.05)
            return reaped
        except (ProcessLookupError, ChildProcessError):
            return None  # already ended and reaped

    def checkpoint(self, *args, **kwargs):
        """Preempted or timed out: stop the script with Ctrl-C (it keeps its last checkpoint and
        releases run.lock), record it, and let submitit requeue this job, which then resumes."""
        reaped = self._stop_child()
        state = self.read_state()
        if reaped is not None and state.get("attempts") and "ended" not in state["attempts"][-1]:
            attempt_ended(state["attempts"][-1], *reaped)  # the stopped attempt's end and CPU time
        last = state["attempts"][-1] if state.get("attempts") else {}
        run_dir = _own_run_folder(self.results_dir, self.run_name, last) if "started" in last else None
        self.write_state(state, state="preempted", run_dir=run_dir)
        return super().checkpoint(*args, **kwargs)
