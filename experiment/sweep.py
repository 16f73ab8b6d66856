"""Run a script over every combination of its list-valued flags, on this machine or as one SLURM array.

    python -m experiment.sweep oml_regression.py --preset quick --seed 1 2 3 --method oml pretraining srnn \
        --executor local --max-parallel 2
    python -m experiment.sweep oml_omniglot.py --preset cpu --seed 1 2 3 --method oml pretraining srnn \
        --executor slurm --partition gpu --gpus-per-job 1 --cpus-per-job 8 --timeout 720 --max-parallel 9
    python -m experiment.sweep evaluate_regression.py --runs 50 --models-from SWEEP_DIR   # evaluate each trained run
    python -m experiment.sweep evaluate_regression.py --models-from A B --models-where method=srnn srnn_beta=0.1
    python -m experiment.sweep ... --dry-run                                             # print the jobs, write nothing
    python -m experiment.aggregate SWEEP_DIR                                             # mean and 95% CI over seeds

The flow. Every flag the script lets take several values (experiment/grid.py) spans the grid;
job i runs the user's command unchanged plus `--rank i` (plus `--name <sweep>_r<i>` and an
absolute `--results-dir`). The command stays self-describing, as the original's cluster flow
was, and the order of the combinations lives in one place (grid.py), not twice. Each job writes
its usual run folder, `<results-dir>/<date>/<dataset>/<sweep>_r<i>_<n>/`.

`--models-from SWEEP_DIR` turns a training sweep into an evaluation sweep: one job per finished
training run of that sweep (in its rank order) and per combination of the evaluation flags,
`--model RUN_DIR` added; several sweep folders give the runs of all of them, and `--models-where
KEY=VALUE ...` keeps the runs whose config.json has those values (one method of a sweep that trained
several, one candidate's seeds). So the two-step flow is: train with seeds (training runs evaluate
themselves after training unless `--eval-runs 0`), optionally evaluate each trained run with the
evaluation script, then aggregate either sweep; the aggregate groups by the evaluated
checkpoint's method and meta-training seed (its config), whichever sweep it reads.

The sweep folder `<results-dir>/<date>/sweeps/<name>/`:
    sweep.json        the command, the grid, the executor, every job's rank, command, run name and
                      submitit job id (written by the launcher only, atomically)
    jobs/r<i>.json    the job's own record: state (running, finished, failed, preempted), run
                      folder, attempts, error text (written by the job only, atomically)
    jobs/r<i>.stderr  the script's standard error, every attempt
    submitit/         submitit's pickles, logs and results
The default name is the script's and a digest of the command, so launching the same command
again (with the same --results-dir) finds the sweep and submits only the jobs not finished:
a failed or killed job runs again, and a training job whose run folder holds a checkpoint
resumes from it (`--resume`). A different command under an existing --name is refused.

Preemption and time-outs: a job is a submitit Checkpointable. On SLURM's warning signal its
checkpoint() stops the script with Ctrl-C (the training loop keeps its last periodic
checkpoint and releases run.lock), and submitit requeues the job, which resumes that run
folder. The script runs in a child process that ignores that signal, so only the job decides.
"""
import argparse
import datetime as dt
import hashlib
import importlib.util
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import submitit

from experiment import grid
from utils import bounds
from utils.cli import run_main
from utils.errors import UserError
from utils.files import write_json
from utils.messages import note

