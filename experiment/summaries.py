"""The small summary of an aggregate that the repository keeps (summaries/<table>.json, 5-190 KB):
the numbers behind one table of the README or docs, and the commands that made them.

    python -m experiment.aggregate SWEEP_A SWEEP_B --out DIR --summary summaries/sine_quick.json

Per row (a method on a network): the mean over meta-training seeds with its 95% t interval across
seeds, and per seed its mean with the bootstrap interval across that seed's evaluation runs and the
online rate its search chose. A Table 2 summary's row is one column of the paper's table, its metrics
per cell ("held_out@1x50/online", with each cell's seeds and per seed the hyperparameters chosen:
experiment/aggregate_table2.py). analysis/tables.py turns these files into the tables
(`python plot_results.py --tables`), and tests/test_tables.py checks that the committed tables are
what the files give. `compute`: what the summary's sweeps and the training sweeps they evaluate
cost (jobs, wall and CPU hours) and the command that reruns each (experiment/sweep_compute.py);
`made_by` reruns the aggregate.

`--keep-rows EARLIER` (keep_rows) makes a summary from new sweeps for some methods and an earlier
summary's rows for the others: a method's rows are replaced whole when the new sweeps hold it (OML
meta-trained again at a new rate, say), every other row is kept as it was, with the sweeps, jobs not
counted and costs that stand behind it. `kept_rows` names what was kept and from where.

`--add-rows EARLIER` (add_rows) extends a grid of candidates past its edge: every row of the earlier
summary is kept, the new sweeps' rows join after them, labelled by the settings that tell the earlier
rows apart ("Pretraining (iid_lr=0.01)" beside "Pretraining (iid_lr=0.003)"); a new row with a kept
row's label is refused (label them by the setting they differ in, `--label-by update_lr`, or replace
a method's rows with --keep-rows). It is recorded in `kept_rows` the same way.
"""
import json
from pathlib import Path

from experiment import aggregate_table2
from experiment.sweep_compute import NAMED, as_list, rerun_aggregate, sweeps_cost, total
from utils.errors import UserError

FORMAT = 1


def _metric_names(result: dict) -> list[str]:
    if result["benchmark"] == "sine":
        return ["final_mse", "first_mse"]
    return [f"{kind}@{n}" for n in result["schedule"] for kind in ("held_out", "trajectory")]


def _across(result: dict, name: str) -> dict:
    if result["benchmark"] == "sine":
        return result[name]
    kind, n = name.split("@")
    return result["by_classes"][n][f"{kind}_accuracy"]


def _within(result: dict, name: str, seed: str) -> dict:
    if result["benchmark"] == "sine":
        return result["by_seed"][seed][name]
    kind, n = name.split("@")
    return result["by_classes"][n]["by_seed"][seed][f"{kind}_accuracy"]


def _runs(result: dict, seed: str) -> int:
    if result["benchmark"] == "sine":
        return result["by_seed"][seed]["runs"]
    return result["by_classes"][str(result["schedule"][-1])]["by_seed"][seed]["runs"]


def _rates(members: list[dict], seed) -> list:
    """The online rates the evaluations of one seed used (sine: one per evaluation; Omniglot: per class count)."""
    rates = []
    for entry in members:
        if entry["seed"] != seed:
            continue
        result = entry["result"]
        if result["benchmark"] == "sine":
            rates.append(result["protocol"]["lr"])
        else:
            rates.append({n: c["lr"] for n, c in result["by_classes"].items()})
    return rates


def _rounded(stats: dict) -> dict:
    return {k: round(v, 6) for k, v in stats.items()}


def compute_of(sweep_dirs, command: str) -> dict:
    """The compute entry: per sweep (these and the training sweeps they name) its jobs, hours and rerun
    command; the aggregate's command (`command`) with the sweeps' folders."""
    costs = sweeps_cost(sweep_dirs)
    local = all(c.get("executor") == "local" for c in costs)
    machine = ("Local sweeps ran one thread per job (OMP_NUM_THREADS=1; recorded per attempt as omp_num_threads "
               "since the evening of 3 December 2026), at most max_parallel of a sweep's jobs at once, on a machine "
               "shared with other sweeps and work (this project's: 2 cores). A one-thread job uses at most one core, "
               "so its wall hours are its core-hours and an upper bound of its CPU hours (equal only when it had a "
               "core to itself)." if local else
               "Some sweeps ran under SLURM: a job's wall hours times the cores it held are its core-hours.")
    return {"counts": "jobs: the sweep's jobs; wall_hours: the sum over their attempts of ended - started "
                      "(attempts_without_end: attempts still running or killed with their job, not counted); "
                      "cpu_hours: the sum of the user + system CPU time of each attempt's script as its job recorded "
                      "it (cpu_s, experiment/sweep_job.py), null where any attempt records none. " + machine,
            "sweeps": costs, "total": total(costs), "aggregate": rerun_aggregate(command, costs)}


