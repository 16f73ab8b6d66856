"""A sweep's folder and its records, read back: sweep.json (the launcher's) and jobs/r<i>.json (each job's).

The sweep folder `<results-dir>/<date>/sweeps/<name>/`:
    sweep.json        the command, the grid, the executor, every job's rank, command, run name and
                      submitit job id (written by the launcher only, atomically: experiment/sweep.py)
    jobs/r<i>.json    the job's own record: state (running, finished, failed, preempted), run
                      folder, attempts (start, end, the script's cpu_s), error text (written by
                      the job only, atomically: experiment/sweep_job.py)
    jobs/r<i>.stderr  the script's standard error, every attempt
    submitit/         submitit's pickles, logs and results
    sweep.lock        while a launcher submits or (local) runs the jobs (experiment/lock.py)
A relaunch finds the folder by the sweep's name, and must repeat its command (sweep_folder).

Which processes of a job still run on this host (script_running, job_running): a pid alone may have
been reused, so where /proc tells, the process must also be running the recorded command (a zombie,
ended but not yet reaped, is not running).
"""
import datetime as dt
import json
import os
import shutil
import socket
from pathlib import Path

from utils.errors import UserError

SWEEP_FILE = "sweep.json"
JOBS_DIR = "jobs"
SUBMITIT_DIR = "submitit"
SWEEP_LOCK = "sweep.lock"          # one launcher at a time per sweep folder


def read_sweep(sweep_dir) -> dict:
    """sweep.json, checked to be a sweep's record (an object whose `jobs` each have a rank and a command)."""
    path = Path(sweep_dir) / SWEEP_FILE
    try:
        sweep = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"'{sweep_dir}' is not a readable sweep folder (no {SWEEP_FILE}: {type(err).__name__})") from None
    jobs = sweep.get("jobs") if isinstance(sweep, dict) else None
    if not (isinstance(jobs, list) and all(isinstance(j, dict) and type(j.get("rank")) is int
                                           and isinstance(j.get("command"), list) and j["command"] for j in jobs)
            and isinstance(sweep.get("name"), str)):
        raise UserError(f"'{path}' is damaged: not a sweep's record (an object with a name and a list of jobs, each "
                        "with its rank and command); restore it from a backup, or delete that sweep folder and launch "
                        "the sweep again (its jobs then run again)")
    return sweep


def _own_record(path: Path) -> dict:
    """jobs/r<i>.json, or a 'damaged' state saying what is wrong with it."""
    try:
        own = json.loads(path.read_text())
        if isinstance(own, dict) and isinstance(own.get("state"), str):
            return own
        problem = "not a job's record"
    except (OSError, ValueError) as err:
        problem = f"unreadable ({type(err).__name__})"
    return {"state": "damaged", "error": f"{path} is {problem}; the job's run folder, if any, is not read"}


def job_states(sweep_dir) -> list[dict]:
    """One entry per job of the sweep: sweep.json's record with the job's own (jobs/r<i>.json) on top;
    'not started' where the job has written nothing yet, 'damaged' where its record cannot be read."""
    sweep_dir = Path(sweep_dir)
    sweep = read_sweep(sweep_dir)
    states = []
    for job in sweep["jobs"]:
        path = sweep_dir / JOBS_DIR / f"r{job['rank']}.json"
        if path.is_file():
            own = _own_record(path)
        else:  # a job that died before its first record has the launcher's note of its error, if any
            error = job.get("launch_error")
            own = {"state": "failed" if error else "not started", "error": error}
        states.append({**job, **own, "rank": job["rank"]})
    return states


def value_matches(value, wanted) -> bool:
    """A --models-where test of one setting: equal to `wanted`, or any of it when it is a list."""
    return value in wanted if isinstance(wanted, list) else value == wanted


def excluded_by(job: dict, where: dict) -> bool:
    """Whether the job's grid combination contradicts a --models-where filter (so no evaluation takes it)."""
    combination = job.get("combination") or {}
    return any(key in combination and not value_matches(combination[key], wanted) for key, wanted in where.items())