REPO = Path(__file__).resolve().parents[1]
SWEEP_FILE = "sweep.json"
JOBS_DIR = "jobs"
SUBMITIT_DIR = "submitit"
CHECKPOINT_NAME = "checkpoint.pt"  # experiment.checkpoint's; not imported, to keep the job process free of torch
LOCK_NAME = "run.lock"             # experiment.lock's
DEFAULT_TIMEOUT_MIN = {"slurm": 24 * 60, "local": 14 * 24 * 60}  # local: in effect no limit
STOP_WAIT_S = 120  # how long checkpoint() waits for the script to stop after Ctrl-C
# Flags the sweep sets for every job; in the script's command they would contradict it.
RESERVED = ("--rank", "--resume", "--model")


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False,
                                     usage="python -m experiment.sweep SCRIPT [script flags, lists allowed] [sweep flags]")
    parser.add_argument("script", help="oml_regression.py, oml_omniglot.py, evaluate_regression.py or evaluate_omniglot.py")
    parser.add_argument("--executor", choices=["local", "slurm"], default="local",
                        help="local: submitit's local executor on this machine (waits for the jobs); slurm: one array job")
    parser.add_argument("--max-parallel", dest="max_parallel", type=int, default=None,
                        help="jobs running at once (local default 1; slurm: the array's %%P, default all)")
    parser.add_argument("--partition", default=None, help="SLURM partition")
    parser.add_argument("--gpus-per-job", dest="gpus_per_job", type=int, default=None, help="GPUs per job (SLURM)")
    parser.add_argument("--cpus-per-job", dest="cpus_per_job", type=int, default=None, help="CPUs per job (SLURM)")
    parser.add_argument("--mem", type=float, default=None, help="memory per job in GB (SLURM)")
    parser.add_argument("--timeout", type=int, default=None,
                        help="minutes per job before submitit checkpoints and requeues it (slurm default 1440)")
    parser.add_argument("--models-from", dest="models_from", nargs="+", default=None, metavar="SWEEP_DIR",
                        help="evaluate every finished training run of these sweeps (adds --model RUN_DIR per job)")
    parser.add_argument("--models-where", dest="models_where", nargs="+", default=[], metavar="KEY=VALUE",
                        help="with --models-from: only the runs whose config.json has these values "
                             "(e.g. method=srnn; seed=[1,2]: any of them)")
    parser.add_argument("--name", default=None, help="sweep name (default: the script's and a digest of the command); "
                                                     "job i's runs are named <name>_r<i>")
    parser.add_argument("--results-dir", "--results_dir", dest="results_dir", default="../results",
                        help="root of the run folders and of <date>/sweeps/<name>/ (default ../results)")
    parser.add_argument("--dry-run", dest="dry_run", action="store_true", help="print one line per job; write nothing")
    return parser


# --- the plan: which jobs, with which commands -------------------------------------------------

def load_script(script) -> tuple[Path, object]:
    """The script file and its module, loaded from its path to read its flags (get_args_parser).
    A launcher is given its script on the command line, as torchrun is: not an import of a higher layer."""
    path = Path(script)
    if not path.is_file() and (REPO / script).is_file():
        path = REPO / script
    if not path.is_file() or path.suffix != ".py":
        raise UserError(f"no script '{script}' (give one of the scripts, e.g. oml_regression.py)")
    spec = importlib.util.spec_from_file_location(f"_swept_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_args_parser"):
        raise UserError(f"'{path}' has no get_args_parser(): not one of this project's scripts")
    return path.resolve(), module


def _dests(parser) -> dict:
    """{option string: dest} of every flag of `parser`."""
    return {option: action.dest for action in parser._actions for option in action.option_strings}


def script_grid(module, parser, argv: list, models_from: bool) -> dict:
    """{setting: value or [values]} of the settings the script lets take several values, parsed by
    the script's own parser and ordered by its SWEEP: the choices experiment.grid numbers, exactly
    as the script's `--rank` will (grid.select)."""
    reserved = RESERVED + (("--model",) if models_from else ())
    for token in argv:
        flag = token.split("=", 1)[0]
        if flag in reserved:
            raise UserError(f"{flag} is set by the sweep for each job; leave it out of the script's command")
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        raise UserError("the script refused its command (its message is above)") from None
    names = getattr(module, "SWEEP", None)
    if names is None:  # a script without sweeps: its lists, in the namespace's order
        names = [dest for dest, value in vars(args).items() if isinstance(value, list)]
    return grid.choices_of(args, names)


def is_training(parser) -> bool:
    return "resume" in _dests(parser).values()


