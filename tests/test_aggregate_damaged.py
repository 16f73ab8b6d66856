"""`python -m experiment.aggregate` on damaged sweep folders and on an existing --out.

A damaged job (its record, its run's config.json or results.json) is listed by name among the jobs
not counted and the rest aggregated; a damaged sweep.json, or no usable job at all, is one
`error:` line, exit 2, nothing written. An existing --out is written only when it is empty or an
earlier aggregate's, and never loses a file that is not the aggregate's own. Sweep folders are
made by hand here (four finished sine jobs, two seeds of two methods): no training needed.
"""
import json
from pathlib import Path

import pytest

from experiment import aggregate
from utils.cli import run_main


def _result(benchmark: str, method: str, rank: int, seed: int) -> dict:
    if benchmark == "sine":
        curve = [[1.0 + rank + seed * 0.1 + step * 0.01 + r for step in range(3)] for r in range(2)]
        return {"benchmark": "sine", "model": {"method": method}, "runs": {"curve": curve, "per_function": curve}}
    runs = {"trajectory_accuracy": [0.9, 0.8 + 0.01 * seed], "held_out_accuracy": [0.5, 0.4 + 0.01 * rank]}
    return {"benchmark": "omniglot", "model": {"method": method}, "schedule": [2, 4],
            "by_classes": {"2": {"runs": runs}, "4": {"runs": runs}}}


def make_sweep(root: Path, benchmark: str = "sine") -> Path:
    folder = root / "sweeps" / "syn"
    (folder / "jobs").mkdir(parents=True)
    jobs = []
    for rank, (method, seed) in enumerate([("oml", 1), ("oml", 2), ("srnn", 1), ("srnn", 2)]):
        run = root / "runs" / f"syn_r{rank}_1"
        run.mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({"seed": seed, "method": method, "preset": "quick"}))
        (run / "results.json").write_text(json.dumps(_result(benchmark, method, rank, seed)))
        (folder / "jobs" / f"r{rank}.json").write_text(json.dumps({"state": "finished", "run_dir": str(run)}))
        jobs.append({"rank": rank, "run_name": f"syn_r{rank}", "command": ["python", "oml_regression.py"],
                     "combination": {"seed": seed, "method": method}})
    (folder / "sweep.json").write_text(json.dumps({"name": "syn", "script": "oml_regression.py", "argv": [],
                                                   "jobs": jobs}))
    return folder


