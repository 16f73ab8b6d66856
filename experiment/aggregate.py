"""Combine a sweep's evaluations over meta-training seeds: mean and 95% CI across seeds.

    python -m experiment.aggregate SWEEP_DIR            # tables on stdout, files in SWEEP_DIR/aggregate/
    python -m experiment.aggregate SWEEP_A SWEEP_B --out DIR   # one table from several sweeps (one per method, say)
    python -m experiment.aggregate NEW --summary S.json --keep-rows S.json   # one method redone, other rows kept
    python -m experiment.aggregate NEW --summary S.json --add-rows S.json    # a candidate added to S's rows
    python plot_results.py SWEEP_DIR --out fig.png      # Fig. 3 / Fig. 4 with bands across seeds

Reads a sweep of experiment/sweep.py: a training sweep (each run's own evaluation after
training, results.json) or an evaluation sweep (`--models-from`: evaluate_*.py runs). Each
finished job is grouped by what was evaluated, less its seed: the evaluated checkpoint's
config (method, preset, every setting), an evaluation run's flags that change its numbers
(--pln-reset, --protocol, --lr, ...: NOT_EVALUATION_SETTINGS lists the others) and the job's
swept flags other than --seed and --model. Within a group:

* per meta-training seed (the evaluated checkpoint's config `seed`), the runs of every job of
  that seed are pooled (evaluations repeated with other evaluation seeds are runs of the same
  seed): their mean is the seed's number, their bootstrap CI the spread *within* the seed;
* across seeds: the mean of the seeds' numbers and its 95% Student-t interval over seeds
  (utils.stats.t_interval; a percentile bootstrap of three or five values never leaves their
  range, so it would overstate what so few seeds show). With one seed there is no spread across
  seeds; the tables say so instead of printing a zero-width interval.

The two spreads are kept apart: the runs of one seed share its representation, so pooling them
with other seeds' runs would count one trained network many times.

A job that failed, is still running or never started is listed with its state and error text,
and never averaged in; so is a finished training run without results (trained with
`--eval-runs 0`: evaluate it with `--models-from`), and a job whose record, config.json or
results.json is damaged (state "damaged", the problem as its error). With no usable job at all,
or a damaged sweep.json, the command refuses in one line and writes nothing.

A Table 2 sweep (evaluate_omniglot.py --learner online iid er mer ewc) is grouped by the paper's
column and aggregated per cell (setting x learner) the same way: experiment/aggregate_table2.py.

Writes SWEEP_DIR/aggregate/ (or --out): one results file per group in the evaluation's own format
(curve / per_function for sine, by_classes for Omniglot, their CIs across seeds, plus `by_seed`),
which plot_results.py draws unchanged; summary.json; tables.md (the README's layout); and the
marker .experiment-aggregate. An existing --out is written only if it is empty or an earlier
aggregate's; its files are never deleted, except the group files its own summary.json lists.
"""
import argparse
import json
import re
from pathlib import Path

import numpy as np

from experiment import aggregate_table2, summaries
from experiment.method_fields import OMNIGLOT_METHOD_FIELDS, SINE_METHOD_FIELDS, fields_not_read
from experiment.summaries import summary_of
from experiment.sweep_compute import training_folders
from experiment.sweep_records import excluded_by, job_states, read_sweep
from utils import bounds
from utils.cli import run_main
from utils.errors import UserError
from utils.files import write_json
from utils.stats import bootstrap_ci, t_interval

OUT_DIR = "aggregate"
METHOD_LABELS = {"oml": "OML", "pretraining": "Pretraining", "srnn": "SR-NN", "maml-rep": "MAML-Rep", "anml": "ANML",
                 "random": "Random", "untrained": "Untrained"}
