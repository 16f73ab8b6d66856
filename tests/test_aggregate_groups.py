"""What `python -m experiment.aggregate` pools: evaluations of one checkpoint under different
evaluation flags are different rows; the same evaluation repeated with another --seed is more runs
of the same meta-training seed.

Evaluation runs are made by hand (config.json as evaluate_omniglot.py writes it: the checkpoint's
config under "evaluated", the flags under "args"), so no training is needed.
"""
import json
from pathlib import Path

from experiment import aggregate


def _evaluation_run(root: Path, name: str, trained_seed: int, held_out: float, **flags) -> Path:
    run = root / "runs" / name
    run.mkdir(parents=True)
    args = {"model": f"/ckpt/oml_seed{trained_seed}", "seed": None, "runs": 2, "name": name, "pln_reset": None,
            "protocol": "2020", "lr": None, "learner": None, "device": "auto", **flags}
    (run / "config.json").write_text(json.dumps({"evaluated": {"seed": trained_seed, "method": "oml", "preset": "cpu"},
                                                 "args": args, "schedule": [10]}))
    runs = {"trajectory_accuracy": [0.9, 0.9], "held_out_accuracy": [held_out, held_out]}
    (run / "results.json").write_text(json.dumps({"benchmark": "omniglot", "model": {"method": "oml"},
                                                  "schedule": [10], "by_classes": {"10": {"runs": runs, "lr": None}}}))
    return run


def _sweep(root: Path, name: str, runs: list[Path]) -> Path:
    folder = root / "sweeps" / name
    (folder / "jobs").mkdir(parents=True)
    jobs = []
    for rank, run in enumerate(runs):
        (folder / "jobs" / f"r{rank}.json").write_text(json.dumps({"state": "finished", "run_dir": str(run)}))
        jobs.append({"rank": rank, "run_name": run.name, "command": ["python", "evaluate_omniglot.py"],
                     "combination": {}})
    (folder / "sweep.json").write_text(json.dumps({"name": name, "script": "evaluate_omniglot.py", "argv": [],
                                                   "jobs": jobs}))
    return folder


def _groups(*sweeps: Path) -> dict[str, dict]:
    evaluations = [e for s in sweeps for e in aggregate.collect(s)[0]]
    return {g["label"]: {seed: len([r for m in g["members"] if m["seed"] == seed
                                    for r in m["result"]["by_classes"]["10"]["runs"]["held_out_accuracy"]])
                         for seed in {m["seed"] for m in g["members"]}}
            for g in aggregate.groups_of(evaluations)}


def test_another_pln_reset_or_protocol_is_another_row_never_more_runs(tmp_path):
    default = _sweep(tmp_path, "plain", [_evaluation_run(tmp_path, f"plain{s}", s, 0.3) for s in (1, 2)])
    zero = _sweep(tmp_path, "zero", [_evaluation_run(tmp_path, f"zero{s}", s, 0.4, pln_reset="zero") for s in (1, 2)])
    anml = _sweep(tmp_path, "anml", [_evaluation_run(tmp_path, f"anml{s}", s, 0.5, protocol="anml") for s in (1, 2)])
    groups = _groups(default, zero, anml)
    assert len(groups) == 3, groups
    assert all(counts == {1: 2, 2: 2} for counts in groups.values()), groups  # 2 runs per seed: nothing pooled
    assert any("--pln-reset=zero" in label for label in groups)
    assert any("--protocol=anml" in label for label in groups)


def test_a_repeat_with_another_evaluation_seed_or_device_pools_as_more_runs_of_the_seed(tmp_path):
    first = _sweep(tmp_path, "first", [_evaluation_run(tmp_path, f"a{s}", s, 0.3) for s in (1, 2)])
    again = _sweep(tmp_path, "again", [_evaluation_run(tmp_path, f"b{s}", s, 0.3, seed=7, device="cpu")
                                       for s in (1, 2)])
    assert list(_groups(first, again).values()) == [{1: 4, 2: 4}]


