"""A sweep's jobs handed to submitit: its executor (local or SLURM), the sbatch options, one SLURM
array's submission, squeue's answer on a relaunch, and the local jobs waited for and stopped.
"""
import contextlib
import getpass
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import submitit

from experiment.sweep_job import STOP_WAIT_S
from experiment.sweep_records import JOBS_DIR, SUBMITIT_DIR, job_running, script_running
from utils.errors import UserError
from utils.messages import note

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TIMEOUT_MIN = {"slurm": 24 * 60, "local": 14 * 24 * 60}  # local: in effect no limit
# sbatch options the sweep sets itself, and the flag that sets each (or why none may)
SBATCH_SET = {"partition": "--partition", "account": "--account", "qos": "--qos", "constraint": "--constraint",
              "time": "--timeout", "mem": "--mem", "gpus-per-node": "--gpus-per-job", "cpus-per-task": "--cpus-per-job",
              "array": "--max-parallel (the sweep makes one array)", "job-name": "the sweep",
              "output": "submitit (its logs)", "error": "submitit (its logs)", "open-mode": "submitit (its logs)",
              "signal": "submitit (the time-out warning it answers)", "wrap": "the sweep (its own batch script)",
              "nodes": "the sweep (one task per job)", "ntasks": "the sweep (one task per job)",
              "ntasks-per-node": "the sweep (one task per job)",
              "no-requeue": "nobody: preempted and timed-out jobs must be requeued to resume"}


def sbatch_extra(options: list[str]) -> dict:
    """--slurm-option KEY[=VALUE] ... as {key: value} (True for a bare option, e.g. exclusive), each an
    sbatch long option the sweep does not set itself."""
    extra = {}
    for option in options:
        key, sep, value = option.partition("=")
        key = key.strip().lstrip("-")
        if not re.fullmatch(r"[a-z][a-z0-9-]+", key):
            raise UserError(f"--slurm-option {option!r}: give an sbatch long option without its dashes, as KEY or "
                            "KEY=VALUE (e.g. reservation=mine, exclusive)")
        if key in SBATCH_SET:
            raise UserError(f"--slurm-option {key}: the sweep sets it, through {SBATCH_SET[key]}")
        if sep and (not value or any(ord(c) < 32 for c in value)):
            raise UserError(f"--slurm-option {option!r}: the value after '=' must be non-empty, on one line")
        if key in extra:
            raise UserError(f"--slurm-option {key} is given twice")
        extra[key] = value if sep else True
    return extra


def check_slurm_here() -> None:
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if missing:
        raise UserError(f"--executor slurm: no SLURM on this machine ({' and '.join(missing)} not on PATH); launch "
                        "the sweep on the cluster's login node, or give --executor local")


def queued_on_slurm(job_ids: list[str]) -> set[str]:
    """Which of `job_ids` SLURM still holds (pending, running, requeued): a relaunch leaves them be."""
    if not job_ids:
        return set()
    try:
        out = subprocess.run(["squeue", "--noheader", "--array", "--format=%i", "--user", getpass.getuser()],
                             capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as err:
        raise UserError(f"cannot ask SLURM which jobs of this sweep are still queued (squeue: {err}); relaunch "
                        "where squeue works, so running jobs are not submitted twice") from None
    if out.returncode != 0:
        said = (out.stderr.strip().splitlines() or ["no message"])[-1]
        raise UserError(f"cannot ask SLURM which jobs of this sweep are still queued (squeue: {said}); relaunch "
                        "where squeue works, so running jobs are not submitted twice")
    return set(job_ids) & set(out.stdout.split())


def make_executor(args, folder: Path):
    executor = submitit.AutoExecutor(folder=folder, cluster=args.executor, slurm_max_num_timeout=args.requeue_limit,
                                     local_max_num_timeout=args.requeue_limit)
    setup = [f"export PYTHONPATH={shlex.quote(str(REPO))}${{PYTHONPATH:+:$PYTHONPATH}}"]  # the job unpickles experiment.sweep_job
    executor.update_parameters(timeout_min=args.timeout or DEFAULT_TIMEOUT_MIN[args.executor], name="sweep",
                               mem_gb=args.mem, gpus_per_node=args.gpus_per_job, cpus_per_task=args.cpus_per_job,
                               slurm_partition=args.partition, slurm_account=args.account, slurm_qos=args.qos,
                               slurm_constraint=args.constraint, slurm_additional_parameters=sbatch_extra(args.slurm_options),
                               slurm_array_parallelism=args.max_parallel, slurm_setup=setup, local_setup=setup)
    return executor


def _files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")} if folder.is_dir() else set()


def _remove_new_folder(folder: Path, fresh: Path) -> None:
    """Remove `folder`, which this launcher created, and its parents up to `fresh` (the first of them
    that did not exist before) while they are empty: another launcher may have written beside it."""
    shutil.rmtree(folder, ignore_errors=True)
    for parent in folder.parents:
        if not parent.is_relative_to(fresh):
            break
        try:
            parent.rmdir()
        except OSError:
            break


def submit_array(executor, jobs: list, folder: Path, fresh: Path | None) -> list[str]:
    """One sbatch call for `jobs`; their SLURM job ids. Refused (a partition, account or QOS SLURM does
    not know, a limit), it is one line with sbatch's own message, and what this attempt wrote is removed."""
    before = _files_under(folder / SUBMITIT_DIR)
    said = io.StringIO()
    try:
        # submitit echoes sbatch's message on stderr; it is quoted once, below
        with contextlib.redirect_stderr(said), executor.batch():
            handles = [executor.submit(job) for job in jobs]
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError, OSError) as err:
        for path in sorted(_files_under(folder / SUBMITIT_DIR) - before, reverse=True):
            path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)
        if fresh is not None:
            _remove_new_folder(folder, fresh)
        lines = [line.strip() for line in f"{said.getvalue()}\n{err}".splitlines() if line.strip()]
        message = next((line for line in reversed(lines) if "error" in line.lower()), lines[-1] if lines else str(err))
        raise UserError(f"sbatch refused the sweep: {message} (nothing was submitted; check --partition, --account, "
                        "--qos, --constraint and --slurm-option)") from None
    return [handle.job_id for handle in handles]


