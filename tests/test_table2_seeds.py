"""Table 2 over meta-training seeds: `python -m experiment.aggregate` on a sweep of
evaluate_omniglot.py --learner runs (experiment/aggregate_table2.py) and the table kinds `table2` and
`table2_seeds` of analysis/tables.py that render its summary.

Evaluation runs are made by hand, as evaluate_omniglot.py writes them (config.json: the checkpoint's
config under "evaluated", the flags under "args"; results.json in the Table 2 format), so nothing is
trained or evaluated here.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from analysis import tables
from experiment import aggregate
from utils.errors import UserError
from utils.stats import t_quantile_975

SETTINGS = ("1x50", "5x20")


def _accuracies(seed: int, column: str, setting: str, learner: str) -> list[float]:
    """Three runs of one cell: a level per column, setting and learner, shifted by the seed."""
    level = {"OML": 0.6, "Pre-training": 0.3, "Standard": 0.1}[column] + (0.05 if setting == "1x50" else 0.0)
    level += {"online": 0.0, "iid": 0.1, "er": 0.05, "mer": 0.02, "ewc": 0.01}[learner]
    return [round(level + 0.01 * seed + 0.002 * r, 6) for r in range(3)]


def _result(seed: int, column: str, learners) -> dict:
    table = {}
    for setting in SETTINGS:
        table[setting] = {}
        for learner in learners:
            held_out = _accuracies(seed, column, setting, learner)
            table[setting][learner] = {
                "hyperparameters": {"lr": 0.01 * seed, **({"replay": 5} if learner == "er" else {})},
                "held_out_accuracy": {}, "trajectory_accuracy": {},
                "runs": {"held_out_accuracy": held_out, "trajectory_accuracy": [a + 0.2 for a in held_out]}}
    return {"benchmark": "omniglot_table2", "label": f"Table 2, {column} (cpu)", "split": "test", "column": column,
            "model": {"method": "oml" if column == "OML" else "pretraining"}, "settings": list(SETTINGS),
            "learners": list(learners), "table2": table, "protocol": {"runs": 3}}


def _run(root: Path, name: str, seed: int, column: str, learners=("online", "iid", "er", "mer", "ewc"),
         evaluation_seed=None, reset=None, hyperparameters_from=None) -> Path:
    run = root / "runs" / name
    run.mkdir(parents=True)
    method = "oml" if column == "OML" else "pretraining"
    args = {"model": f"/ckpt/{method}{seed}", "learner": list(learners), "whole_network": column == "Standard",
            "memory": 200, "seed": evaluation_seed, "runs": 50, "name": name, "device": "auto",
            **({"pln_reset": reset} if reset else {}),
            **({"hyperparameters_from": hyperparameters_from} if hyperparameters_from else {})}
    (run / "config.json").write_text(json.dumps({"evaluated": {"seed": seed, "method": method, "preset": "cpu",
                                                               "steps": 10000 if method == "oml" else 2000},
                                                 "args": args}))
    (run / "results.json").write_text(json.dumps(_result(seed, column, learners), sort_keys=True))  # as Run writes it
    return run


def _sweep(root: Path, name: str, runs: list, states=None) -> Path:
    folder = root / "sweeps" / name
    (folder / "jobs").mkdir(parents=True)
    jobs = []
    for rank, run in enumerate(runs):
        state = (states or {}).get(rank, "finished")
        record = {"state": state, "run_dir": str(run) if state == "finished" else None}
        if state == "failed":
            record["error"] = "error: online learning diverged"
        (folder / "jobs" / f"r{rank}.json").write_text(json.dumps(record))
        jobs.append({"rank": rank, "run_name": f"{name}_r{rank}", "command": ["python", "evaluate_omniglot.py"],
                     "combination": {}})
    (folder / "sweep.json").write_text(json.dumps({"name": name, "script": "evaluate_omniglot.py",
                                                   "argv": ["--learner", "online", "iid", "er", "mer", "ewc"], "jobs": jobs}))
    return folder


def _table2_sweep(tmp_path: Path) -> Path:
    """Three OML seeds and three pretraining seeds; the pretraining seed 3 job failed."""
    runs = [_run(tmp_path, f"oml{s}", s, "OML") for s in (1, 2, 3)]
    runs += [_run(tmp_path, f"pre{s}", s, "Pre-training") for s in (1, 2, 3)]
    return _sweep(tmp_path, "t2", runs, states={5: "failed"})


def _aggregate(tmp_path: Path, *sweeps: Path) -> dict:
    summary = tmp_path / "summary.json"
    aggregate.aggregate(list(sweeps), out=tmp_path / "agg", summary=summary)
    return json.loads(summary.read_text())


def test_each_cell_is_the_mean_of_its_seeds_means_with_a_t_interval(tmp_path, capsys):
    summary = _aggregate(tmp_path, _table2_sweep(tmp_path))
    assert summary["benchmark"] == "omniglot_table2" and summary["format"] == 1
    rows = {row["method"]: row for row in summary["rows"]}
    assert sorted(rows) == ["OML", "Pre-training"]
    oml = rows["OML"]
    assert oml["seeds"] == [1, 2, 3] and oml["cell_seeds"]["5x20/er"] == [1, 2, 3]
    seed_means = [np.mean(_accuracies(s, "OML", "5x20", "er")) for s in (1, 2, 3)]
    half = t_quantile_975(2) * np.std(seed_means, ddof=1) / np.sqrt(3)
    stats = oml["metrics"]["held_out@5x20/er"]
    assert stats["mean"] == pytest.approx(np.mean(seed_means), abs=1e-6)
    assert stats["ci_low"] == pytest.approx(np.mean(seed_means) - half, abs=1e-6)
    assert stats["ci_high"] == pytest.approx(np.mean(seed_means) + half, abs=1e-6)
    assert oml["metrics"]["trajectory@5x20/er"]["mean"] == pytest.approx(np.mean(seed_means) + 0.2, abs=1e-6)
    # per seed: the mean of its runs, a bootstrap interval around it, and the hyperparameters its search chose
    within = oml["by_seed"]["2"]
    assert within["metrics"]["held_out@5x20/er"]["mean"] == pytest.approx(seed_means[1], abs=1e-6)
    assert within["metrics"]["held_out@5x20/er"]["ci_low"] <= seed_means[1] <= within["metrics"]["held_out@5x20/er"]["ci_high"]
    assert within["runs"]["5x20/er"] == 3 and within["hyperparameters"]["5x20/er"] == [{"lr": 0.02, "replay": 5}]
    assert len(oml["metrics"]) == 2 * 2 * 5  # held-out and trajectory, two settings, five learners


def test_a_failed_job_is_listed_and_never_averaged_in(tmp_path, capsys):
    summary = _aggregate(tmp_path, _table2_sweep(tmp_path))
    assert summary["not_counted"] == [{"job": "t2/r5", "state": "failed", "error": "error: online learning diverged"}]
    pretraining = next(row for row in summary["rows"] if row["method"] == "Pre-training")
    assert pretraining["seeds"] == [1, 2] and pretraining["jobs"] == ["t2/r3", "t2/r4"]
    seed_means = [np.mean(_accuracies(s, "Pre-training", "1x50", "online")) for s in (1, 2)]
    assert pretraining["metrics"]["held_out@1x50/online"]["mean"] == pytest.approx(np.mean(seed_means), abs=1e-6)


def test_columns_group_by_what_was_evaluated_not_by_learners_and_repeats_pool_as_runs(tmp_path, capsys):
    # seed 1's OML column in two jobs (online + iid, then er + mer + ewc); seed 2's evaluated twice with two
    # evaluation seeds; the pretraining checkpoint frozen and --whole-network (Standard): two columns
    runs = [_run(tmp_path, "a1", 1, "OML", ("online", "iid")), _run(tmp_path, "b1", 1, "OML", ("er", "mer", "ewc")),
            _run(tmp_path, "a2", 2, "OML"), _run(tmp_path, "b2", 2, "OML", evaluation_seed=7),
            _run(tmp_path, "p1", 1, "Pre-training"), _run(tmp_path, "s1", 1, "Standard"), _run(tmp_path, "s2", 2, "Standard")]
    summary = _aggregate(tmp_path, _sweep(tmp_path, "mixed", runs))
    rows = {row["method"]: row for row in summary["rows"]}
    assert sorted(rows) == ["OML", "Pre-training", "Standard"]
    oml = rows["OML"]
    assert oml["seeds"] == [1, 2] and oml["cell_seeds"]["1x50/ewc"] == [1, 2]
    assert oml["by_seed"]["1"]["runs"]["1x50/ewc"] == 3 and oml["by_seed"]["2"]["runs"]["1x50/ewc"] == 6
    assert oml["by_seed"]["2"]["hyperparameters"]["1x50/ewc"] == [{"lr": 0.02}, {"lr": 0.02}]
    assert rows["Standard"]["seeds"] == [1, 2] and rows["Pre-training"]["seeds"] == [1]
    assert all(row["label"].endswith("(cpu)") for row in rows.values())


def test_a_damaged_cell_is_a_damaged_job(tmp_path, capsys):
    runs = [_run(tmp_path, f"oml{s}", s, "OML") for s in (1, 2)]
    result = json.loads((runs[1] / "results.json").read_text())
    del result["table2"]["1x50"]["mer"]["runs"]["held_out_accuracy"]
    (runs[1] / "results.json").write_text(json.dumps(result))
    summary = _aggregate(tmp_path, _sweep(tmp_path, "damaged", runs))
    assert [(job["job"], job["state"]) for job in summary["not_counted"]] == [("damaged/r1", "damaged")]
    assert "held_out_accuracy" in summary["not_counted"][0]["error"]
    assert summary["rows"][0]["seeds"] == [1]


def test_the_aggregate_tables_md_shows_cells_and_seeds(tmp_path, capsys):
    _aggregate(tmp_path, _table2_sweep(tmp_path))
    text = (tmp_path / "agg" / "tables.md").read_text()
    assert "| OML (cpu) | 1x50 | online | 67.2 (" in text and "| 3 |" in text
    assert "| OML (cpu) | 1x50 | er | 2 | 72.2 (" in text and "lr=0.02 replay=5" in text
    assert "t2/r5 | failed" in text
    # the cells in the order the evaluation ran them, not the file's sorted keys
    cells = [line.split("|")[2:4] for line in text.splitlines() if line.startswith("| OML (cpu) |")][:10]
    assert [(s.strip(), ln.strip()) for s, ln in cells] == [(s, ln) for s in SETTINGS for ln in ("online", "iid", "er", "mer", "ewc")]


# --- the tables of the docs ------------------------------------------------------------------------

def _summary(tmp_path: Path) -> dict:
    summary = _aggregate(tmp_path, _table2_sweep(tmp_path))
    # a third column of one seed, and a cell OML lacks (its job ran four learners), to see both said
    standard = json.loads(json.dumps(summary["rows"][1]))
    standard.update(method="Standard", label="Standard (cpu)", seeds=[1])
    standard["cell_seeds"] = {cell: [1] for cell in standard["cell_seeds"]}
    summary["rows"].append(standard)
    oml = summary["rows"][0]
    del oml["cell_seeds"]["5x20/mer"]
    return summary


def test_the_table2_kind_is_the_papers_layout_with_intervals_seeds_and_the_papers_values(tmp_path, capsys):
    text = tables.render(_summary(tmp_path), "table2", "t")
    lines = text.splitlines()
    assert lines[2] == ("| learner | 1x50: Standard | 1x50: OML | 1x50: Pre-training | 5x20: Standard | 5x20: OML | "
                        "5x20: Pre-training |")
    assert [line.split("|")[1].strip() for line in lines[4:9]] == ["Online", "Approx IID", "ER-Reservoir", "MER", "EWC"]
    online = lines[4].split("|")[2:-1]
    assert online[0].strip() == "36.7, one seed (paper 4.64)"  # a copy of Pre-training's row
    # OML's interval is apart from Pre-training's, but Standard's one seed has no interval: nothing bold
    assert online[1].strip().startswith("67.2 (") and online[1].strip().endswith("), 3 seeds (paper 64.72)")
    assert online[2].strip().startswith("36.7 (") and online[2].strip().endswith("), 2 seeds (paper 21.16)")
    assert lines[7].split("|")[6].strip() == "— (paper 62.05)"  # OML's 5x20 MER cell: not in the summary
    assert text.endswith("Not counted: t2/r5 (failed: error: online learning diverged).")
    summary = _summary(tmp_path / "again")
    del summary["rows"][2]  # without Standard: OML apart from every other column, bold
    online = tables.render(summary, "table2", "t").splitlines()[4].split("|")[2:-1]
    assert online[0].strip().startswith("**67.2 (") and online[0].strip().endswith("), 3 seeds** (paper 64.72)")


def test_the_table2_readings_claim_only_what_the_intervals_say(tmp_path, capsys):
    summary = _summary(tmp_path)
    text = tables.render(summary, "table2", "t")
    assert ("Reading (held-out, 1x50, 95% t intervals across seeds): Online, Approx IID, ER-Reservoir, MER and EWC: "
            "OML higher than Pre-training (intervals apart); one seed, not compared: Standard.") in text
    assert ("Reading (held-out, 5x20, 95% t intervals across seeds): Online, Approx IID, ER-Reservoir and EWC: OML higher "
            "than Pre-training (intervals apart); one seed, not compared: Standard. MER: one seed, not compared: "
            "Standard.") in text
    # widen Pre-training's 1x50 Online interval over OML's mean: overlap, no bold
    summary["rows"][1]["metrics"]["held_out@1x50/online"]["ci_high"] = 0.9
    text = tables.render(summary, "table2", "t")
    assert "Online: OML and Pre-training overlap (no claim); one seed, not compared: Standard." in text
    assert "**" not in text.splitlines()[4].split("|")[2]


def test_the_table2_seeds_kind_has_every_seed_of_every_cell_with_its_hyperparameters(tmp_path, capsys):
    text = tables.render(_summary(tmp_path), "table2_seeds", "t")
    lines = text.splitlines()
    assert lines[0].startswith("| column | setting | learner | seed | held-out (95% CI over runs) |")
    assert "| OML | 5x20 | ER-Reservoir | 2 | 67.2 (67.0–67.4) | 87.2 (87.0–87.4) | 3 | lr=0.02 replay=5 |" in lines
    assert len([line for line in lines if line.startswith("| OML |")]) == 3 * 9  # 3 seeds x 9 cells (no 5x20 MER)
    assert len([line for line in lines if line.startswith("| Pre-training |")]) == 2 * 10


def test_a_kind_that_does_not_fit_the_summary_is_one_clear_error(tmp_path, capsys):
    summary = {"benchmark": "omniglot", "rows": [{"label": "A", "method": "A", "seeds": [1], "metrics": {}}]}
    with pytest.raises(UserError, match=r"kind 'table2' does not fit summaries/t\.json"):
        tables.render(summary, "table2", "t")
    with pytest.raises(UserError, match=r"kind 'headline' does not fit summaries/t2\.json"):
        tables.render(_summary(tmp_path), "headline", "t2")


def _both_starts(tmp_path: Path, seeds=(1, 2, 3), shift=None) -> dict:
    """OML, Pre-training and Standard, each with the protocol's output layer and with --reset zero (its
    accuracies `shift[column]` higher, or `shift[column][seed]`, 0.05 unless told), aggregated together as the
    Kaiming and zero sweeps are."""
    runs = []
    for column in ("OML", "Pre-training", "Standard"):
        for seed in seeds:
            runs.append(_run(tmp_path, f"{column}{seed}k", seed, column, reset="all"))
            zero = _run(tmp_path, f"{column}{seed}z", seed, column, reset="zero")
            result = json.loads((zero / "results.json").read_text())
            for cells in result["table2"].values():
                for cell in cells.values():
                    moved = (shift or {}).get(column, 0.05)
                    moved = moved[seed] if isinstance(moved, dict) else moved
                    cell["runs"]["held_out_accuracy"] = [a + moved for a in cell["runs"]["held_out_accuracy"]]
            (zero / "results.json").write_text(json.dumps(result))
            runs.append(zero)
    return _aggregate(tmp_path, _sweep(tmp_path, "starts", runs))


def test_the_reset_table_sets_each_columns_two_starts_side_by_side(tmp_path, capsys):
    summary = _both_starts(tmp_path, seeds=(1,))
    text = tables.render(summary, "table2_reset", "starts")
    lines = next(block for block in text.split("\n\n") if block.startswith("| setting")).splitlines()
    header = lines[0]
    assert header == ("| setting | learner | Standard: Kaiming | Standard: zero | OML: Kaiming | OML: zero | "
                      "Pre-training: Kaiming | Pre-training: zero |")
    body = [line for line in lines if line.startswith("| 1x50") or line.startswith("| 5x20")]
    assert len(body) == 2 * 5
    oml_online = next(line for line in body if line.startswith("| 1x50 | Online |")).split(" | ")
    kaiming, zero = np.mean(_accuracies(1, "OML", "1x50", "online")), np.mean(_accuracies(1, "OML", "1x50", "online")) + 0.05
    assert oml_online[4].startswith(f"{100 * kaiming:.1f} (") and oml_online[4].endswith(", seed 1")
    assert oml_online[5].startswith(f"{100 * zero:.1f} (")  # one seed: its runs' bootstrap interval


def test_the_reset_table_gives_the_interval_across_seeds_when_there_are_several(tmp_path, capsys):
    summary = _both_starts(tmp_path)
    text = tables.render(summary, "table2_reset", "starts")
    row = next(line for line in text.splitlines() if line.startswith("| 5x20 | EWC |")).split(" | ")
    assert all(cell.rstrip(" |").endswith("3 seeds") for cell in row[2:])


def test_the_reset_tables_readings_compare_the_starts_by_checkpoint_and_the_columns_across_seeds(tmp_path, capsys):
    # zero minus Kaiming per seed: Standard +0.3 each, OML +0.03 / -0.03 / 0 (t interval across zero),
    # Pre-training -0.2 / -0.1 / -0.15
    summary = _both_starts(tmp_path, shift={"Standard": 0.3, "OML": {1: 0.03, 2: -0.03, 3: 0.0},
                                            "Pre-training": {1: -0.2, 2: -0.1, 3: -0.15}})
    text = tables.render(summary, "table2_reset", "starts")
    half = 100 * t_quantile_975(2) * 0.03 / np.sqrt(3)  # the OML differences' sd is 0.03
    oml = next(line for line in text.splitlines() if line.startswith("| 1x50 | MER | +30.0 (")).split(" | ")
    assert oml[3] == f"+0.0 ({-half:+.1f} to {half:+.1f})"
    every = "Online, Approx IID, ER-Reservoir, MER and EWC"
    assert (f"Zero against Kaiming (5x20, held-out, paired 95% t intervals across seeds): Standard: higher with zero "
            f"for {every}; OML: not told apart for {every}; Pre-training: lower with zero for {every}.") in text
    # Kaiming: OML .6, Pre-training .3, Standard .1 (+ .01 per seed); zero: OML .6, Standard .4, Pre-training .15
    assert (f"With the Kaiming start (1x50, held-out, 95% t intervals across seeds): {every}: OML higher than "
            "Pre-training (intervals apart); OML higher than Standard (intervals apart); Pre-training higher than "
            "Standard (intervals apart).") in text
    assert (f"With the zero start (1x50, held-out, 95% t intervals across seeds): {every}: OML higher than "
            "Standard (intervals apart); OML higher than Pre-training (intervals apart); Standard higher than "
            "Pre-training (intervals apart).") in text


def test_the_per_seed_table_names_each_start_of_a_column(tmp_path, capsys):
    summary = _both_starts(tmp_path, seeds=(1, 2))
    lines = tables.render(summary, "table2_seeds", "starts").splitlines()
    columns = list(dict.fromkeys(line.split(" | ")[0].lstrip("| ") for line in lines[2:]))
    assert columns == ["Standard: Kaiming", "Standard: zero", "OML: Kaiming", "OML: zero",
                       "Pre-training: Kaiming", "Pre-training: zero"]
    assert len(lines) == 2 + 6 * 2 * 5 * 2  # header, columns x settings x learners x seeds


def test_the_reset_table_refuses_rows_it_cannot_pair(tmp_path, capsys):
    summary = _aggregate(tmp_path, _table2_sweep(tmp_path))
    with pytest.raises(UserError, match="not told apart by --pln-reset"):
        tables.render(summary, "table2_reset", "t2")
    runs = [_run(tmp_path, "o1k", 1, "OML", reset="all"), _run(tmp_path, "o1z", 1, "OML", reset="zero"),
            _run(tmp_path, "p1z", 1, "Pre-training", reset="zero")]
    summary = _aggregate(tmp_path / "b", _sweep(tmp_path / "b", "half", runs))
    with pytest.raises(UserError, match=r"no row for Pre-training \(Kaiming\)"):
        tables.render(summary, "table2_reset", "half")


def _own_and_twins(tmp_path: Path, columns=("OML", "Pre-training")) -> dict:
    """Each column's three checkpoints evaluated with their own search and with their twin's choices:
    the twin's choice is the own one for OML (0.02 / 0.0 / -0.02 off by seed), another rate for
    Pre-training and Standard in every cell (0.1 lower), aggregated together as the two sweeps are."""
    runs = []
    for column in columns:
        for seed in (1, 2, 3):
            runs.append(_run(tmp_path, f"{column}{seed}own", seed, column))
            twins = [f"/twin/{c}{s}" for c in columns for s in (1, 2, 3)]  # one list, as a sweep gives
            twin = _run(tmp_path, f"{column}{seed}twin", seed, column, hyperparameters_from=twins)
            result = json.loads((twin / "results.json").read_text())
            for cells in result["table2"].values():
                for cell in cells.values():
                    moved = {1: 0.02, 2: 0.0, 3: -0.02}[seed] if column == "OML" else -0.1
                    cell["runs"]["held_out_accuracy"] = [a + moved for a in cell["runs"]["held_out_accuracy"]]
                    if column != "OML":
                        cell["hyperparameters"]["lr"] *= 3
            (twin / "results.json").write_text(json.dumps(result))
            runs.append(twin)
    return _aggregate(tmp_path, _sweep(tmp_path, "search", runs))


def test_the_search_table_pairs_each_columns_own_search_with_its_twins(tmp_path, capsys):
    summary = _own_and_twins(tmp_path)
    text = tables.render(summary, "table2_search", "search")
    assert ("| setting | learner | OML: own search | OML: twin's search | Pre-training: own search | "
            "Pre-training: twin's search |") in text
    every = "Online, Approx IID, ER-Reservoir, MER and EWC"
    assert (f"Twin's search against own search (1x50, held-out, paired 95% t intervals across seeds): OML: not told "
            f"apart for {every}; Pre-training: lower with twin's search for {every}.") in text
    assert f"With the twin's search (5x20, held-out, 95% t intervals across seeds): {every}: OML higher than " in text
    assert ("The same hyperparameters chosen with the own search and with the twin's search: in 30 of the 60 cells of "
            "a checkpoint (OML 30 of 30, Pre-training 0 of 30).") in text
    columns = {line.split(" | ")[0].lstrip("| ") for line in tables.render(summary, "table2_seeds", "search").splitlines()[2:]}
    assert columns == {"OML: own search", "OML: twin's search", "Pre-training: own search", "Pre-training: twin's search"}
    with pytest.raises(UserError, match="not told apart by --hyperparameters-from"):
        tables.render(_aggregate(tmp_path / "t", _table2_sweep(tmp_path / "t")), "table2_search", "t2")


def test_the_search_table_of_one_column_pairs_it_and_compares_it_with_no_other(tmp_path, capsys):
    summary = _own_and_twins(tmp_path, columns=("Standard",))
    text = tables.render(summary, "table2_search", "standard")
    assert "| setting | learner | Standard: own search | Standard: twin's search |" in text
    every = "Online, Approx IID, ER-Reservoir, MER and EWC"
    assert (f"Twin's search against own search (5x20, held-out, paired 95% t intervals across seeds): Standard: lower "
            f"with twin's search for {every}.") in text
    assert "The same hyperparameters chosen with the own search and with the twin's search: in 0 of the 30 cells of a " \
           "checkpoint." in text
    assert "With the" not in text  # no other column to compare with