# job settings that do not tell groups apart (--network-seed: a random RLN's, recorded as its config's seed)
SWEEP_ONLY = ("seed", "model", "rank", "network_seed")
# An evaluation's flags that cannot change its numbers (where it ran, what it is called, how it is
# batched) or are handled apart (--seed and --runs: repeated evaluations of one seed are pooled as
# more runs of it). Every other flag (--pln-reset, --protocol, --lr, --rln, --learner, ...) tells
# groups apart: evaluations of one checkpoint under two protocols are two rows, never one pool.
NOT_EVALUATION_SETTINGS = ("model", "seed", "network_seed", "runs", "rank", "name", "results_dir", "progress", "device", "tf32",
                           "cache_dir", "feature_cache", "path", "engine", "run_batch", "test")


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", nargs="+", help="sweep folders (<results-dir>/<date>/sweeps/<name>/); several: "
                                                 "their evaluations grouped together (give --out)")
    parser.add_argument("--out", default=None, help="output folder (default SWEEP_DIR/aggregate; needed for several)")
    parser.add_argument("--summary", default=None, metavar="FILE",
                        help="also write the small summary the repository keeps (summaries/<table>.json; "
                             "experiment/summaries.py)")
    parser.add_argument("--keep-rows", default=None, metavar="SUMMARY",
                        help="with --summary: keep the rows of this earlier summary whose method the sweeps given "
                             "hold no evaluation of (one method meta-trained again, the others as they were; "
                             "experiment/summaries.py)")
    parser.add_argument("--add-rows", default=None, metavar="SUMMARY",
                        help="with --summary: keep every row of this earlier summary and add the sweeps' rows, "
                             "labelled by the settings that tell its rows apart (a grid of candidates extended "
                             "past its edge; experiment/summaries.py)")
    parser.add_argument("--label-by", nargs="+", default=(), metavar="SETTING",
                        help="also label the rows by these settings (config fields, e.g. update_lr) where they do "
                             "not already tell them apart: a candidate added with --add-rows that differs from the "
                             "earlier rows in a setting they all share")
    return parser


# --- reading the sweep -----------------------------------------------------------------------------

class NotCounted(Exception):
    """A finished job whose evaluation cannot be read: (state, why), listed with the jobs not counted."""


def _check_result(result: dict) -> None:
    """Touch every part of `result` the aggregation reads, so a damaged file is one job not counted."""
    try:
        if result["benchmark"] == aggregate_table2.BENCHMARK:
            aggregate_table2.check_result(result)
        elif result["benchmark"] == "sine":
            for key in ("curve", "per_function"):
                if np.asarray(result["runs"][key], dtype=np.float64).ndim != 2:
                    raise ValueError(f"runs.{key} is not a runs x values table")
        else:  # a class count absent from by_classes is left out by aggregate_omniglot, not an error
            present = [str(n) for n in result["schedule"] if str(n) in result["by_classes"]]
            if not present:
                raise ValueError("by_classes holds none of the schedule's class counts")
            for n in present:
                for key in ("trajectory_accuracy", "held_out_accuracy"):
                    np.asarray(result["by_classes"][n]["runs"][key], dtype=np.float64)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise NotCounted("damaged", f"its results.json lacks what an aggregate reads ({type(err).__name__}: "
                                    f"{str(err)[:100]})") from None


