"""Run a script over every combination of its list-valued flags, on this machine or as one SLURM array.

    python -m experiment.sweep oml_regression.py --preset quick --seed 1 2 3 --method oml pretraining srnn \
        --executor local --max-parallel 2
    python -m experiment.sweep oml_omniglot.py --preset cpu --seed 1 2 3 --method oml pretraining srnn \
        --executor slurm --partition gpu --gpus-per-job 1 --cpus-per-job 8 --timeout 720 --max-parallel 9
    python -m experiment.sweep evaluate_regression.py --runs 50 --models-from SWEEP_DIR   # evaluate each trained run
    python -m experiment.sweep evaluate_regression.py --models-from A B --models-where method=srnn srnn_beta=0.1
    python -m experiment.sweep evaluate_omniglot.py --seed 1 2 --models trained_models/omniglot_cpu_wide_oml.pt RUN_DIR
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

`--models PATH ...` is the same for models not made by a sweep: one job per run folder or
checkpoint file given (a shipped trained_models/*.pt, say), in the order given, per combination
of the evaluation flags, `--model <its absolute path>` added. A sweep evaluates either the runs of
--models-from or the --models given, never both (one source of models, so that the jobs' order
is plainly the models' order); --models-where filters --models-from only. Each path must exist and be a
checkpoint or a folder holding one before anything is written; sweep.json records them (`models`).

The sweep folder is `<results-dir>/<date>/sweeps/<name>/`: sweep.json (the command, the grid and
every job, written by this launcher), each job's own record and standard error under jobs/, and
submitit's files (its layout: experiment/sweep_records.py).
The default name is the script's and a digest of the command, so launching the same command
again (with the same --results-dir) finds the sweep and submits only the jobs not finished:
a failed or killed job runs again, and a training job whose run folder holds a checkpoint
resumes from it (`--resume`). A different command under an existing --name is refused (the
interpreter's path is compared resolved: a symlink or a relative spelling is the same command).
A local sweep whose jobs did not all finish exits 1 with one line naming them.

A job answers SLURM's preemption and time-limit signals by keeping its last checkpoint and being
requeued, which resumes it (experiment/sweep_job.py); `--requeue-limit` bounds the requeues after a
time-out.

One launcher at a time per sweep folder (sweep.lock): a second launch of the same sweep refuses
while the first submits or (local) runs. A SLURM relaunch skips the jobs still in SLURM's queue.
docs/cluster.md says what each failure looks like and what to do.

The parts: experiment/sweep_plan.py (the scripts, the grid, each job's command), sweep_records.py
(the folder's records, read back), sweep_job.py (one job, as submitit runs it) and sweep_executor.py
(submitit's executor, SLURM's sbatch and squeue, the local jobs).
"""
import argparse
import datetime as dt
import json
import math
import shlex
import sys
from pathlib import Path

from experiment import grid, sweep_records
from experiment import lock as folder_lock
from experiment.sweep_executor import check_slurm_here, make_executor, queued_on_slurm, sbatch_extra, submit_array, wait_local
from experiment.sweep_job import SweepJob
from experiment.sweep_plan import plan
from experiment.sweep_records import JOBS_DIR, SUBMITIT_DIR, SWEEP_FILE, SWEEP_LOCK, job_states, read_sweep, sweep_folder
from utils import bounds
from utils.cli import run_main
from utils.errors import UserError
from utils.files import write_json

# submitit's default: a job that reaches its --timeout is requeued this many times (preemptions are
# not counted). A run whose --save-every interval outlasts --timeout never progresses, and 3 bounds
# what it wastes; long trainings cut into short slots want more (DINO and MAE use 30).
DEFAULT_REQUEUE_LIMIT = 3
MAX_TIMEOUT_MIN = 366 * 24 * 60    # a year: past it a number is a typo (SLURM's own limit is per partition)
MAX_CPUS, MAX_GPUS, MAX_MEM_GB = 1024, 64, 65536  # more than one node has
SLURM_ONLY = ("partition", "account", "qos", "constraint", "slurm_options", "gpus_per_job", "cpus_per_job", "mem")


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
    parser.add_argument("--models", nargs="+", default=None, metavar="PATH",
                        help="evaluate these run folders or checkpoint files (adds --model PATH per job; "
                             "not with --models-from)")
    parser.add_argument("--models-where", dest="models_where", nargs="+", default=[], metavar="KEY=VALUE",
                        help="with --models-from: only the runs whose config.json has these values "
                             "(e.g. method=srnn; seed=[1,2]: any of them)")
    parser.add_argument("--name", default=None, help="sweep name (default: the script's and a digest of the command); "
                                                     "job i's runs are named <name>_r<i>")
    parser.add_argument("--results-dir", "--results_dir", dest="results_dir", default="../results",
                        help="root of the run folders and of <date>/sweeps/<name>/ (default ../results)")
    parser.add_argument("--dry-run", dest="dry_run", action="store_true", help="print one line per job; write nothing")
    return parser


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


def print_jobs(sweep: dict) -> None:
    runs = len(sweep["jobs"]) // grid.size(sweep["grid"])
    models = (f" x {runs} runs of {', '.join(sweep['models_from'])}" if sweep["models_from"]
              else f" x --models {' '.join(sweep['models'])}" if sweep.get("models") else "")
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
    sweep_records.refuse_running_attempts(folder, [job["rank"] for job in todo])  # an earlier launch's script still runs here
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
    submitted = wait_local(executor, jobs, args.max_parallel or 1, remember, folder)
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
    cli()