def summary_of(sweeps: list[dict], groups: list[dict], results: list[dict], command: str,
               problems: list[dict] = (), sweep_dirs=None) -> dict:
    """The summary of aggregated groups (experiment/aggregate.py) of one benchmark and one split;
    with the sweeps' folders, what they cost (compute_of)."""
    splits = {e["result"].get("split", "test") for g in groups for e in g["members"]}
    if len(splits) > 1:
        raise UserError(f"a summary holds one split; these evaluations mix {sorted(splits)}")
    rows = []
    for group, result in zip(groups, results):
        if result["benchmark"] == aggregate_table2.BENCHMARK:  # a column of cells (setting x learner)
            rows.append(aggregate_table2.summary_row(group, result))
            continue
        names = _metric_names(result)
        seeds = result["aggregate"]["seeds"]
        rows.append({
            "label": result["label"], "method": group["method"], "row": group["row"], "seeds": seeds,
            # the settings that tell this row from the others (its label's), e.g. {"learner": "slda"}
            "settings": group.get("differing", {}),
            "metrics": {name: _rounded(_across(result, name)) for name in names},
            "by_seed": {str(seed): {"runs": _runs(result, str(seed)), "lr": _rates(group["members"], seed),
                                    "metrics": {name: _rounded(_within(result, name, str(seed))) for name in names}}
                        for seed in seeds},
            "jobs": result["aggregate"]["jobs"],
        })
    return {
        "format": FORMAT, "benchmark": results[0]["benchmark"] if results else None, "split": splits.pop() if splits else None,
        "interval_across_seeds": "95% Student-t over the seeds' means",
        "interval_within_seed": "95% percentile bootstrap over that seed's evaluation runs",
        "made_by": command,
        "sweeps": [{"name": s["name"], "script": s["script"], "argv": s["argv"],
                    "models_from": [Path(d).name for d in as_list(s.get("models_from"))],
                    "models_where": s.get("models_where") or {},
                    **({"models": [Path(m).name for m in s["models"]]} if s.get("models") else {})} for s in sweeps],
        "rows": rows,
        # jobs never averaged in (a diverged evaluation, say), named so that a table can say so
        "not_counted": [{"job": f"{p['sweep']}/r{p['rank']}", "state": p["state"],
                         "error": " ".join(str(p.get("error") or "").split())[:200]} for p in problems],
        "compute": compute_of(sweep_dirs, command) if sweep_dirs is not None else None,
    }


# --- a summary that keeps some rows of an earlier one ------------------------------------------------

def read_summary(path, flag: str = "--keep-rows") -> dict:
    """A summary file (this module's format), or a one-line UserError naming what is wrong with it."""
    try:
        summary = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{flag}: cannot read the summary '{path}' ({type(err).__name__})") from None
    if not isinstance(summary, dict) or summary.get("format") != FORMAT or not isinstance(summary.get("rows"), list):
        raise UserError(f"{flag}: '{path}' is not a summary of format {FORMAT} (experiment/summaries.py)")
    return summary


def _sweep_of(job: str) -> str:
    return job.rsplit("/", 1)[0]  # "oc_seeds_test/r3" -> "oc_seeds_test"


def _standing_behind(costs: list[dict], names: set) -> list[dict]:
    """The cost entries of the sweeps named and of the sweeps they rest on (the training sweeps they
    evaluate, the sweeps whose runs chose their hyperparameters), transitively."""
    by_name = {c["name"]: c for c in costs}
    wanted, queue = set(), list(names)
    while queue:
        name = queue.pop()
        if name in wanted or name not in by_name:
            continue
        wanted.add(name)
        queue += [named for key in NAMED for named in by_name[name].get(key) or []]
    return [c for c in costs if c["name"] in wanted]


def _check_same_table(earlier: dict, new: dict, earlier_name: str, flag: str) -> None:
    for key in ("benchmark", "split"):
        if earlier.get(key) != new.get(key):
            raise UserError(f"{flag}: '{earlier_name}' holds {key} {earlier.get(key)!r}, the new sweeps "
                            f"{new.get(key)!r}; one summary holds one {key}")