def wait_local(executor, todo: list, max_parallel: int, on_submit, folder: Path) -> dict:
    """Submit `todo` jobs keeping at most `max_parallel` running; {rank: submitit job}."""
    pending, running, submitted = list(todo), {}, {}
    try:
        while pending or running:
            while pending and len(running) < max_parallel:
                job = pending.pop(0)
                submitted[job.rank] = running[job.rank] = executor.submit(job)
                on_submit(job.rank, submitted[job.rank].job_id)
            running = {rank: handle for rank, handle in running.items() if not handle.done()}
            time.sleep(0.2)
    except BaseException:
        # Ctrl-C or SIGTERM (experiment.lock.Terminated) to the launcher: submitit's local jobs would
        # outlive it, so their scripts are stopped with it (each keeps its last checkpoint; a relaunch resumes)
        stop_scripts(folder, running)
        raise
    return submitted


def _record(folder: Path, rank: int) -> dict:
    try:
        record = json.loads((folder / JOBS_DIR / f"r{rank}.json").read_text())
    except (OSError, ValueError):
        return {}  # not started yet
    return record if isinstance(record, dict) else {}


def stop_scripts(folder: Path, running: dict) -> None:
    """Stop each running local job ({rank: submitit job}) and wait, up to STOP_WAIT_S, until its script
    and its job process have ended (the job recording how). The job process is sent SIGTERM, which a local
    job answers with one Ctrl-C to its script (experiment/sweep_job.py), so the script is not interrupted
    twice when the whole process group got SIGTERM too; the script itself gets Ctrl-C only where its job
    process is gone. The processes are watched, not submitit's handles: a handle watches the shell that
    started submitit's controller, which a SIGTERM to the process group ends at once while the controller,
    the job and its script run on, and the sweep's lock must not be released before they end."""
    note(f"stopping {len(running)} running job(s); each script keeps its last checkpoint, and the same command "
         "resumes them")
    signalled = set()
    deadline = time.time() + STOP_WAIT_S
    while True:
        busy = {}
        for rank, handle in running.items():
            record = _record(folder, rank)
            attempts = record.get("attempts") or [{}]
            script = script_running(attempts[-1]) if isinstance(attempts[-1], dict) else None
            job = job_running(record) if isinstance(attempts[-1], dict) and "ended" not in attempts[-1] else None
            if rank not in signalled and (job or script):
                with contextlib.suppress(ProcessLookupError):  # it has just ended
                    os.kill(job or script, signal.SIGTERM if job else signal.SIGINT)
                signalled.add(rank)
            if script or job or not handle.done():
                busy[rank] = script
        if not busy or time.time() > deadline:
            break
        time.sleep(0.2)
    for rank, script in busy.items():
        if script:
            note(f"job r{rank}'s script (pid {script}) is still running {STOP_WAIT_S} s after Ctrl-C; a relaunch "
                 "refuses until it ends")
