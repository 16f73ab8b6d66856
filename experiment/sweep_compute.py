"""What a sweep cost, read from its folder, and the command that runs it again.

Per sweep: its jobs, the wall hours of their attempts (each attempt's `ended` - `started`, as
jobs/r<i>.json records them; an attempt without an end, still running or killed with its job, is
counted apart), and the CPU hours of their scripts (the `cpu_s` each attempt records since the
evening of 3 December 2026, experiment/sweep_job.py). A sweep with any ended attempt that records
no CPU time has CPU hours null, never a partial sum. An evaluation sweep's training sweeps (sweep.json's
models_from) are looked up by name next to it, in the same sweeps folder, else at the path it
recorded (a training sweep of another day's folder), and counted with it; so are the sweeps whose runs
it read (sweep.json's hyperparameters_from: the runs that chose a Table 2 cell's hyperparameters, and
the training sweep of the checkpoints they evaluated), found the same way.

A sweep's role is what its script does: "training" for a script that trains (sweep.json's `training`,
the script having --resume), "evaluation" otherwise, whether it evaluates trained runs (--models-from,
--models) or a frozen random network (evaluate_omniglot.py --network-seed). A sweep.json written before
it recorded `training` is an evaluation when it names models or its script is an evaluate_*.py.
"""
import datetime as dt
import json
import os
import shlex
from pathlib import Path

from experiment.sweep_records import JOBS_DIR, read_sweep
from utils.errors import UserError

DEFAULT_RESULTS_DIR = "../results"  # experiment/sweep.py's default --results-dir
HOURS = 4  # decimals kept: 0.36 s; the timestamps are to the second
NAMED = ("models_from", "hyperparameters_from")  # sweep.json's keys that name the sweeps a sweep rests on


def as_list(value) -> list:
    """sweep.json's models_from: a list, one path (sweeps written before several were allowed), or None."""
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def _attempts(sweep_dir: Path, rank: int) -> list[dict]:
    try:
        record = json.loads((sweep_dir / JOBS_DIR / f"r{rank}.json").read_text())
    except (OSError, ValueError):
        return []  # never started, or a damaged record: no attempt to count
    attempts = record.get("attempts") if isinstance(record, dict) else None
    return [a for a in attempts if isinstance(a, dict)] if isinstance(attempts, list) else []