def _argv_of(pid, host) -> list[str] | None:
    """The command line of process `pid` if it runs on this host: None where it does not (or is a zombie),
    [] where it runs but this host has no /proc to say what it runs."""
    if host != socket.gethostname() or type(pid) is not int or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # another user's live process
    proc = Path(f"/proc/{pid}")
    if not proc.is_dir():
        return []
    try:
        status = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]  # the field after "(name)"
        argv = [arg.decode(errors="replace") for arg in (proc / "cmdline").read_bytes().split(b"\0")[:-1]]
    except (OSError, IndexError):
        return None  # ended meanwhile
    return None if status == "Z" else argv


def script_running(attempt: dict) -> int | None:
    """The pid of an attempt's script (jobs/r<i>.json's attempts[k]) while it still runs on this host,
    else None. An ended attempt's script has ended."""
    child = attempt.get("child") if "ended" not in attempt else None
    if not isinstance(child, dict):
        return None
    argv = _argv_of(child.get("pid"), child.get("host"))
    command = [str(arg) for arg in attempt.get("command") or []]
    # the same arguments (the interpreter's spelling may differ: a shebang, a symlink); [] when unknown
    return child["pid"] if argv is not None and (not argv or argv[1:] == command[1:]) else None


def job_running(record: dict) -> int | None:
    """The pid of the job process (submitit's) that wrote `record` while it still runs on this host."""
    attempts = record.get("attempts") or [{}]
    argv = _argv_of(record.get("job_pid"), attempts[-1].get("host"))
    return record["job_pid"] if argv is not None and (not argv or any("submitit" in arg for arg in argv)) else None


def refuse_running_attempts(sweep_dir, ranks) -> None:
    """Before a relaunch runs the jobs `ranks` again: a UserError naming the script of an earlier attempt
    that still runs on this host (its launcher was killed, or stopped without waiting for it). Starting
    another attempt beside it would have two scripts write two run folders of one job."""
    running = []
    for rank in ranks:
        path = Path(sweep_dir) / JOBS_DIR / f"r{rank}.json"
        record = _own_record(path) if path.is_file() else {}
        pids = [pid for attempt in record.get("attempts") or [] if isinstance(attempt, dict)
                and (pid := script_running(attempt)) is not None]
        running += [(rank, pid) for pid in pids]
    if running:
        named = ", ".join(f"r{rank} (pid {pid})" for rank, pid in running[:5]) + (" and more" if len(running) > 5 else "")
        pids = " ".join(str(pid) for _, pid in running)
        raise UserError(f"the script of {named} from an earlier launch is still running on {socket.gethostname()}; "
                        f"wait for it to end, or stop it (kill -INT {pids}; it keeps its last checkpoint), then "
                        "launch again")


def find_sweep(results_dir: Path, name: str) -> Path | None:
    found = sorted(Path(results_dir).glob(f"*/sweeps/{name}/{SWEEP_FILE}"))
    return found[-1].parent if found else None


def _same_command(command: list) -> list:
    """A job's command with its interpreter's path resolved: /usr/bin/python3, python3 from PATH, a
    relative or a symlinked spelling of the same interpreter launch the same sweep."""
    python = shutil.which(command[0]) or command[0]
    return [os.path.realpath(python), *command[1:]]


def sweep_folder(sweep: dict) -> Path:
    """The sweep's folder: an existing one of that name (the same command: a relaunch), or a new dated one."""
    existing = find_sweep(Path(sweep["results_dir"]), sweep["name"])
    if existing is None:
        day = dt.date.today()
        return Path(sweep["results_dir"]) / f"{day.day:02d}{day.strftime('%B%Y')}" / "sweeps" / sweep["name"]
    before = read_sweep(existing)
    if [_same_command(j["command"]) for j in before["jobs"]] != [_same_command(j["command"]) for j in sweep["jobs"]]:
        raise UserError(f"a different sweep named {sweep['name']!r} exists at '{existing}'; choose another --name "
                        "(a relaunch must repeat the command exactly)")
    return existing