def test_a_flag_the_checkpoint_config_records_is_counted_once(tmp_path):
    # evaluate_regression.py --rln 3 writes rln 3 into "evaluated" as well: one setting, not two
    run = _evaluation_run(tmp_path, "rln", 1, 0.3, rln=3)
    config = json.loads((run / "config.json").read_text())
    config["evaluated"]["rln"] = 3
    (run / "config.json").write_text(json.dumps(config))
    [evaluation], _ = aggregate.collect(_sweep(tmp_path, "rln", [run]))
    assert evaluation["settings"]["rln"] == 3 and "--rln" not in evaluation["settings"]


def test_random_rlns_of_several_network_seeds_are_one_row_over_those_seeds(tmp_path):
    runs = []
    for seed in (1, 2, 3):  # evaluate_omniglot.py --preset cpu --network-seed 1 2 3 through the sweep
        run = _evaluation_run(tmp_path, f"random{seed}", seed, 0.1 * seed, network_seed=seed)
        runs.append(run)
    folder = _sweep(tmp_path, "random", runs)
    record = json.loads((folder / "sweep.json").read_text())
    for job, seed in zip(record["jobs"], (1, 2, 3)):
        job["combination"] = {"network_seed": seed}
    (folder / "sweep.json").write_text(json.dumps(record))
    assert list(_groups(folder).values()) == [{1: 2, 2: 2, 3: 2}]


def test_each_summary_row_records_the_settings_that_tell_it_apart(tmp_path, capsys):
    plain = _sweep(tmp_path, "plain", [_evaluation_run(tmp_path, f"p{s}", s, 0.3) for s in (1, 2)])
    slda = _sweep(tmp_path, "slda", [_evaluation_run(tmp_path, f"s{s}", s, 0.6, learner=["slda"]) for s in (1, 2)])
    for run in (tmp_path / "runs").glob("s*"):  # evaluate_omniglot.py --learner slda records it in "evaluated"
        config = json.loads((run / "config.json").read_text())
        config["evaluated"]["learner"] = "slda"
        (run / "config.json").write_text(json.dumps(config))
    summary = tmp_path / "summary.json"
    aggregate.aggregate([plain, slda], out=tmp_path / "agg", summary=summary)
    rows = json.loads(summary.read_text())["rows"]
    assert sorted((r["label"], r["settings"]["learner"] or "") for r in rows) == \
        [("OML (learner=None)", ""), ("OML (learner=slda)", "slda")]


def _set_evaluated(run: Path, **fields) -> Path:
    config = json.loads((run / "config.json").read_text())
    config["evaluated"].update(fields)
    (run / "config.json").write_text(json.dumps(config))
    return run


def test_a_field_the_method_never_reads_does_not_split_its_seeds(tmp_path):
    # OML checkpoints record the preset's srnn_beta; the preset's β changed between two of its seeds
    oml = [_set_evaluated(_evaluation_run(tmp_path, f"o{s}", s, 0.5), srnn_beta=beta) for s, beta in ((1, 0.2), (2, 0.8))]
    assert [len(g["members"]) for g in aggregate.groups_of(aggregate.collect(_sweep(tmp_path, "oml", oml))[0])] == [2]
    # SR-NN reads β: two values are two rows
    srnn = []
    for seed, beta in ((1, 0.2), (2, 0.8)):
        run = _set_evaluated(_evaluation_run(tmp_path, f"s{seed}", seed, 0.3), srnn_beta=beta, method="srnn")
        result = json.loads((run / "results.json").read_text())
        result["model"]["method"] = "srnn"
        (run / "results.json").write_text(json.dumps(result))
        srnn.append(run)
    groups = aggregate.groups_of(aggregate.collect(_sweep(tmp_path, "srnn", srnn))[0])
    assert sorted(g["label"] for g in groups) == ["SR-NN (srnn_beta=0.2)", "SR-NN (srnn_beta=0.8)"]


# --- --keep-rows: one method evaluated again, the other rows of the earlier summary kept ----------