def _evaluation(job: dict, sweep_name: str) -> dict:
    """The evaluation of one finished job: its seed, its settings less the seed, its result."""
    if not isinstance(job.get("run_dir"), str):
        raise NotCounted("damaged", "its record names no run folder")
    run = Path(job["run_dir"])
    if not (run / "results.json").is_file():
        raise NotCounted("no results", f"{run} holds no results.json (trained with --eval-runs 0?); evaluate it with "
                                       "python -m experiment.sweep evaluate_*.py --models-from <this sweep>")
    try:
        config = json.loads((run / "config.json").read_text())
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        raise NotCounted("damaged", f"{run / 'config.json'} is unreadable ({type(err).__name__}), so its method "
                                    "and seed are unknown") from None
    evaluated = config.get("evaluated", config)  # an evaluation run records the checkpoint's config
    try:
        result = aggregate_table2.read(run)
    except UserError as err:
        raise NotCounted("damaged", str(err)) from None
    _check_result(result)
    if not isinstance(evaluated, dict):
        raise NotCounted("damaged", f"{run / 'config.json'}: 'evaluated' is not the checkpoint's config")
    if type(evaluated.get("seed")) is not int:
        raise NotCounted("damaged", f"{run / 'config.json'} records no integer seed")
    method = result.get("model", {}).get("method") if isinstance(result.get("model"), dict) else None
    # a field the method never reads (OML's checkpoint records the preset's srnn_beta) is no setting
    # of it: a preset's later change of that field must not split the method's seeds into two rows
    ignored = fields_not_read(method or evaluated.get("method"),
                              SINE_METHOD_FIELDS if result["benchmark"] == "sine" else OMNIGLOT_METHOD_FIELDS)
    settings = {k: v for k, v in evaluated.items() if k != "seed" and k not in ignored}
    arguments = config.get("args") if "evaluated" in config else None
    if isinstance(arguments, dict):  # a flag "evaluated" records (--rln, the learner) is counted there
        settings.update({f"--{k.replace('_', '-')}": v for k, v in arguments.items()
                         if v is not None and k not in evaluated and k not in NOT_EVALUATION_SETTINGS})
    combination = job.get("combination") if isinstance(job.get("combination"), dict) else {}
    settings.update({k: v for k, v in combination.items() if k not in SWEEP_ONLY})
    settings["method"] = method or evaluated.get("method")
    if result["benchmark"] == aggregate_table2.BENCHMARK:  # a column of Table 2, whichever learners it ran
        settings = aggregate_table2.group_settings(settings, result)
    return {"sweep": sweep_name, "rank": job["rank"], "run_dir": str(run), "seed": evaluated.get("seed"),
            "settings": settings, "result": result}


def collect(sweep_dir) -> tuple[list[dict], list[dict]]:
    """(evaluations of finished jobs, problems: every job not counted, with its state and error)."""
    evaluations, problems = [], []
    for job in job_states(sweep_dir):
        problem = {"sweep": Path(sweep_dir).name, "rank": job["rank"], "state": job["state"], "run_dir": job.get("run_dir"),
                   "error": job.get("error"), "command": job.get("command")}
        if job["state"] != "finished":
            problems.append(problem)
            continue
        try:
            evaluations.append(_evaluation(job, Path(sweep_dir).name))
        except NotCounted as why:
            state, error = why.args
            problems.append({**problem, "state": state, "error": error})
    return evaluations, problems + left_out_in_training(Path(sweep_dir))


def left_out_in_training(sweep_dir: Path) -> list[dict]:
    """The training jobs an evaluation sweep's --models-where left out because they never finished (a
    candidate at which training died): a summary of the candidates then names every one that was tried."""
    where = read_sweep(sweep_dir).get("models_where") or {}
    if not where:
        return []  # without a filter, an unfinished training job blocks the evaluation sweep (sweep_plan)
    problems = []
    for folder in training_folders(sweep_dir):
        if not (folder / "sweep.json").is_file():
            continue  # a training sweep that is gone: its cost is reported missing by the compute table
        problems += [{"sweep": folder.name, "rank": job["rank"], "state": f"{job['state']} in training",
                      "run_dir": job.get("run_dir"), "error": job.get("error"), "command": job.get("command")}
                     for job in job_states(folder) if job["state"] != "finished" and excluded_by(job, where)]
    return problems


def _key(settings: dict) -> str:
    return json.dumps(settings, sort_keys=True)


def _follows_method(name: str, settings: list[dict]) -> bool:
    values = {}
    for s in settings:
        values.setdefault(s["method"], set()).add(json.dumps(s.get(name)))
    return len(values) > 1 and all(len(v) == 1 for v in values.values())