def resume_flags(parser, argv: list, choices: dict, rank: int) -> list:
    """The user's flags a resumed job passes again beside `--resume RUN_DIR`: the run's config is in its
    checkpoint, so the config's flags (default SUPPRESS, experiment.config.add_flags) and the names are
    dropped; what remains (evaluation after training, data, device, intervals) is kept, a swept one
    narrowed to this rank's value."""
    dests = _dests(parser)
    picked = grid.combination({k: list(range(len(v))) for k, v in grid.swept(choices).items()}, rank)
    kept, dest = [], None
    for token in argv:
        flag = token.split("=", 1)[0]
        if token.startswith("--") and flag in dests:
            dest = dests[flag]
            values = []
            group = [token]
            keep = (parser.get_default(dest) != argparse.SUPPRESS and dest not in ("name", "results_dir", "rank"))
            kept.append((keep, dest, group, values))
            continue
        if kept:
            kept[-1][3].append(token)
    out = []
    for keep, dest, group, values in kept:
        if not keep:
            continue
        if dest in picked and len(values) > 1:
            values = [values[picked[dest]]]
        out += group + values
    return out


def plan(args, script_argv: list) -> dict:
    """The sweep as data: its command, grid and one entry per job (rank, command, run name)."""
    path, module = load_script(args.script)
    parser = module.get_args_parser()
    choices = script_grid(module, parser, script_argv, bool(args.models_from))
    per_model, swept = grid.size(choices), grid.swept(choices)
    models = [None]
    if args.models_where and not args.models_from:
        raise UserError("--models-where filters the runs of --models-from; give --models-from SWEEP_DIR")
    if args.models_from:
        if "model" not in _dests(parser).values():
            raise UserError(f"--models-from needs an evaluation script (one with --model); {path.name} has none")
        where = parse_where(args.models_where)
        models = [run for sweep_dir in args.models_from for run in finished_runs(Path(sweep_dir))
                  if config_matches(run, where)]
        if not models:
            raise UserError(f"--models-where {' '.join(args.models_where)}: no finished run of --models-from matches")
    training = is_training(parser)
    results_dir = Path(args.results_dir).resolve()
    described = json.dumps([path.name, script_argv, [str(m) for m in models]])
    name = args.name or f"{path.stem}_{hashlib.sha256(described.encode()).hexdigest()[:8]}"
    bounds.run_name(f"{name}_r{len(models) * per_model - 1}_99")
    python = [sys.executable, str(path)]
    jobs = []
    for rank in range(len(models) * per_model):
        model, sub = models[rank // per_model], rank % per_model
        run_name = f"{name}_r{rank}"
        extra = (["--model", str(model)] if model else []) + (["--rank", str(sub)] if per_model > 1 else [])
        command = python + script_argv + extra + ["--name", run_name, "--results-dir", str(results_dir)]
        resume = python + resume_flags(parser, script_argv, choices, sub) if training else None
        jobs.append({"rank": rank, "run_name": run_name, "command": command, "resume_command": resume,
                     "model": str(model) if model else None,
                     "combination": {k: v for k, v in grid.combination(choices, sub).items() if k in swept}})
    return {"name": name, "script": path.name, "argv": script_argv, "grid": swept,
            "models_from": [str(Path(d).resolve()) for d in args.models_from] if args.models_from else None,
            "models_where": parse_where(args.models_where),
            "results_dir": str(results_dir), "cwd": os.getcwd(), "training": training, "jobs": jobs}


def parse_where(pairs: list[str]) -> dict:
    """KEY=VALUE pairs -> {key: value}, the value read as JSON where it is (0.1, true, [1,2]: any of
    these) and as text otherwise."""
    where = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--models-where takes KEY=VALUE pairs (e.g. method=srnn), got {pair!r}")
        try:
            where[key.replace("-", "_")] = json.loads(text)
        except ValueError:
            where[key.replace("-", "_")] = text
    return where


def config_matches(run_dir: Path, where: dict) -> bool:
    if not where:
        return True
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"--models-where: cannot read {run_dir / 'config.json'} ({type(err).__name__})") from None
    unknown = [key for key in where if key not in config]
    if unknown:
        raise UserError(f"--models-where: {', '.join(unknown)} is not a setting of {run_dir.name} (config.json)")
    return all(config[key] in value if isinstance(value, list) else config[key] == value for key, value in where.items())