def run_aggregate(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        run_main(aggregate.main, aggregate.get_args_parser(), [str(a) for a in argv])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def run_dir(folder: Path, rank: int) -> Path:
    return Path(json.loads((folder / "jobs" / f"r{rank}.json").read_text())["run_dir"])


DAMAGED_JOB = {
    "garbage job record": lambda folder: (folder / "jobs" / "r1.json").write_bytes(b"\x00\xffnot json"),
    "job record not an object": lambda folder: (folder / "jobs" / "r1.json").write_text("[1, 2]"),
    "run folder without config.json": lambda folder: (run_dir(folder, 1) / "config.json").unlink(),
    "config.json not JSON": lambda folder: (run_dir(folder, 1) / "config.json").write_text("{"),
    "results.json not JSON": lambda folder: (run_dir(folder, 1) / "results.json").write_text("nan, really"),
    "results.json without runs": lambda folder: (run_dir(folder, 1) / "results.json").write_text(
        json.dumps({"benchmark": "sine"})),
    "record naming no run folder": lambda folder: (folder / "jobs" / "r1.json").write_text(
        json.dumps({"state": "finished", "run_dir": None})),
}


@pytest.mark.parametrize("damage", DAMAGED_JOB)
def test_a_damaged_job_is_listed_by_name_and_the_rest_aggregated(tmp_path, capsys, damage):
    folder = make_sweep(tmp_path)
    DAMAGED_JOB[damage](folder)
    code, err = run_aggregate([folder], capsys)
    assert code == 0 and "Traceback" not in err
    summary = json.loads((folder / "aggregate" / "summary.json").read_text())
    assert [(p["sweep"], p["rank"], p["state"]) for p in summary["not_counted"]] == [("syn", 1, "damaged")]
    assert summary["not_counted"][0]["error"]
    groups = {g["label"].split()[0]: g for g in summary["groups"]}
    assert groups["OML"]["ranks"] == [0] and groups["SR-NN"]["ranks"] == [2, 3]
    assert "| syn/r1 | damaged |" in (folder / "aggregate" / "tables.md").read_text()


def test_an_omniglot_result_without_its_accuracies_is_listed_and_a_missing_class_count_left_out(tmp_path, capsys):
    folder = make_sweep(tmp_path, "omniglot")
    result = json.loads((run_dir(folder, 1) / "results.json").read_text())
    del result["by_classes"]["2"]["runs"]["held_out_accuracy"]
    (run_dir(folder, 1) / "results.json").write_text(json.dumps(result))
    result = json.loads((run_dir(folder, 3) / "results.json").read_text())
    del result["by_classes"]["4"]  # evaluated up to 2 classes only: still counted, at the counts it has
    (run_dir(folder, 3) / "results.json").write_text(json.dumps(result))
    code, err = run_aggregate([folder], capsys)
    assert code == 0 and "Traceback" not in err
    summary = json.loads((folder / "aggregate" / "summary.json").read_text())
    assert [(p["rank"], p["state"]) for p in summary["not_counted"]] == [(1, "damaged")]
    assert "held_out_accuracy" in summary["not_counted"][0]["error"]
    srnn = json.loads((folder / "aggregate" / summary["groups"][1]["file"]).read_text())
    assert summary["groups"][1]["ranks"] == [2, 3] and srnn["schedule"] == [2]


DAMAGED_SWEEP = {
    "sweep.json a list": lambda folder: (folder / "sweep.json").write_text("[]"),
    "sweep.json without jobs": lambda folder: (folder / "sweep.json").write_text(json.dumps({"name": "syn"})),
    "sweep.json not JSON": lambda folder: (folder / "sweep.json").write_text("{{"),
    "a job without a rank": lambda folder: (folder / "sweep.json").write_text(json.dumps(
        {"name": "syn", "jobs": [{"command": ["python"]}]})),
    "no job usable": lambda folder: [(folder / "jobs" / f"r{r}.json").write_text("garbage") for r in range(4)],
    "no job finished": lambda folder: [(folder / "jobs" / f"r{r}.json").unlink() for r in range(4)],
}


@pytest.mark.parametrize("damage", DAMAGED_SWEEP)
def test_a_damaged_sweep_or_nothing_usable_is_one_line_and_nothing_written(tmp_path, capsys, damage):
    folder = make_sweep(tmp_path)
    DAMAGED_SWEEP[damage](folder)
    code, err = run_aggregate([folder], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert not (folder / "aggregate").exists()


# --- --out: never someone else's files --------------------------------------------------------------

def test_out_holding_other_files_is_refused_and_left_as_it_was(tmp_path, capsys):
    folder = make_sweep(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    (mine / "summary.json").write_text('{"mine": true}')
    code, err = run_aggregate([folder, "--out", mine], capsys)
    assert code == 2 and err.count("\n") == 1 and "holds files this command did not write (thesis.tex)" in err
    assert sorted(p.name for p in mine.iterdir()) == ["summary.json", "thesis.tex"]
    assert (mine / "summary.json").read_text() == '{"mine": true}'
    (mine / "thesis.tex").unlink()  # a summary.json alone that is not an aggregate's is still refused
    assert run_aggregate([folder, "--out", mine], capsys)[0] == 2
    assert (mine / "summary.json").read_text() == '{"mine": true}'
    file = tmp_path / "a_file"
    file.write_text("x")
    code, err = run_aggregate([folder, "--out", file], capsys)
    assert code == 2 and "is a file" in err and file.read_text() == "x"


def test_an_earlier_aggregate_is_rewritten_keeping_files_it_did_not_write(tmp_path, capsys):
    folder = make_sweep(tmp_path)
    out = tmp_path / "empty"
    out.mkdir()
    assert run_aggregate([folder, "--out", out], capsys)[0] == 0
    assert (out / aggregate.MARKER).is_file() and len(list(out.glob("group_*.json"))) == 2
    (out / "notes.txt").write_text("my notes")
    (out / "group_99_mine.json").write_text("{}")  # named like a group file, but not listed by the summary
    for rank in (0, 1):  # OML's jobs damaged: one group, one group file fewer
        (folder / "jobs" / f"r{rank}.json").write_text("{")
    assert run_aggregate([folder, "--out", out], capsys)[0] == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [g["label"].split()[0] for g in summary["groups"]] == ["SR-NN"]
    assert sorted(p.name for p in out.glob("group_*.json")) == sorted([summary["groups"][0]["file"], "group_99_mine.json"])
    assert (out / "notes.txt").read_text() == "my notes"


def test_an_aggregate_written_before_the_marker_is_recognised(tmp_path, capsys):
    folder = make_sweep(tmp_path)
    assert run_aggregate([folder], capsys)[0] == 0
    (folder / "aggregate" / aggregate.MARKER).unlink()
    assert run_aggregate([folder], capsys)[0] == 0
    assert (folder / "aggregate" / aggregate.MARKER).is_file()