def groups_of(evaluations: list[dict], tell_apart=()) -> list[dict]:
    """Evaluations grouped by their settings less the seed, each labelled by what tells it apart (and by
    `tell_apart`: the settings labelling the rows of an earlier summary they join, and --label-by's)."""
    grouped = {}
    for entry in evaluations:
        grouped.setdefault(_key(entry["settings"]), []).append(entry)
    settings = [members[0]["settings"] for members in grouped.values()]
    names = sorted({name for s in settings for name in s})
    differing = [n for n in names if n != "method" and len({json.dumps(s.get(n)) for s in settings}) > 1]
    # A setting that only follows the method (the i.i.d. baselines' own --steps, say) is part of the
    # method's recipe, not a second network: such rows would put each method on a row of its own.
    differing = [n for n in differing if not _follows_method(n, settings)]
    added = [n for n in tell_apart if n not in differing and any(n in s for s in settings)]
    groups = []
    for members in grouped.values():
        first = members[0]["settings"]
        # an added name labels the rows whose method has that setting (a random RLN has no Adam rate)
        labelled = differing + [n for n in added if n in first]
        row = ", ".join(f"{n}={first.get(n)}" for n in labelled) or str(first.get("preset"))
        method = METHOD_LABELS.get(first["method"], str(first["method"]))
        groups.append({"method": method, "row": row, "label": f"{method} ({row})", "settings": first,
                       "differing": {n: first.get(n) for n in labelled},
                       "members": sorted(members, key=lambda e: (e["seed"], e["rank"]))})
    return groups


# --- statistics ------------------------------------------------------------------------------------

def _by_seed(members: list[dict], runs_of) -> dict:
    """{seed: array of the pooled runs of that seed's evaluations} (runs along axis 0)."""
    pooled = {}
    for entry in members:
        pooled.setdefault(entry["seed"], []).append(np.asarray(runs_of(entry["result"]), dtype=np.float64))
    try:
        return {seed: np.concatenate(parts) for seed, parts in pooled.items()}
    except ValueError as err:
        raise UserError(f"the runs of one seed have different shapes ({err}); were they evaluated alike?") from None


def _across(seed_runs: dict):
    """(t interval across seeds of the seeds' means, the means as an array seeds x ...)."""
    means = np.stack([runs.mean(axis=0) for runs in seed_runs.values()])
    return t_interval(means), means


def aggregate_sine(group: dict) -> dict:
    members = group["members"]
    curves = _by_seed(members, lambda r: r["runs"]["curve"])
    finals = _by_seed(members, lambda r: r["runs"]["per_function"])
    curve, curve_means = _across(curves)
    per_function, _ = _across(finals)
    by_seed = {str(seed): {"runs": int(runs.shape[0]), "curve": bootstrap_ci(runs), "final_mse": bootstrap_ci(runs[:, -1]),
                           "first_mse": bootstrap_ci(runs[:, 0]),
                           "run_dirs": [e["run_dir"] for e in members if e["seed"] == seed]}
               for seed, runs in curves.items()}
    return {"benchmark": "sine", "label": group["label"], "curve": curve, "per_function": per_function,
            "final_mse": t_interval(curve_means[:, -1]), "first_mse": t_interval(curve_means[:, 0]),
            "by_seed": by_seed}


def aggregate_omniglot(group: dict) -> dict:
    members = group["members"]
    schedule = [n for n in members[0]["result"]["schedule"]
                if all(str(n) in e["result"]["by_classes"] for e in members)]
    by_classes = {}
    for n in schedule:
        entry = {"by_seed": {}}
        for key in ("trajectory_accuracy", "held_out_accuracy"):
            seed_runs = _by_seed(members, lambda r, key=key, n=n: r["by_classes"][str(n)]["runs"][key])
            entry[key], _ = _across(seed_runs)
            for seed, runs in seed_runs.items():
                entry["by_seed"].setdefault(str(seed), {"runs": int(runs.shape[0])})[key] = bootstrap_ci(runs)
        by_classes[str(n)] = entry
    return {"benchmark": "omniglot", "label": group["label"], "schedule": schedule, "by_classes": by_classes}