def finished_runs(sweep_dir: Path) -> list[Path]:
    """The run folders of a sweep's finished jobs, in rank order (a sweep with unfinished jobs is refused)."""
    states = job_states(sweep_dir)
    unfinished = [f"r{s['rank']} ({s['state']})" for s in states if s["state"] != "finished"]
    if unfinished:
        raise UserError(f"--models-from {sweep_dir}: jobs not finished: {', '.join(unfinished)}; relaunch that sweep "
                        "first (finished jobs are skipped)")
    return [Path(s["run_dir"]) for s in states]


# --- the sweep folder ------------------------------------------------------------------------------

def read_sweep(sweep_dir) -> dict:
    path = Path(sweep_dir) / SWEEP_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"'{sweep_dir}' is not a readable sweep folder (no {SWEEP_FILE}: {type(err).__name__})") from None


def job_states(sweep_dir) -> list[dict]:
    """One entry per job of the sweep: sweep.json's record with the job's own (jobs/r<i>.json) on top;
    'not started' where the job has written nothing yet."""
    sweep_dir = Path(sweep_dir)
    sweep = read_sweep(sweep_dir)
    states = []
    for job in sweep["jobs"]:
        path = sweep_dir / JOBS_DIR / f"r{job['rank']}.json"
        if path.is_file():
            own = json.loads(path.read_text())
        else:  # a job that died before its first record has the launcher's note of its error, if any
            error = job.get("launch_error")
            own = {"state": "failed" if error else "not started", "error": error}
        states.append({**job, **own})
    return states


def find_sweep(results_dir: Path, name: str) -> Path | None:
    found = sorted(Path(results_dir).glob(f"*/sweeps/{name}/{SWEEP_FILE}"))
    return found[-1].parent if found else None


def sweep_folder(sweep: dict) -> tuple[Path, set]:
    """The sweep's folder (an existing one of that name, or a new dated one) and the ranks already finished."""
    existing = find_sweep(Path(sweep["results_dir"]), sweep["name"])
    if existing is None:
        day = dt.date.today()
        return Path(sweep["results_dir"]) / f"{day.day:02d}{day.strftime('%B%Y')}" / "sweeps" / sweep["name"], set()
    before = read_sweep(existing)
    if [j["command"] for j in before["jobs"]] != [j["command"] for j in sweep["jobs"]]:
        raise UserError(f"a different sweep named {sweep['name']!r} exists at '{existing}'; choose another --name "
                        "(a relaunch must repeat the command exactly)")
    finished = {s["rank"] for s in job_states(existing) if s["state"] == "finished"}
    return existing, finished


# --- one job ---------------------------------------------------------------------------------------

