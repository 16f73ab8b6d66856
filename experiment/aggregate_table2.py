"""Table 2 evaluations (evaluate_omniglot.py --learner online iid er mer ewc) over meta-training seeds.

    python -m experiment.sweep evaluate_omniglot.py --learner online iid er mer ewc --models-from SWEEP --name T
    python -m experiment.aggregate ../results/DATE/sweeps/T --out DIR --summary summaries/<table>.json

experiment/aggregate.py reads the sweep (failed or damaged jobs are listed, never averaged in) and
hands Table 2 results here. A group is one column of the paper's table, less the meta-training seed:
the column the evaluation recorded ("OML" or "Pre-training" for a frozen checkpoint's RLN, "Standard"
for --whole-network), the checkpoint's config and the evaluation's flags, but not --learner (a job
may run some learners, another the rest: they are cells of one column). Per cell (setting x learner):

* per meta-training seed, the runs of every evaluation of that seed pooled: their mean held-out and
  trajectory accuracy with a 95% percentile bootstrap across those runs, and the hyperparameters
  each evaluation's search chose;
* across the seeds that have the cell: the mean of the seeds' means with its 95% Student-t interval
  (utils.stats.t_interval; one seed: no interval).

A cell's seeds can be fewer than its column's (a job that failed, or ran other learners), so each
cell keeps its own seed list.
"""
import json
from pathlib import Path

import numpy as np

from utils.errors import UserError
from utils.results import read_results
from utils.stats import bootstrap_ci, t_interval

BENCHMARK = "omniglot_table2"
KINDS = {"held_out": "held_out_accuracy", "trajectory": "trajectory_accuracy"}


def read(run) -> dict:
    """The results of an evaluation run: a Table 2 file as it is, any other through utils.results."""
    file = Path(run) / "results.json"
    try:
        result = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"no readable results file at '{file}' ({type(err).__name__})") from None
    return result if isinstance(result, dict) and result.get("benchmark") == BENCHMARK else read_results(run)


def check_result(result: dict) -> None:
    """Touch every part of a Table 2 result the aggregation reads (a KeyError, TypeError or
    ValueError marks the job damaged in experiment/aggregate.py)."""
    if not isinstance(result["column"], str):
        raise TypeError("column is not a name")
    if not result["table2"]:
        raise ValueError("table2 holds no cell")
    for key in ("settings", "learners"):  # the order of the cells
        if not isinstance(result.get(key, []), list):
            raise TypeError(f"{key} is not a list")
    for setting, by_learner in result["table2"].items():
        for learner, entry in by_learner.items():
            if not isinstance(entry["hyperparameters"], dict):
                raise TypeError(f"{setting}/{learner}: hyperparameters is not an object")
            for key in KINDS.values():
                runs = np.asarray(entry["runs"][key], dtype=np.float64)
                if runs.ndim != 1 or runs.size == 0:
                    raise ValueError(f"{setting}/{learner}: runs.{key} is not a list of accuracies")


def group_settings(settings: dict, result: dict) -> dict:
    """What tells this evaluation's group apart: its column in place of the checkpoint's method
    (the pretraining checkpoint is two columns: frozen, and --whole-network "Standard"); not the
    learners it ran."""
    return {**{k: v for k, v in settings.items() if k != "--learner"}, "method": result["column"]}


def cell_names(members: list[dict]) -> list[str]:
    """Every "setting/learner" any member has, in the order its evaluation ran them (its `settings` and
    `learners`; results.json keeps its keys sorted as text), then any it did not list."""
    names = {}
    for entry in members:
        result = entry["result"]
        ordered = [(s, ln) for s in result.get("settings", []) for ln in result.get("learners", [])]
        present = [(s, ln) for s, by_learner in result["table2"].items() for ln in by_learner]
        for setting, learner in [*(c for c in ordered if c in present), *present]:
            names[f"{setting}/{learner}"] = None
    return list(names)


def _entry(result: dict, cell: str):
    setting, learner = cell.split("/")
    return result["table2"].get(setting, {}).get(learner)