def aggregate_group(group: dict) -> dict:
    kinds = {e["result"]["benchmark"] for e in group["members"]}
    if len(kinds) != 1:
        raise UserError(f"group {group['label']} mixes benchmarks {sorted(kinds)}")
    aggregated = {"sine": aggregate_sine, aggregate_table2.BENCHMARK: aggregate_table2.aggregate_group}
    result = aggregated.get(next(iter(kinds)), aggregate_omniglot)(group)
    seeds = sorted({e["seed"] for e in group["members"]})
    result["aggregate"] = {"over": "meta-training seeds (the evaluated checkpoint's config seed)", "seeds": seeds,
                           "ci": "95% Student-t interval across the seeds' means; "
                                 "by_seed: percentile bootstrap across that seed's runs",
                           "settings": group["settings"], "ranks": [e["rank"] for e in group["members"]],
                           "jobs": [f"{e['sweep']}/r{e['rank']}" for e in group["members"]]}
    return result


# --- tables ----------------------------------------------------------------------------------------

def _number(value: float, benchmark: str) -> str:
    return f"{value:.3f}" if benchmark == "sine" else f"{value:.3f}".lstrip("0")


def _cell(stats: dict, n_seeds: int, benchmark: str) -> str:
    mean = _number(stats["mean"], benchmark)
    if n_seeds < 2:
        return f"{mean} (one seed)"
    return f"{mean} ({_number(stats['ci_low'], benchmark)}–{_number(stats['ci_high'], benchmark)})"


def _headline(result: dict):
    """(the statistics in the table's cells, a caption): sine final MSE; Omniglot held-out accuracy
    after the first and the last class count."""
    if result["benchmark"] == "sine":
        return [result["final_mse"]], f"MSE after learning {len(result['curve']['mean'])} functions (lower is better)"
    first, last = result["schedule"][0], result["schedule"][-1]
    stats = [result["by_classes"][str(first)]["held_out_accuracy"], result["by_classes"][str(last)]["held_out_accuracy"]]
    return stats, f"held-out accuracy after {first} / {last} classes (higher is better)"


def table_across(groups: list[dict], results: list[dict]) -> str:
    benchmark = results[0]["benchmark"]
    methods = list(dict.fromkeys(g["method"] for g in groups))
    rows = list(dict.fromkeys(g["row"] for g in groups))
    cells, caption = {}, ""
    for group, result in zip(groups, results):
        stats, caption = _headline(result)
        cells[group["row"], group["method"]] = (stats, len(result["aggregate"]["seeds"]))
    lines = [f"{caption}; mean over meta-training seeds, 95% t interval across seeds:", "",
             "| network | " + " | ".join(methods) + " | seeds |", "|---" * (len(methods) + 2) + "|"]
    better = min if benchmark == "sine" else max
    for row in rows:
        present = [m for m in methods if (row, m) in cells]
        best = better(present, key=lambda m: cells[row, m][0][-1]["mean"]) if len(present) > 1 else None
        shown = []
        for method in methods:
            if (row, method) not in cells:
                shown.append("")
                continue
            stats, n = cells[row, method]
            text = " / ".join(_cell(s, n, benchmark) for s in stats)
            shown.append(f"**{text}**" if method == best else text)
        seeds = sorted({cells[row, m][1] for m in present})
        lines.append(f"| {row} | " + " | ".join(shown) + f" | {'/'.join(map(str, seeds))} |")
    return "\n".join(lines)


def table_within(groups: list[dict], results: list[dict]) -> str:
    lines = ["Per meta-training seed: mean over that seed's runs, 95% bootstrap CI across those runs:", "",
             "| network | seed | value | runs | run folders |", "|---|---|---|---|---|"]
    for group, result in zip(groups, results):
        benchmark = result["benchmark"]
        for seed in result["aggregate"]["seeds"]:
            if benchmark == "sine":
                within = result["by_seed"][str(seed)]
                stats, runs = [within["final_mse"]], within["runs"]
            else:
                first, last = result["schedule"][0], result["schedule"][-1]
                stats = [result["by_classes"][str(n)]["by_seed"][str(seed)]["held_out_accuracy"] for n in (first, last)]
                runs = result["by_classes"][str(last)]["by_seed"][str(seed)]["runs"]
            folders = ", ".join(Path(e["run_dir"]).name for e in group["members"] if e["seed"] == seed)
            value = " / ".join(_cell(s, 2, benchmark) for s in stats)
            lines.append(f"| {group['label']} | {seed} | {value} | {runs} | {folders} |")
    return "\n".join(lines)