def _method_run(root: Path, name: str, seed: int, held_out: float, method: str) -> Path:
    run = _set_evaluated(_evaluation_run(root, name, seed, held_out), method=method)
    result = json.loads((run / "results.json").read_text())
    result["model"]["method"] = method
    (run / "results.json").write_text(json.dumps(result))
    return run


def _earlier_and_new(tmp_path):
    old = _sweep(tmp_path, "old", [_method_run(tmp_path, f"{m}{s}", s, value, m)
                                   for m, value in (("oml", 0.3), ("pretraining", 0.2)) for s in (1, 2)])
    earlier = tmp_path / "summaries" / "t.json"
    aggregate.aggregate(old, summary=earlier)
    new = _sweep(tmp_path, "new", [_method_run(tmp_path, f"again{s}", s, 0.5, "oml") for s in (1, 2)])
    return earlier, new


def test_keep_rows_replaces_the_method_evaluated_again_and_keeps_the_others_as_they_were(tmp_path):
    earlier, new = _earlier_and_new(tmp_path)
    before = json.loads(earlier.read_text())
    aggregate.aggregate(new, summary=earlier, keep_rows=earlier)  # the summary made again in place
    after = json.loads(earlier.read_text())
    assert [r["label"] for r in after["rows"]] == ["OML (cpu)", "Pretraining (cpu)"]
    assert after["rows"][0]["metrics"]["held_out@10"]["mean"] == 0.5 and after["rows"][0]["jobs"] == ["new/r0", "new/r1"]
    assert after["rows"][1] == before["rows"][1]  # kept whole: numbers, seeds, jobs
    assert [s["name"] for s in after["sweeps"]] == ["old", "new"]
    assert after["kept_rows"] == {"from": str(earlier), "labels": ["Pretraining (cpu)"], "sweeps": ["old"]}
    assert f"new --keep-rows {earlier} --summary {earlier}" in after["made_by"]
    assert [c["name"] for c in after["compute"]["sweeps"]] == ["old", "new"]
    assert after["compute"]["total"]["jobs"] == 6
    aggregate.aggregate(new, summary=earlier, keep_rows=earlier)  # made again: the same file
    assert json.loads(earlier.read_text()) == after
    from analysis import compute_table
    listed = compute_table.commands({"t": after}).splitlines()
    assert any(line.startswith("# the aggregate keeps Pretraining (cpu)") and "(from old)" in line for line in listed)


def test_keep_rows_refuses_another_split_a_clashing_sweep_and_a_missing_summary(tmp_path):
    import pytest

    from utils.errors import UserError
    earlier, new = _earlier_and_new(tmp_path)
    with pytest.raises(UserError, match="give --summary"):
        aggregate.aggregate(new, keep_rows=earlier)
    with pytest.raises(UserError, match="not a summary"):
        aggregate.aggregate(new, summary=tmp_path / "s.json", keep_rows=tmp_path / "runs" / "oml1" / "config.json")
    selection = json.loads(earlier.read_text())
    (tmp_path / "sel.json").write_text(json.dumps({**selection, "split": "selection"}))
    with pytest.raises(UserError, match="one summary holds one split"):
        aggregate.aggregate(new, summary=tmp_path / "s.json", keep_rows=tmp_path / "sel.json")
    clash = _sweep(tmp_path / "other", "old", [_method_run(tmp_path / "other", "x1", 1, 0.5, "oml")])
    with pytest.raises(UserError, match="also hold"):
        aggregate.aggregate(clash, summary=tmp_path / "s.json", keep_rows=earlier)


# --- --add-rows: a grid of candidates extended past its edge, every earlier row kept ------------------

def _candidates(root: Path, name: str, rates: tuple) -> Path:
    runs = []
    for rate in rates:
        run = _set_evaluated(_method_run(root, f"{name}{rate}", 1, rate * 100, "pretraining"), iid_lr=rate)
        runs.append(run)
    return _sweep(root, name, runs)


