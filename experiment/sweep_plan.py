"""A sweep's plan: which of this repository's scripts it runs, which jobs, with which commands.

Every flag the script lets take several values (experiment/grid.py) spans the grid; job i runs the
user's command unchanged plus `--rank i` (plus `--name <sweep>_r<i>` and an absolute `--results-dir`).
`--models-from SWEEP_DIR` adds one job per finished training run of that sweep (`--model RUN_DIR`),
`--models-where KEY=VALUE` keeping the runs whose config.json has those values; `--models PATH ...`
one job per run folder or checkpoint file given (`--model <its absolute path>`). A flag whose values are
earlier runs the script reads (evaluate_omniglot.py's --hyperparameters-from, RUNS_READ) has the sweeps
that made those runs recorded beside models_from (`hyperparameters_from`), so that their cost is counted
with this sweep's (experiment/sweep_compute.py).
"""
import argparse
import ast
import contextlib
import hashlib
import importlib.util
import io
import json
import math
import os
import re
import sys
from pathlib import Path

from experiment import grid
from experiment.checkpoint import resolve_checkpoint_path
from experiment.sweep_records import excluded_by, find_sweep, job_states, value_matches
from utils import bounds
from utils.errors import UserError

REPO = Path(__file__).resolve().parents[1]
# Flags the sweep sets for every job; in the script's command they would contradict it.
RESERVED = ("--rank", "--resume", "--model")
# Script flags whose values are earlier run folders the script reads, not evaluates: Table 2's cells
# take their hyperparameters from the runs that searched them (evaluate_omniglot.py).
RUNS_READ = ("hyperparameters_from",)


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
    choices = script_grid(module, parser, script_argv, bool(args.models_from or args.models))
    per_model, swept = grid.size(choices), grid.swept(choices)
    models = [None]
    if args.models_from and args.models:
        raise UserError("give --models-from SWEEP_DIR or --models PATH ..., not both: a sweep evaluates one of them")
    if args.models_where and not args.models_from:
        raise UserError("--models-where filters the runs of --models-from (not --models); give --models-from SWEEP_DIR")
    flag = "--models-from" if args.models_from else "--models" if args.models else None
    if flag and "model" not in _dests(parser).values():
        raise UserError(f"{flag} needs an evaluation script (one with --model); {path.name} has none")
    if args.models:
        models = given_models(args.models)
    if args.models_from:
        where = parse_where(args.models_where)
        models = [run for sweep_dir in args.models_from for run in finished_runs(Path(sweep_dir), where)
                  if config_matches(run, where)]
        if not models:
            raise UserError(f"--models-where {' '.join(args.models_where)}: no finished run of --models-from matches")
    training = is_training(parser)
    read_from = sweeps_read(parser, script_argv)
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
            "models": [str(m) for m in models] if args.models else None,
            "hyperparameters_from": [str(folder) for folder in read_from] or None,
            "results_dir": str(results_dir), "cwd": os.getcwd(), "training": training, "jobs": jobs}


def sweep_of_run(run) -> Path | None:
    """The folder of the sweep whose job made the run folder `run`, or None for a run no sweep made. A
    sweep job's run is <results-dir>/<date>/<dataset>/<sweep>_r<i>_<n>, and its job record names it."""
    run = Path(run).resolve()
    named = re.fullmatch(r"(.+)_r\d+_\d+", run.name)
    folder = find_sweep(run.parents[2], named[1]) if named and len(run.parents) > 2 else None
    if folder is None:
        return None
    made = {Path(s["run_dir"]).resolve() for s in job_states(folder) if s.get("run_dir")}
    return folder if run in made else None


def sweeps_read(parser, argv: list) -> list[Path]:
    """The sweeps that made the runs named by the script's RUNS_READ flags, each once, in the order named."""
    args = vars(parser.parse_args(argv))  # script_grid parsed it already: no error here
    runs = [run for dest in RUNS_READ for run in (args.get(dest) or [])]
    folders = []
    for folder in map(sweep_of_run, runs):
        if folder is not None and folder not in folders:
            folders.append(folder)
    return folders


def given_models(paths: list[str]) -> list[Path]:
    """--models' paths, absolute, each a checkpoint file or a run folder holding one (checked here, before
    any job is planned, so that no sweep folder is made for a typo); one path given twice is refused,
    as its two jobs would count one model's evaluation twice in the aggregate."""
    models = []
    for given in paths:
        model = Path(given).resolve()
        if not model.exists():
            raise UserError(f"--models {given}: no such file or folder")
        try:
            resolve_checkpoint_path(model)
        except UserError as err:
            raise UserError(f"--models {given}: {err}") from None
        if model in models:
            raise UserError(f"--models {given}: given twice (one job per model)")
        models.append(model)
    return models


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
    return all(value_matches(config[key], wanted) for key, wanted in where.items())


def finished_runs(sweep_dir: Path, where: dict | None = None) -> list[Path]:
    """The run folders of a sweep's finished jobs, in rank order. A sweep with unfinished jobs is refused,
    except jobs whose grid combination --models-where excludes: a candidate that failed for good (a rate
    at which training dies) then does not block evaluating the others, and is left out by name."""
    states = [s for s in job_states(sweep_dir) if not excluded_by(s, where or {})]
    unfinished = [f"r{s['rank']} ({s['state']})" for s in states if s["state"] != "finished"]
    if unfinished:
        raise UserError(f"--models-from {sweep_dir}: jobs not finished: {', '.join(unfinished)}; relaunch that sweep "
                        "first (finished jobs are skipped)")
    return [Path(s["run_dir"]) for s in states]