def table_problems(problems: list[dict]) -> str:
    if not problems:
        return "Every job finished and is counted."
    lines = [f"{len(problems)} job(s) not counted (never averaged in):", "",
             "| job | state | run folder | error |", "|---|---|---|---|"]
    for p in problems:
        error = " ".join(str(p.get("error") or "").split())[:300]
        lines.append(f"| {p['sweep']}/r{p['rank']} | {p['state']} | {p.get('run_dir') or ''} | {error} |")
    return "\n".join(lines)


# --- the command -----------------------------------------------------------------------------------

def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", label).strip("_")[:100]


MARKER = ".experiment-aggregate"  # marks a folder this command wrote, whose files it may replace
OWN_FILES = re.compile(r"(summary\.json|tables\.md|group_\d+_.*\.json|\.experiment-aggregate)")


def output_folder(out: Path) -> Path:
    """The folder to write: new, empty, or an earlier aggregate's (its marker, or only files of the names
    this command writes). Any other folder holds someone's files, which are never replaced."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' is a file; give a folder (new, or one an earlier aggregate wrote)")
    if out.is_dir() and not (out / MARKER).is_file() and any(out.iterdir()):
        # an aggregate written before the marker existed: its summary.json and nothing but its own names
        foreign = sorted(p.name for p in out.iterdir() if not OWN_FILES.fullmatch(p.name))
        if foreign or not _is_summary(out / "summary.json"):
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "") if foreign else "no summary.json of ours"
            raise UserError(f"--out '{out}' holds files this command did not write ({shown}); give a new or empty "
                            "folder (nothing there was changed)")
    return bounds.writable_folder("--out", out)


def _is_summary(path: Path) -> bool:
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and {"groups", "not_counted"} <= set(summary)


def previous_group_files(out: Path) -> list[Path]:
    """The group files of an earlier aggregate in `out`, by its summary.json (a file it did not list stays)."""
    try:
        listed = [g["file"] for g in json.loads((out / "summary.json").read_text())["groups"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [out / name for name in listed if isinstance(name, str) and OWN_FILES.fullmatch(name) and (out / name).is_file()]


def aggregate(sweep_dirs, out=None, summary=None, keep_rows=None, add_rows=None, label_by=()) -> Path:
    """Aggregate one sweep folder, or several into one table (`out` then required); with `keep_rows`
    (a summary file), its rows of the methods these sweeps do not hold join the summary written; with
    `add_rows`, all its rows do, and these sweeps' rows follow them. `label_by`: settings that also label
    the rows (groups_of's tell_apart)."""
    sweep_dirs = [Path(d) for d in ([sweep_dirs] if isinstance(sweep_dirs, (str, Path)) else sweep_dirs)]
    if len(sweep_dirs) > 1 and out is None:
        raise UserError("several sweeps are aggregated into one folder: give --out DIR")
    if keep_rows is not None and add_rows is not None:
        raise UserError("give --keep-rows (replace a method's rows) or --add-rows (add rows), not both")
    earlier_file, flag = (keep_rows, "--keep-rows") if add_rows is None else (add_rows, "--add-rows")
    if earlier_file is not None and summary is None:
        raise UserError(f"{flag} keeps rows in a summary: give --summary FILE too")
    earlier = summaries.read_summary(earlier_file, flag) if earlier_file is not None else None
    if len({d.name for d in sweep_dirs}) != len(sweep_dirs):
        raise UserError(f"two sweeps of the same name: {' '.join(map(str, sweep_dirs))}")
    sweeps = [read_sweep(d) for d in sweep_dirs]
    out = output_folder(Path(out) if out else sweep_dirs[0] / OUT_DIR)
    summary = bounds.output_file("--summary", Path(summary), create_folder=True) if summary is not None else None
    evaluations, problems = [], []
    for sweep_dir in sweep_dirs:
        found, missing = collect(sweep_dir)
        evaluations += found
        problems += [p for p in missing if (p["sweep"], p["rank"]) not in {(q["sweep"], q["rank"]) for q in problems}]
    if not evaluations:
        listed = "; ".join(f"{p['sweep']}/r{p['rank']} {p['state']}" for p in problems[:5]) or "the sweep has no jobs"
        raise UserError(f"nothing to aggregate: no job of {' '.join(map(str, sweep_dirs))} has a usable evaluation "
                        f"({listed}{'; ...' if len(problems) > 5 else ''})")
    tell_apart = [*(summaries.telling_apart(earlier) if add_rows is not None else ()), *label_by]
    unknown = [n for n in label_by if not any(n in e["settings"] for e in evaluations)]
    if unknown:
        raise UserError(f"--label-by: no evaluation has the setting(s) {unknown} (the names of config.json's fields)")
    groups = groups_of(evaluations, tell_apart)
    results = [aggregate_group(g) for g in groups]
    kinds = {r["benchmark"] for r in results}
    if len(kinds) > 1:
        raise UserError(f"the sweep mixes benchmarks {sorted(kinds)}")
    for stale in previous_group_files(out):
        stale.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).touch()
    files = []
    for i, result in enumerate(results):
        files.append(out / f"group_{i:02d}_{_slug(result['label'])}.json")
        write_json(files[-1], result)
    parts = [f"# Sweep {sweep['name']}: {sweep.get('script')} {' '.join(map(str, sweep.get('argv') or []))}"
             for sweep in sweeps] + [""]
    if kinds == {aggregate_table2.BENCHMARK}:
        parts += aggregate_table2.tables(groups, results) + ["", table_problems(problems)]
    else:
        parts += [table_across(groups, results), "", table_within(groups, results), "", table_problems(problems)]
    text = "\n".join(parts) + "\n"
    (out / "tables.md").write_text(text)
    write_json(out / "summary.json", {
        "sweep": str(sweep_dirs[0]) if len(sweep_dirs) == 1 else [str(d) for d in sweep_dirs],
        "groups": [{"label": r["label"], "file": f.name, "seeds": r["aggregate"]["seeds"], "ranks": r["aggregate"]["ranks"],
                    "jobs": r["aggregate"]["jobs"]} for r, f in zip(results, files)],
        "not_counted": problems})
    if summary is not None:
        kept = f" {flag} {earlier_file}" if earlier_file is not None else ""
        kept += f" --label-by {' '.join(label_by)}" if label_by else ""
        command = f"python -m experiment.aggregate {' '.join(d.name for d in sweep_dirs)}{kept} --summary {summary}"
        written = summary_of(sweeps, groups, results, command, problems, sweep_dirs)
        if earlier is not None:
            join = summaries.keep_rows if add_rows is None else summaries.add_rows
            written = join(earlier, written, str(earlier_file))
        write_json(summary, written)
    print(text, end="")
    plot = "its tables: tables.md" if kinds == {aggregate_table2.BENCHMARK} else \
        f"plot it: python plot_results.py {out if len(sweep_dirs) > 1 else sweep_dirs[0]} --out figure.png"
    print(f"aggregate: {out} ({plot})")
    return out


def listed_group_files(out) -> list[Path]:
    """The group files an aggregate folder's summary.json lists, in its order."""
    out = Path(out)
    if not _is_summary(out / "summary.json"):
        raise UserError(f"'{out}' holds a summary.json that experiment.aggregate did not write")
    files = previous_group_files(out)
    if not files:
        raise UserError(f"aggregate '{out}' lists no group file that is there (run experiment.aggregate again)")
    return files


def group_files(sweep_dir) -> list[Path]:
    """The aggregated results files of a sweep (aggregating it first when they are absent)."""
    out = Path(sweep_dir) / OUT_DIR
    if not (out / "summary.json").is_file():
        aggregate(sweep_dir)
    files = sorted(out.glob("group_*.json"))
    if not files:
        raise UserError(f"sweep '{sweep_dir}' has no finished evaluation to plot (see {out / 'tables.md'})")
    return files


def main(args):
    return aggregate(args.sweep, args.out, args.summary, args.keep_rows, args.add_rows, args.label_by)


if __name__ == "__main__":
    run_main(main, get_args_parser())