def test_add_rows_keeps_every_candidate_and_labels_the_new_one_by_the_same_setting(tmp_path):
    earlier = tmp_path / "summaries" / "sel.json"
    aggregate.aggregate(_candidates(tmp_path, "grid", (0.001, 0.003)), summary=earlier)
    before = json.loads(earlier.read_text())
    assert [r["label"] for r in before["rows"]] == ["Pretraining (iid_lr=0.001)", "Pretraining (iid_lr=0.003)"]
    edge = _candidates(tmp_path, "edge", (0.01,))  # alone, its row would be "Pretraining (cpu)"
    aggregate.aggregate(edge, summary=earlier, add_rows=earlier)
    after = json.loads(earlier.read_text())
    assert [r["label"] for r in after["rows"]] == [*(r["label"] for r in before["rows"]), "Pretraining (iid_lr=0.01)"]
    assert after["rows"][:2] == before["rows"] and after["rows"][2]["settings"] == {"iid_lr": 0.01}
    assert after["rows"][2]["metrics"]["held_out@10"]["mean"] == 1.0
    assert [s["name"] for s in after["sweeps"]] == ["grid", "edge"]
    assert after["kept_rows"]["labels"] == [r["label"] for r in before["rows"]] and after["kept_rows"]["sweeps"] == ["grid"]
    assert f"edge --add-rows {earlier} --summary {earlier}" in after["made_by"]
    assert after["compute"]["total"]["jobs"] == 3


def test_add_rows_refuses_a_row_the_summary_has_and_keep_rows_beside_it(tmp_path):
    import pytest

    from utils.errors import UserError
    earlier = tmp_path / "summaries" / "sel.json"
    aggregate.aggregate(_candidates(tmp_path, "grid", (0.001, 0.003)), summary=earlier)
    again = _candidates(tmp_path / "again", "again", (0.003,))
    with pytest.raises(UserError, match="already has the row"):
        aggregate.aggregate(again, summary=tmp_path / "s.json", add_rows=earlier)
    with pytest.raises(UserError, match="not both"):
        aggregate.aggregate(again, summary=tmp_path / "s.json", add_rows=earlier, keep_rows=earlier)
    with pytest.raises(UserError, match="--add-rows keeps rows"):
        aggregate.aggregate(again, add_rows=earlier)


def test_label_by_names_the_setting_a_new_candidate_differs_in(tmp_path):
    import pytest

    from utils.errors import UserError
    earlier = tmp_path / "summaries" / "sel.json"
    aggregate.aggregate(_candidates(tmp_path, "grid", (0.001, 0.003)), summary=earlier)
    other = _set_evaluated(_method_run(tmp_path, "inner", 1, 0.4, "pretraining"), iid_lr=0.003, iid_epochs=50)
    inner = _sweep(tmp_path, "inner", [other])
    with pytest.raises(UserError, match="--label-by"):  # alone it is labelled "iid_lr=0.003", a row the summary has
        aggregate.aggregate(inner, summary=earlier, add_rows=earlier)
    with pytest.raises(UserError, match="no evaluation has the setting"):
        aggregate.aggregate(inner, summary=earlier, add_rows=earlier, label_by=["update_rate"])
    aggregate.aggregate(inner, summary=earlier, add_rows=earlier, label_by=["iid_epochs"])
    after = json.loads(earlier.read_text())
    assert after["rows"][-1]["label"] == "Pretraining (iid_lr=0.003, iid_epochs=50)"
    assert f"inner --add-rows {earlier} --label-by iid_epochs --summary {earlier}" in after["made_by"]


def test_label_by_labels_only_the_rows_whose_method_has_the_setting(tmp_path):
    pretraining = _set_evaluated(_method_run(tmp_path, "pre", 1, 0.4, "pretraining"), iid_lr=0.003)
    oml = _method_run(tmp_path, "oml", 1, 0.5, "oml")  # OML never reads iid_lr: its settings have none
    groups = aggregate.groups_of(aggregate.collect(_sweep(tmp_path, "both", [pretraining, oml]))[0], ["iid_lr"])
    assert sorted(g["label"] for g in groups) == ["OML (cpu)", "Pretraining (iid_lr=0.003)"]