def _seconds(attempt: dict) -> float | None:
    try:
        return (dt.datetime.fromisoformat(attempt["ended"]) - dt.datetime.fromisoformat(attempt["started"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def _where(where: dict) -> list[str]:
    """--models-where's KEY=VALUE tokens, each value as experiment/sweep_plan.parse_where reads it back."""
    return [f"{key}={value if isinstance(value, str) else json.dumps(value, separators=(',', ':'))}"
            for key, value in where.items()]


def rerun_command(sweep: dict) -> str:
    """The launch command of a sweep, from its sweep.json, less the executor's flags: run from the
    repository root it makes the same jobs under the same name (in the default results folder,
    dated the day it runs)."""
    cwd = sweep.get("cwd") or "."
    words = ["python", "-m", "experiment.sweep", sweep.get("script") or "?", *map(str, sweep.get("argv") or [])]
    runs_of = [os.path.relpath(path, cwd) for path in as_list(sweep.get("models_from"))]
    if runs_of:
        words += ["--models-from", *runs_of]
    models = [os.path.relpath(path, cwd) for path in as_list(sweep.get("models"))]
    if models:
        words += ["--models", *models]
    if sweep.get("models_where"):
        words += ["--models-where", *_where(sweep["models_where"])]
    words += ["--name", sweep["name"]]
    if sweep.get("results_dir") and os.path.relpath(sweep["results_dir"], cwd) != DEFAULT_RESULTS_DIR:
        words += ["--results-dir", os.path.relpath(sweep["results_dir"], cwd)]
    return shlex.join(words)


def role_of(sweep: dict) -> str:
    """"training" or "evaluation", from sweep.json (the module's docstring says the rule)."""
    if isinstance(sweep.get("training"), bool):
        return "training" if sweep["training"] else "evaluation"
    if as_list(sweep.get("models_from")) or as_list(sweep.get("models")):
        return "evaluation"
    return "evaluation" if Path(str(sweep.get("script") or "")).name.startswith("evaluate_") else "training"


def sweep_cost(sweep_dir, role_if_unread: str = "training") -> dict:
    """One sweep's role, jobs, hours and rerun command; `missing` (and the role it was looked up as)
    instead where its folder cannot be read."""
    sweep_dir = Path(sweep_dir)
    try:
        sweep = read_sweep(sweep_dir)
    except UserError as err:
        return {"name": sweep_dir.name, "role": role_if_unread, "missing": str(err), "jobs": None,
                "wall_hours": None, "cpu_hours": None}
    wall, cpu, ended, unended, cpu_missing = 0.0, 0.0, 0, 0, 0
    for job in sweep["jobs"]:
        for attempt in _attempts(sweep_dir, job["rank"]):
            seconds = _seconds(attempt)
            if seconds is None:
                unended += 1
                continue
            ended += 1
            wall += seconds
            if isinstance(attempt.get("cpu_s"), (int, float)):
                cpu += attempt["cpu_s"]
            else:
                cpu_missing += 1
    options = sweep.get("executor_options") or {}
    return {"name": sweep["name"], "role": role_of(sweep), "script": sweep.get("script"), "jobs": len(sweep["jobs"]),
            "attempts": ended, "attempts_without_end": unended,
            "wall_hours": round(wall / 3600, HOURS),
            "cpu_hours": round(cpu / 3600, HOURS) if ended and not cpu_missing else None,
            # jobs of the sweep at once: a local sweep's default is one; a SLURM array's, no limit (null)
            "executor": sweep.get("executor"),
            "max_parallel": options.get("max_parallel") or (1 if sweep.get("executor") == "local" else None),
            "models_from": [Path(p).name for p in as_list(sweep.get("models_from"))],
            "hyperparameters_from": [Path(p).name for p in as_list(sweep.get("hyperparameters_from"))],
            "folder": os.path.relpath(sweep_dir.resolve(), sweep.get("cwd") or "."), "rerun": rerun_command(sweep)}


def sweeps_cost(sweep_dirs) -> list[dict]:
    """The cost of each sweep given and of each sweep they name (models_from, hyperparameters_from:
    recorded_folders), and so on; every sweep once."""
    costs, seen = [], set()
    queue = [Path(d) for d in sweep_dirs]
    while queue:
        folder = queue.pop(0)
        if folder.name in seen:
            continue
        seen.add(folder.name)
        cost = sweep_cost(folder)
        for key in NAMED:
            queue += recorded_folders(folder, key) if cost.get(key) else []
        costs.append(cost)
    return costs


def training_folders(sweep_dir: Path) -> list[Path]:
    """The training sweeps an evaluation sweep evaluates (models_from)."""
    return recorded_folders(sweep_dir, "models_from")


def recorded_folders(sweep_dir: Path, key: str) -> list[Path]:
    """The sweeps sweep.json names under `key`: next to it by name (a results tree moved as a whole),
    else where sweep.json recorded them (a sweep of another day's folder)."""
    sweep = read_sweep(sweep_dir)
    folders = []
    for recorded in as_list(sweep.get(key)):
        beside = sweep_dir.parent / Path(recorded).name
        where = Path(sweep.get("cwd") or ".", recorded)  # an absolute path stays as it is
        folders.append(beside if beside.is_dir() or not where.is_dir() else where)
    return folders


def rerun_aggregate(made_by: str, costs: list[dict]) -> str:
    """The aggregate's command (a summary's made_by, which names its sweeps) with each sweep's folder as
    seen from the repository root, and an --out where several sweeps need one."""
    words = shlex.split(made_by)
    folders = {c["name"]: c["folder"] for c in costs if "folder" in c}
    named = [w for w in words if w in folders]
    words = [folders.get(w, w) for w in words]
    if len(named) > 1 and "--out" not in words and "--summary" in words[:-1]:
        stem = Path(words[words.index("--summary") + 1]).stem
        words[words.index("--summary"):words.index("--summary")] = ["--out", f"/tmp/agg_{stem}"]
    return shlex.join(words)


def total(costs: list[dict]) -> dict:
    """Jobs and hours summed over sweeps; CPU hours null unless every sweep records them."""
    read = [c for c in costs if "missing" not in c]
    cpu = [c["cpu_hours"] for c in read]
    return {"sweeps": len(costs), "jobs": sum(c["jobs"] for c in read),
            "wall_hours": round(sum(c["wall_hours"] for c in read), HOURS),
            "cpu_hours": round(sum(cpu), HOURS) if read and None not in cpu and len(read) == len(costs) else None}
