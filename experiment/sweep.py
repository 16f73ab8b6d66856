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
    sweep.lock        while a launcher submits or (local) runs the jobs (experiment/lock.py)
The default name is the script's and a digest of the command, so launching the same command
again (with the same --results-dir) finds the sweep and submits only the jobs not finished:
a failed or killed job runs again, and a training job whose run folder holds a checkpoint
resumes from it (`--resume`). A different command under an existing --name is refused (the
interpreter's path is compared resolved: a symlink or a relative spelling is the same command).
A local sweep whose jobs did not all finish exits 1 with one line naming them.

Preemption and time-outs: a job is a submitit Checkpointable. SLURM warns of the time limit with
USR2 (submitit's --signal) and preempts, or reaches the limit, with SIGTERM to every process of
the job; the job answers the first of these (later ones are noted and ignored): its checkpoint()
stops the script with Ctrl-C (the training loop keeps its last periodic checkpoint and releases
run.lock), and submitit requeues the job, which resumes that run folder. The script runs in a
child process that ignores both signals, so only the job decides. `--requeue-limit` bounds the
requeues after a time-out (submitit's max_num_timeout); preemptions are not counted.

One launcher at a time per sweep folder (sweep.lock): a second launch of the same sweep refuses
while the first submits or (local) runs. A SLURM relaunch skips the jobs still in SLURM's queue.
docs/cluster.md says what each failure looks like and what to do.
"""
import argparse
import ast
import contextlib
import datetime as dt
import getpass
import hashlib
import importlib.util
import io
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import submitit

from experiment import grid
from experiment import lock as folder_lock
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
SWEEP_LOCK = "sweep.lock"          # one launcher at a time per sweep folder
STOP_WAIT_S = 120  # how long checkpoint() waits for the script to stop after Ctrl-C
# Flags the sweep sets for every job; in the script's command they would contradict it.
RESERVED = ("--rank", "--resume", "--model")
# submitit's default: a job that reaches its --timeout is requeued this many times (preemptions are
# not counted). A run whose --save-every interval outlasts --timeout never progresses, and 3 bounds
# what it wastes; long trainings cut into short slots want more (DINO and MAE use 30).
DEFAULT_REQUEUE_LIMIT = 3
MAX_TIMEOUT_MIN = 366 * 24 * 60    # a year: past it a number is a typo (SLURM's own limit is per partition)
MAX_CPUS, MAX_GPUS, MAX_MEM_GB = 1024, 64, 65536  # more than one node has
SLURM_ONLY = ("partition", "account", "qos", "constraint", "slurm_options", "gpus_per_job", "cpus_per_job", "mem")
# sbatch options the sweep sets itself, and the flag that sets each (or why none may)
SBATCH_SET = {"partition": "--partition", "account": "--account", "qos": "--qos", "constraint": "--constraint",
              "time": "--timeout", "mem": "--mem", "gpus-per-node": "--gpus-per-job", "cpus-per-task": "--cpus-per-job",
              "array": "--max-parallel (the sweep makes one array)", "job-name": "the sweep",
              "output": "submitit (its logs)", "error": "submitit (its logs)", "open-mode": "submitit (its logs)",
              "signal": "submitit (the time-out warning it answers)", "wrap": "the sweep (its own batch script)",
              "nodes": "the sweep (one task per job)", "ntasks": "the sweep (one task per job)",
              "ntasks-per-node": "the sweep (one task per job)",
              "no-requeue": "nobody: preempted and timed-out jobs must be requeued to resume"}


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False,
                                     usage="python -m experiment.sweep SCRIPT [script flags, lists allowed] [sweep flags]")
    parser.add_argument("script", help="oml_regression.py, oml_omniglot.py, evaluate_regression.py or evaluate_omniglot.py")
    parser.add_argument("--executor", choices=["local", "slurm"], default="local",
                        help="local: submitit's local executor on this machine (waits for the jobs); slurm: one array job")
    parser.add_argument("--max-parallel", dest="max_parallel", type=int, default=None,
                        help="jobs running at once (local default 1; slurm: the array's %%P, default all)")
    parser.add_argument("--partition", default=None, help="SLURM partition")
    parser.add_argument("--account", default=None, help="SLURM account to charge (sbatch --account)")
    parser.add_argument("--qos", default=None, help="SLURM quality of service (sbatch --qos)")
    parser.add_argument("--constraint", default=None, help="SLURM node features, e.g. 'a100|h100' (sbatch --constraint)")
    parser.add_argument("--slurm-option", dest="slurm_options", action="append", default=[], metavar="KEY[=VALUE]",
                        help="any other sbatch option, without its dashes (repeatable): --slurm-option "
                             "reservation=mine --slurm-option exclusive")
    parser.add_argument("--gpus-per-job", dest="gpus_per_job", type=int, default=None, help="GPUs per job (SLURM)")
    parser.add_argument("--cpus-per-job", dest="cpus_per_job", type=int, default=None, help="CPUs per job (SLURM)")
    parser.add_argument("--mem", type=float, default=None, help="memory per job in GB (SLURM)")
    parser.add_argument("--timeout", type=int, default=None,
                        help="minutes per job before submitit checkpoints and requeues it (slurm default 1440)")
    parser.add_argument("--requeue-limit", dest="requeue_limit", type=int, default=DEFAULT_REQUEUE_LIMIT,
                        help="how many times a job that reaches --timeout is requeued (default "
                             f"{DEFAULT_REQUEUE_LIMIT}, submitit's; preemptions are not counted)")
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

def _sweepable(path: Path) -> bool:
    """Whether `path` defines get_args_parser() and SWEEP at its top level, read without running it."""
    try:
        tree = ast.parse(path.read_bytes())
    except (OSError, SyntaxError, ValueError):
        return False
    names = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    names |= {target.id for node in tree.body if isinstance(node, ast.Assign)
              for target in node.targets if isinstance(target, ast.Name)}
    return {"get_args_parser", "SWEEP"} <= names


def sweepable_scripts() -> list[str]:
    return sorted(p.name for p in REPO.glob("*.py") if _sweepable(p))


def load_script(script) -> tuple[Path, object]:
    """The script file and its module, loaded from its path to read its flags (get_args_parser).
    A launcher is given its script on the command line, as torchrun is: not an import of a higher layer.
    Only this repository's sweepable scripts are loaded, recognised from their source before any of
    it runs: loading executes a script's top level, which must not happen to any file named here
    (not even with --dry-run)."""
    path = Path(script)
    if not path.is_file() and (REPO / script).is_file():
        path = REPO / script
    known = sweepable_scripts()
    if not path.is_file() or path.resolve().parent != REPO or path.name not in known:
        raise UserError(f"the sweep runs this repository's scripts ({', '.join(known)}); '{script}' is not one of them")
    spec = importlib.util.spec_from_file_location(f"_swept_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
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
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):  # argparse's usage and message: one line is kept
            args = parser.parse_args(argv)
    except SystemExit:
        lines = [line for line in said.getvalue().splitlines() if line.strip()]
        message = lines[-1].split(" error: ", 1)[-1] if lines else "no message"  # less argparse's "prog: error:"
        raise UserError(f"{Path(module.__file__).name} refused its command: {message}") from None
    names = getattr(module, "SWEEP", None)
    if names is None:  # a script without sweeps: its lists, in the namespace's order
        names = [dest for dest, value in vars(args).items() if isinstance(value, list)]
    choices = grid.choices_of(args, names)
    for name, values in choices.items():  # nan or inf is no setting, and sweep.json could not record it
        bad = [v for v in (values if isinstance(values, list) else [values]) if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise UserError(f"--{name} {bad[0]}: every value of a sweep must be a finite number")
    return choices


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
    name = args.name if args.name is not None else f"{path.stem}_{hashlib.sha256(described.encode()).hexdigest()[:8]}"
    bounds.run_name(name)
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


STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)  # SLURM's time-limit warning (submitit's), preemption and the limit


def _child_setup():
    # The job, not the script, answers SLURM's signals, which reach every process of the job;
    # Ctrl-C must work even when the job inherited it ignored (as background processes do).
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
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
        (the warning before it) goes: submitit's checkpoint-and-requeue. Only the first of them acts; SLURM
        sends more (USR2 then SIGTERM; SIGTERM to every process), and a second requeue must not follow."""
        requeue = signal.getsignal(signal.SIGUSR2)
        if _submitit_job_id() is None or not callable(requeue):
            return  # called directly (tests, a debugger): no submitit to requeue the job
        first = []

        def once(signum, frame):
            name = signal.Signals(signum).name
            if first:
                note(f"{name} received while stopping for {first[0]}: nothing more to do")
                return
            first.append(name)
            note(f"{name} received: stopping the script (it keeps its last checkpoint) and requeueing this job")
            try:
                requeue(signum, frame)
            except Exception as err:  # requeue refused (a cancelled job, the requeue limit): say so, then end
                self.write_state(self.read_state(), error=f"{name}: not requeued ({type(err).__name__}: "
                                 f"{str(err).strip()[:300]}); relaunch the sweep to resume it")
                raise

        for signum in STOP_SIGNALS:
            signal.signal(signum, once)

    def __call__(self) -> dict:
        self._answer_stop_signals()
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


# --- the sweep's own flags ------------------------------------------------------------------------

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


def check_flags(args) -> None:
    """The sweep's own flags, before anything is planned, imported or written."""
    if args.max_parallel is not None:
        bounds.at_least("--max-parallel", args.max_parallel)
    if args.timeout is not None:
        bounds.at_least("--timeout", args.timeout, 1, MAX_TIMEOUT_MIN, "minutes: a year")
    bounds.at_least("--requeue-limit", args.requeue_limit, 0, 1000, "requeues after a time-out")
    if args.gpus_per_job is not None:
        bounds.at_least("--gpus-per-job", args.gpus_per_job, 1, MAX_GPUS, "more than a node has; leave it out for none")
    if args.cpus_per_job is not None:
        bounds.at_least("--cpus-per-job", args.cpus_per_job, 1, MAX_CPUS, "more than a node has")
    if args.mem is not None and not (math.isfinite(args.mem) and 1 / 1024 <= args.mem <= MAX_MEM_GB):
        raise UserError(f"--mem must be in GB, from 0.001 (1 MB; SLURM reads 0 as all of a node's memory) to "
                        f"{MAX_MEM_GB}, got {args.mem}")
    for flag in ("partition", "account", "qos", "constraint"):
        value = getattr(args, flag)
        if value is not None and (not value.strip() or any(ord(c) < 32 for c in value)):
            raise UserError(f"--{flag} {value!r} must be a non-empty name on one line")
    sbatch_extra(args.slurm_options)
    if args.executor == "local":
        given = [f"--{name.replace('_', '-')}" for name in SLURM_ONLY if getattr(args, name) not in (None, [])]
        if given:
            raise UserError(f"{', '.join(given).replace('--slurm-options', '--slurm-option')}: SLURM settings, which "
                            "--executor local would ignore; leave them out, or give --executor slurm")
    bounds.writable_folder("--results-dir", args.results_dir)


def check_slurm_here() -> None:
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if missing:
        raise UserError(f"--executor slurm: no SLURM on this machine ({' and '.join(missing)} not on PATH); launch "
                        "the sweep on the cluster's login node, or give --executor local")


# --- submission ------------------------------------------------------------------------------------

def make_executor(args, folder: Path):
    executor = submitit.AutoExecutor(folder=folder, cluster=args.executor, slurm_max_num_timeout=args.requeue_limit,
                                     local_max_num_timeout=args.requeue_limit)
    setup = [f"export PYTHONPATH={shlex.quote(str(REPO))}${{PYTHONPATH:+:$PYTHONPATH}}"]  # the job unpickles experiment.sweep
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


def _wait_local(executor, todo: list, max_parallel: int, on_submit, folder: Path) -> dict:
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


def stop_scripts(folder: Path, running: dict) -> None:
    """Ctrl-C to the script of each running local job ({rank: submitit job}); the job then records it
    and ends. Waits for them up to STOP_WAIT_S. Sent to the script itself: a controller started in the
    background ignores Ctrl-C, and SIGTERM would have it requeue the job."""
    note(f"stopping {len(running)} running job(s); each script keeps its last checkpoint, and the same command "
         "resumes them")
    for rank in running:
        try:
            child = json.loads((folder / JOBS_DIR / f"r{rank}.json").read_text())["attempts"][-1]["child"]
            if child["host"] == socket.gethostname():
                os.kill(child["pid"], signal.SIGINT)
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            continue  # not started yet, or ended: nothing to stop
    deadline = time.time() + STOP_WAIT_S
    while any(not handle.done() for handle in running.values()) and time.time() < deadline:
        time.sleep(0.2)


def print_jobs(sweep: dict) -> None:
    runs = len(sweep["jobs"]) // grid.size(sweep["grid"])
    models = f" x {runs} runs of {', '.join(sweep['models_from'])}" if sweep["models_from"] else ""
    print(f"sweep {sweep['name']}: {len(sweep['jobs'])} jobs, grid {json.dumps(sweep['grid'])}{models}")
    for job in sweep["jobs"]:
        point = " ".join(f"{k}={v}" for k, v in job["combination"].items())
        print(f"{job['rank']}\t{point}\t{shlex.join(job['command'])}")


def failure_line(states: list[dict], folder: Path) -> str | None:
    """'k of n jobs failed: r1 (its error), ...' when any job did not finish, else None."""
    failed = [s for s in states if s["state"] != "finished"]
    if not failed:
        return None
    shown = "; ".join(f"r{s['rank']} {s['state']}" + (f" ({' '.join(str(s['error']).split())[:200]})" if s.get("error") else "")
                      for s in failed[:5])
    more = f"; and {len(failed) - 5} more" if len(failed) > 5 else ""
    return (f"{len(failed)} of {len(states)} jobs failed: {shown}{more} (each job's messages: {folder / JOBS_DIR}/"
            "r<i>.stderr; the same command runs them again)")


def main(args, script_argv=None):
    script_argv = list(script_argv or [])
    check_flags(args)
    if args.executor == "slurm" and not args.dry_run:
        check_slurm_here()
    sweep = plan(args, script_argv)
    if args.dry_run:
        print_jobs(sweep)
        return None
    folder = sweep_folder(sweep)
    fresh = next((p for p in [*reversed(folder.parents), folder] if not p.exists()), None)
    try:
        folder.mkdir(parents=True)
    except FileExistsError:
        fresh = None  # an existing sweep, or another launcher's just now: not ours to remove
    lock = folder_lock.acquire(folder, SWEEP_LOCK, "sweep folder")  # a second launcher refuses here
    try:
        return launch(args, sweep, folder, fresh)
    finally:
        folder_lock.release(lock)


def launch(args, sweep: dict, folder: Path, fresh: Path | None) -> Path:
    """Under the sweep's lock: submit (SLURM) or run (local) the jobs neither finished nor still queued."""
    known = folder / SWEEP_FILE
    before = read_sweep(folder)["jobs"] if known.is_file() else []
    finished = {s["rank"] for s in job_states(folder) if s["state"] == "finished"} if known.is_file() else set()
    queued, ended = set(), {}
    if args.executor == "slurm" and before:
        last = {job["rank"]: job["job_ids"][-1] for job in before if job.get("job_ids") and job["rank"] not in finished}
        still = queued_on_slurm(list(last.values()))
        queued = {rank for rank, job_id in last.items() if job_id in still}
        ended = {job["rank"]: tuple(job.get("job_ids", [])) for job in before if job["rank"] not in queued}
    todo = [job for job in sweep["jobs"] if job["rank"] not in finished | queued]
    if finished or queued:
        print(f"relaunching {folder}: {len(finished)} of {len(sweep['jobs'])} jobs finished"
              + (f", {len(queued)} still in SLURM's queue ({', '.join(f'r{r}' for r in sorted(queued))})" if queued else "")
              + ", skipped")
    record = {**sweep, "executor": args.executor, "launched": dt.datetime.now().isoformat(timespec="seconds"),
              "executor_options": {k: getattr(args, k) for k in ("max_parallel", "partition", "account", "qos",
                                                                 "constraint", "slurm_options", "gpus_per_job",
                                                                 "cpus_per_job", "mem", "timeout", "requeue_limit")}}
    for job, old in zip(record["jobs"], before):
        job["job_ids"] = old.get("job_ids", [])
    if not todo:
        write_json(known, record)
        print(f"every job of {folder} is finished or queued; aggregate with: python -m experiment.aggregate {folder}")
        return folder
    executor = make_executor(args, folder / SUBMITIT_DIR)
    jobs = [SweepJob(folder, job, sweep["results_dir"], sweep["cwd"]) for job in todo]
    for job in jobs:
        job.ended_job_ids = ended.get(job.rank, ())
    if args.executor == "slurm":
        job_ids = submit_array(executor, jobs, folder, fresh)  # sweep.json is written once SLURM took the jobs
        for job, job_id in zip(jobs, job_ids):
            record["jobs"][job.rank].setdefault("job_ids", []).append(job_id)
        write_json(known, record)
        print(f"submitted {len(jobs)} jobs as SLURM job {job_ids[0].split('_')[0]}; sweep folder {folder}")
        return folder

    def remember(rank, job_id):
        record["jobs"][rank].setdefault("job_ids", []).append(job_id)
        write_json(known, record)

    write_json(known, record)
    print(f"running {len(jobs)} jobs here, {args.max_parallel or 1} at a time; sweep folder {folder}")
    submitted = _wait_local(executor, jobs, args.max_parallel or 1, remember, folder)
    for rank, handle in submitted.items():
        if not (folder / JOBS_DIR / f"r{rank}.json").is_file():  # died before its first record
            record["jobs"][rank]["launch_error"] = str(handle.exception())[-2000:]
    write_json(known, record)
    states = job_states(folder)
    done = sum(s["state"] == "finished" for s in states)
    print(f"{done} of {len(states)} jobs finished; aggregate with: python -m experiment.aggregate {folder}")
    failed = failure_line(states, folder)
    if failed:
        print(f"error: {failed}", file=sys.stderr)
    return folder


class SweepFlags:
    """The parser run_main is given: the sweep's own flags are parsed, every other token is kept as the
    script's (args.script_argv); run_main's one-line refusal replaces argparse's usage text."""

    def __init__(self):
        self.parser = get_args_parser()
        self.error = self.parser.error

    def parse_args(self, argv=None):
        self.parser.error = self.error
        args, script_argv = self.parser.parse_known_args(argv)
        args.script_argv = script_argv
        return args


def cli(argv=None):
    """utils.cli.run_main's handling of a UserError: one line, exit 2. Exit 1 when a local sweep's jobs
    did not all finish (the line saying which is printed by launch)."""
    given = {}

    def run(args):
        given["executor"] = args.executor
        return main(args, args.script_argv)
    folder = run_main(run, SweepFlags(), argv)
    if folder is not None and given["executor"] == "local" and failure_line(job_states(folder), folder):
        sys.exit(1)


if __name__ == "__main__":
    # Imported, not run as __main__: submitit pickles SweepJob by reference to this module.
    from experiment.sweep import cli as module_cli
    module_cli()