def _with_kept(earlier: dict, new: dict, earlier_name: str, rows: list[dict], kept: list[dict], flag: str) -> dict:
    """`new` with `rows`, of which `kept` came from `earlier`: its sweeps, jobs not counted and the costs
    standing behind the kept rows join the new sweeps' own."""
    kept_sweeps = {_sweep_of(job) for row in kept for job in row.get("jobs", [])}
    clash = kept_sweeps & {s["name"] for s in new["sweeps"]}
    if clash:
        raise UserError(f"{flag}: the kept rows of '{earlier_name}' come from sweep(s) {sorted(clash)} that "
                        "the new sweeps also hold; aggregate them as new sweeps instead")
    sweeps = [s for s in earlier.get("sweeps", []) if s["name"] in kept_sweeps] + new["sweeps"]
    not_counted = [p for p in earlier.get("not_counted", []) if _sweep_of(p["job"]) in kept_sweeps] + new["not_counted"]
    compute = new.get("compute")
    if compute is not None:
        new_names = {c["name"] for c in compute["sweeps"]}
        earlier_costs = (earlier.get("compute") or {}).get("sweeps", [])
        costs = [c for c in _standing_behind(earlier_costs, kept_sweeps) if c["name"] not in new_names]
        costs += compute["sweeps"]
        compute = {**compute, "sweeps": costs, "total": total(costs)}
    return {**new, "rows": rows, "sweeps": sweeps, "not_counted": not_counted, "compute": compute,
            "kept_rows": {"from": earlier_name, "labels": [row["label"] for row in kept],
                          "sweeps": sorted(kept_sweeps)}}


def telling_apart(earlier: dict) -> list[str]:
    """The settings that tell an earlier summary's rows apart: the new rows of add_rows are labelled by them."""
    return sorted({name for row in earlier["rows"] for name in row.get("settings", {})})


def add_rows(earlier: dict, new: dict, earlier_name: str) -> dict:
    """`earlier`'s rows, then `new`'s (summary_of of the new sweeps, grouped with telling_apart(earlier))."""
    _check_same_table(earlier, new, earlier_name, "--add-rows")
    both = {row["label"] for row in earlier["rows"]} & {row["label"] for row in new["rows"]}
    if both:
        raise UserError(f"--add-rows: '{earlier_name}' already has the row(s) {sorted(both)}: label the new rows by "
                        "the setting they differ in (--label-by NAME), or replace a method's rows with --keep-rows")
    return _with_kept(earlier, new, earlier_name, earlier["rows"] + new["rows"], earlier["rows"], "--add-rows")


def keep_rows(earlier: dict, new: dict, earlier_name: str) -> dict:
    """`new` (summary_of of the new sweeps) with the rows of `earlier` whose method `new` has no row of,
    in `earlier`'s order (a replaced method's new rows where its first old row was, a new method last)."""
    _check_same_table(earlier, new, earlier_name, "--keep-rows")
    replaced = {row["method"] for row in new["rows"]}
    rows, placed, kept = [], set(), []
    for row in earlier["rows"]:
        if row["method"] not in replaced:
            rows.append(row)
            kept.append(row)
        elif row["method"] not in placed:
            rows += [r for r in new["rows"] if r["method"] == row["method"]]
            placed.add(row["method"])
    rows += [r for r in new["rows"] if r["method"] not in placed]
    return _with_kept(earlier, new, earlier_name, rows, kept, "--keep-rows")


# --- a summary drawn as Fig. 4 -----------------------------------------------------------------------

def read_if_summary(path) -> dict | None:
    """The summary in `path` (this module's format), or None when it is a results file or folder."""
    path = Path(path)
    if not (path.is_file() and path.suffix == ".json"):
        return None
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    is_summary = isinstance(found, dict) and found.get("format") == FORMAT and isinstance(found.get("rows"), list)
    return found if is_summary else None


def figure_results(summary: dict, name: str) -> list[dict]:
    """An Omniglot summary's rows as the results a Fig. 4 plot reads (utils/plotting.plot_omniglot):
    per class count, held-out and trajectory accuracy's mean with its 95% interval across seeds, so a
    docs figure is redrawn from the committed file when the run folders are gone. A sine summary keeps
    the MSE after the first and the last function only, not Fig. 3's curves, and Table 2's has no
    curve: both are refused."""
    if summary.get("benchmark") != "omniglot":
        raise UserError(f"'{name}' summarises {summary.get('benchmark')} results: only an Omniglot summary's rows "
                        f"are curves (Fig. 4); plot the sweep folders behind it instead")
    results = []
    for row in summary["rows"]:
        counts = sorted({int(key.split("@")[1]) for key in row["metrics"] if key.startswith("held_out@")})
        by_classes = {str(n): {"held_out_accuracy": row["metrics"][f"held_out@{n}"],
                               "trajectory_accuracy": row["metrics"][f"trajectory@{n}"]} for n in counts}
        results.append({"benchmark": "omniglot", "label": row["label"], "seeds": row["seeds"],
                        "schedule": counts, "by_classes": by_classes})
    return results