def _run_folders(results_dir: Path, run_name: str) -> list[Path]:
    """This job's run folders (<results-dir>/<date>/<dataset>/<run_name>_<n>), oldest attempt first."""
    pattern = re.compile(re.escape(run_name) + r"_(\d+)")
    found = [p for p in Path(results_dir).glob(f"*/*/{run_name}_*") if pattern.fullmatch(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(pattern.fullmatch(p.name).group(1)))


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


def _child_setup():
    # The job, not the script, answers SLURM's warning signal; Ctrl-C must work even when the
    # job inherited it ignored (as background processes do).
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _submitit_job_id() -> str | None:
    try:
        return submitit.JobEnvironment().job_id
    except RuntimeError:
        return None  # called outside a submitit job (tests, a direct call)


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
        previous child, left under the same job id, is removed (any other lock is left to experiment.lock)."""
        lock = run / LOCK_NAME
        last = state["attempts"][-1] if state.get("attempts") else {}
        try:
            holder = json.loads(lock.read_text())
        except (OSError, ValueError):
            return
        job_id = _submitit_job_id()
        if (job_id is not None and last.get("job_id") == job_id
                and {"pid": holder.get("pid"), "host": holder.get("host")} == last.get("child")):
            note(f"removing {lock}: it was taken by this job's previous attempt (pid {holder['pid']} on "
                 f"{holder['host']}), which the requeue ended")
            lock.unlink(missing_ok=True)

    def __call__(self) -> dict:
        state = self.read_state()
        command, resumed = self.command_now(state)
        stderr_path = self.state_path.with_suffix(".stderr")
        stderr_path.parent.mkdir(parents=True, exist_ok=True)
        attempt = {"job_id": _submitit_job_id(), "host": socket.gethostname(), "resumed": resumed,
                   "started": dt.datetime.now().isoformat(timespec="seconds"), "command": command}
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
                code = self._child.wait()
            finally:  # this job ending for any reason (an exception, requeue's exit) ends the script too
                self._stop_child()
        runs = _run_folders(Path(self.results_dir), self.run_name)
        run_dir = str(runs[-1]) if runs else None
        attempt.update(ended=dt.datetime.now().isoformat(timespec="seconds"), returncode=code)
        if code != 0:
            error = _error_text(stderr_path, since)
            self.write_state(state, state="failed", run_dir=run_dir, error=error)
            raise RuntimeError(f"sweep job r{self.rank} failed (exit {code}): {error}")
        self.write_state(state, state="finished", run_dir=run_dir, error=None)
        return {"rank": self.rank, "state": "finished", "run_dir": run_dir}

    def _stop_child(self) -> None:
        """Ctrl-C to a running script (the training loop then keeps its checkpoint and releases
        run.lock); a kill if it has not stopped after STOP_WAIT_S. Waited for with os.waitpid, not
        Popen.wait: in the signal handler, __call__'s Popen.wait holds the Popen's wait lock."""
        child, self._child = self._child, None
        if child is None or child.returncode is not None:
            return
        try:
            os.kill(child.pid, signal.SIGINT)
            deadline = time.time() + STOP_WAIT_S
            while os.waitpid(child.pid, os.WNOHANG) == (0, 0):
                if time.time() > deadline:
                    os.kill(child.pid, signal.SIGKILL)
                    os.waitpid(child.pid, 0)
                    break
                time.sleep(0.05)
        except (ProcessLookupError, ChildProcessError):
            pass  # already ended and reaped

    def checkpoint(self, *args, **kwargs):
        """Preempted or timed out: stop the script with Ctrl-C (it keeps its last checkpoint and
        releases run.lock), record it, and let submitit requeue this job, which then resumes."""
        self._stop_child()
        state = self.read_state()
        runs = _run_folders(Path(self.results_dir), self.run_name)
        self.write_state(state, state="preempted", run_dir=str(runs[-1]) if runs else None)
        return super().checkpoint(*args, **kwargs)


# --- submission ------------------------------------------------------------------------------------

def make_executor(args, folder: Path):
    executor = submitit.AutoExecutor(folder=folder, cluster=args.executor)
    setup = [f"export PYTHONPATH={shlex.quote(str(REPO))}${{PYTHONPATH:+:$PYTHONPATH}}"]  # the job unpickles experiment.sweep
    executor.update_parameters(timeout_min=args.timeout or DEFAULT_TIMEOUT_MIN[args.executor], name="sweep",
                               mem_gb=args.mem, gpus_per_node=args.gpus_per_job, cpus_per_task=args.cpus_per_job,
                               slurm_partition=args.partition, slurm_array_parallelism=args.max_parallel,
                               slurm_setup=setup, local_setup=setup)
    return executor


def _wait_local(executor, todo: list, max_parallel: int, on_submit) -> dict:
    """Submit `todo` jobs keeping at most `max_parallel` running; {rank: submitit job}."""
    pending, running, submitted = list(todo), [], {}
    while pending or running:
        while pending and len(running) < max_parallel:
            job = pending.pop(0)
            submitted[job.rank] = executor.submit(job)
            running.append(submitted[job.rank])
            on_submit(job.rank, submitted[job.rank].job_id)
        running = [j for j in running if not j.done()]
        time.sleep(0.2)
    return submitted


def main(args, script_argv=None):
    script_argv = list(script_argv or [])
    if args.max_parallel is not None:
        bounds.at_least("--max-parallel", args.max_parallel)
    sweep = plan(args, script_argv)
    if args.dry_run:
        runs = len(sweep["jobs"]) // grid.size(sweep["grid"])
        models = f" x {runs} runs of {', '.join(sweep['models_from'])}" if sweep["models_from"] else ""
        print(f"sweep {sweep['name']}: {len(sweep['jobs'])} jobs, grid {json.dumps(sweep['grid'])}{models}")
        for job in sweep["jobs"]:
            point = " ".join(f"{k}={v}" for k, v in job["combination"].items())
            print(f"{job['rank']}\t{point}\t{shlex.join(job['command'])}")
        return None
    folder, finished = sweep_folder(sweep)
    todo = [job for job in sweep["jobs"] if job["rank"] not in finished]
    if finished:
        print(f"relaunching {folder}: {len(finished)} of {len(sweep['jobs'])} jobs finished, skipped")
    record = {**sweep, "executor": args.executor, "launched": dt.datetime.now().isoformat(timespec="seconds"),
              "executor_options": {k: getattr(args, k) for k in ("max_parallel", "partition", "gpus_per_job",
                                                                 "cpus_per_job", "mem", "timeout")}}
    before = read_sweep(folder)["jobs"] if (folder / SWEEP_FILE).is_file() else []
    for job, old in zip(record["jobs"], before):
        job["job_ids"] = old.get("job_ids", [])
    write_json(folder / SWEEP_FILE, record)
    if not todo:
        print(f"every job of {folder} is finished; aggregate with: python -m experiment.aggregate {folder}")
        return folder
    executor = make_executor(args, folder / SUBMITIT_DIR)
    jobs = [SweepJob(folder, job, sweep["results_dir"], sweep["cwd"]) for job in todo]

    def remember(rank, job_id):
        record["jobs"][rank].setdefault("job_ids", []).append(job_id)
        write_json(folder / SWEEP_FILE, record)

    if args.executor == "slurm":
        with executor.batch():
            submitted = [executor.submit(job) for job in jobs]
        for job, handle in zip(jobs, submitted):
            record["jobs"][job.rank].setdefault("job_ids", []).append(handle.job_id)
        write_json(folder / SWEEP_FILE, record)
        print(f"submitted {len(jobs)} jobs as SLURM array {submitted[0].job_id.split('_')[0]}; sweep folder {folder}")
        return folder
    print(f"running {len(jobs)} jobs here, {args.max_parallel or 1} at a time; sweep folder {folder}")
    submitted = _wait_local(executor, jobs, args.max_parallel or 1, remember)
    for rank, handle in submitted.items():
        if not (folder / JOBS_DIR / f"r{rank}.json").is_file():  # died before its first record
            record["jobs"][rank]["launch_error"] = str(handle.exception())[-2000:]
    write_json(folder / SWEEP_FILE, record)
    states = job_states(folder)
    failed = [s for s in states if s["state"] != "finished"]
    for s in failed:
        print(f"job r{s['rank']} {s['state']}: {s.get('error')}", file=sys.stderr)
    print(f"{len(states) - len(failed)} of {len(states)} jobs finished; aggregate with: "
          f"python -m experiment.aggregate {folder}")
    return folder


def cli(argv=None):
    """The sweep's own flags are parsed here; every other token is the script's (utils.cli.run_main's
    handling of a UserError: one line, exit 2)."""
    parser = get_args_parser()
    args, script_argv = parser.parse_known_args(argv)

    class Parsed:
        def parse_args(self, _argv):
            return args
    return run_main(lambda parsed: main(parsed, script_argv), Parsed())


if __name__ == "__main__":
    # Imported, not run as __main__: submitit pickles SweepJob by reference to this module.
    from experiment.sweep import cli as module_cli
    module_cli()