def aggregate_cell(members: list[dict], cell: str) -> dict:
    """One cell over seeds: per seed its pooled runs' means, across seeds the t interval of those means."""
    pooled, chosen = {}, {}
    for entry in members:
        found = _entry(entry["result"], cell)
        if found is None:
            continue
        for name, key in KINDS.items():
            pooled.setdefault(entry["seed"], {}).setdefault(name, []).extend(found["runs"][key])
        chosen.setdefault(entry["seed"], []).append(found["hyperparameters"])
    seeds = sorted(pooled)
    by_seed = {str(seed): {"runs": len(pooled[seed]["held_out"]), "hyperparameters": chosen[seed],
                           **{name: bootstrap_ci(pooled[seed][name]) for name in KINDS}} for seed in seeds}
    across = {name: t_interval([by_seed[str(seed)][name]["mean"] for seed in seeds]) for name in KINDS}
    return {"seeds": seeds, **across, "by_seed": by_seed}


def aggregate_group(group: dict) -> dict:
    """The group's results file: its column and every cell (experiment/aggregate.py adds `aggregate`)."""
    members = group["members"]
    return {"benchmark": BENCHMARK, "label": group["label"], "column": group["method"],
            "cells": {cell: aggregate_cell(members, cell) for cell in cell_names(members)}}


def summary_row(group: dict, result: dict) -> dict:
    """A row of the summary (experiment/summaries.py): one column, its cells' statistics flattened as
    metrics "held_out@1x50/online", "trajectory@5x20/er", ..., like the other summaries' "held_out@200"."""
    def rounded(stats):
        return {k: round(v, 6) for k, v in stats.items()}
    cells = result["cells"]
    seeds = result["aggregate"]["seeds"]
    return {
        "label": result["label"], "method": group["method"], "row": group["row"], "seeds": seeds,
        "settings": group.get("differing", {}),
        "metrics": {f"{name}@{cell}": rounded(stats[name]) for cell, stats in cells.items() for name in KINDS},
        "cell_seeds": {cell: stats["seeds"] for cell, stats in cells.items()},
        "by_seed": {str(seed): {
            "runs": {cell: stats["by_seed"][str(seed)]["runs"] for cell, stats in cells.items() if seed in stats["seeds"]},
            "hyperparameters": {cell: stats["by_seed"][str(seed)]["hyperparameters"]
                                for cell, stats in cells.items() if seed in stats["seeds"]},
            "metrics": {f"{name}@{cell}": rounded(stats["by_seed"][str(seed)][name])
                        for cell, stats in cells.items() if seed in stats["seeds"] for name in KINDS}}
            for seed in seeds},
        "jobs": result["aggregate"]["jobs"],
    }


# --- the aggregate's own tables.md (the docs' tables: analysis/tables.py) ----------------------------

def _percent(stats: dict, with_interval: bool) -> str:
    mean = f"{100 * stats['mean']:.1f}"
    return f"{mean} ({100 * stats['ci_low']:.1f}–{100 * stats['ci_high']:.1f})" if with_interval else f"{mean} (one seed)"


def tables(groups: list[dict], results: list[dict]) -> list[str]:
    """Markdown parts: held-out accuracy (%) per cell across seeds, then per seed with its hyperparameters."""
    across = ["Table 2, held-out accuracy (%): mean over meta-training seeds (95% t interval across seeds), seeds:", "",
              "| column | setting | learner | held-out | trajectory | seeds |", "|---|---|---|---|---|---|"]
    within = ["Per meta-training seed: mean over that seed's runs (95% bootstrap CI across those runs), the chosen "
              "hyperparameters:", "", "| column | setting | learner | seed | held-out | trajectory | runs | hyperparameters |",
              "|---|---|---|---|---|---|---|---|"]
    for result in results:
        for cell, stats in result["cells"].items():
            setting, learner = cell.split("/")
            several = len(stats["seeds"]) > 1
            across.append(f"| {result['label']} | {setting} | {learner} | {_percent(stats['held_out'], several)} | "
                          f"{_percent(stats['trajectory'], several)} | {len(stats['seeds'])} |")
            for seed, entry in stats["by_seed"].items():
                chosen = "; ".join(" ".join(f"{k}={v:g}" for k, v in hp.items()) for hp in entry["hyperparameters"])
                within.append(f"| {result['label']} | {setting} | {learner} | {seed} | {_percent(entry['held_out'], True)} | "
                              f"{_percent(entry['trajectory'], True)} | {entry['runs']} | {chosen} |")
    return ["\n".join(across), "", "\n".join(within)]
