"""The README's and docs' result tables are generated from the committed summaries (summaries/*.json):
a number typed by hand, or a summary changed without regenerating, fails here."""
import json
import shutil

import pytest

from analysis import tables
from tests.conftest import REPO
from utils.errors import UserError


def test_every_committed_table_is_what_its_summary_gives():
    stale = tables.stale_files(REPO)
    assert not stale, f"stale tables (run python plot_results.py --tables): {sorted(str(p) for p in stale)}"


def test_every_summary_feeds_a_table():
    used = {m.group(2) for path in tables.markdown_files(REPO) for m in tables.BLOCK.finditer(path.read_text())}
    kept = {path.stem for path in (REPO / "summaries").glob("*.json")}
    assert kept and kept <= used, f"summaries no table shows: {sorted(kept - used)}"


def _copy(tmp_path):
    shutil.copytree(REPO / "summaries", tmp_path / "summaries")
    shutil.copytree(REPO / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("*.png"))
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    return tmp_path


def test_a_changed_number_makes_the_tables_stale(tmp_path):
    repo = _copy(tmp_path)
    assert not tables.stale_files(repo)
    path = next((repo / "summaries").glob("*.json"))
    summary = json.loads(path.read_text())
    row = summary["rows"][0]
    name = next(iter(row["metrics"]))
    row["metrics"][name]["mean"] += 0.5
    path.write_text(json.dumps(summary))
    stale = tables.stale_files(repo)
    assert stale and all(tables.regenerate(text, repo) == text for text in stale.values())


def test_a_block_without_its_summary_is_an_error(tmp_path):
    (tmp_path / "summaries").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("<!-- table: nowhere -->\nold\n<!-- /table -->\n")
    with pytest.raises(UserError, match="nowhere"):
        tables.stale_files(tmp_path)


def _summary(*rows):
    return {"benchmark": "sine", "rows": [
        {"label": label, "method": label, "seeds": [1, 2, 3],
         "metrics": {"final_mse": {"mean": m, "ci_low": lo, "ci_high": hi}, "first_mse": {"mean": 0.1, "ci_low": 0, "ci_high": 1}},
         "by_seed": {}} for label, m, lo, hi in rows]}


def test_the_reading_claims_only_what_the_intervals_say():
    summary = _summary(("A", 0.5, 0.4, 0.6), ("B", 1.0, 0.9, 1.2), ("C", 1.1, 1.0, 1.3))
    text = tables.readings(summary, ["final_mse"])
    assert "A lower than B; A lower than C (intervals apart)" in text and "B and C overlap (no claim)" in text
    one_seed = _summary(("A", 0.5, 0.5, 0.5))
    one_seed["rows"][0]["seeds"] = [1]
    assert "no comparison" in tables.readings(one_seed, ["final_mse"])
    table = tables.headline(summary)
    assert "| A | 3 | **0.500 (0.400–0.600)** |" in table


def _omniglot_group(seed_accuracies):
    """An aggregated Omniglot group as experiment/aggregate.py gives it (schedule of ints, by_classes
    keyed by strings), and its members' results with each class count's chosen rate."""
    schedule = [10, 97]
    members = [{"seed": seed, "rank": i, "result": {"benchmark": "omniglot", "split": "selection",
                                                    "by_classes": {str(n): {"lr": 0.001} for n in schedule}}}
               for i, seed in enumerate(seed_accuracies)]
    stats = {"mean": 0.5, "ci_low": 0.4, "ci_high": 0.6}
    by_classes = {str(n): {"held_out_accuracy": stats, "trajectory_accuracy": stats,
                           "by_seed": {str(seed): {"runs": 50, "held_out_accuracy": {**stats, "mean": acc},
                                                   "trajectory_accuracy": stats}
                                       for seed, acc in seed_accuracies.items()}}
                  for n in schedule}
    result = {"benchmark": "omniglot", "label": "SR-NN (b)", "schedule": schedule, "by_classes": by_classes,
              "aggregate": {"seeds": sorted(seed_accuracies), "jobs": ["s/r0", "s/r1"]}}
    group = {"method": "SR-NN", "row": "b", "members": members}
    return group, result


def test_an_omniglot_summary_renders_every_class_count():
    from experiment.summaries import summary_of
    group, result = _omniglot_group({1: 0.45, 2: 0.55})
    summary = summary_of([{"name": "s", "script": "evaluate_omniglot.py", "argv": []}], [group], [result], "cmd")
    row = summary["rows"][0]
    assert summary["split"] == "selection" and row["by_seed"]["2"]["runs"] == 50
    assert row["by_seed"]["1"]["lr"] == [{"10": 0.001, "97": 0.001}]
    assert set(row["metrics"]) == {"held_out@10", "trajectory@10", "held_out@97", "trajectory@97"}
    table = tables.render(summary, "seeds")
    assert "| SR-NN (b) | 1 | .450 (.400–.600) | .450 (.400–.600) | 50 | 0.001/0.001 |" in table
    assert "held-out, 97 classes" in tables.render(summary, "candidates")
    # columns by class count, not in the text order the JSON file keeps ("100" before "50")
    summary["rows"][0]["metrics"] = {f"held_out@{n}": {"mean": 0.5, "ci_low": 0.4, "ci_high": 0.6} for n in (10, 100, 50)}
    header = tables.render(summary, "candidates").splitlines()[0]
    assert header.index("10 classes") < header.index("50 classes") < header.index("100 classes")


def test_a_job_left_out_is_named_under_its_table():
    summary = _summary(("A", 0.5, 0.4, 0.6), ("B", 1.0, 0.9, 1.2))
    assert "Not counted" not in tables.render(summary, "headline")
    summary["not_counted"] = [{"job": "sweep/r3", "state": "failed", "error": "error: online learning diverged at 0.03"}]
    for kind in tables.KINDS:
        assert tables.render(summary, kind).endswith("Not counted: sweep/r3 (failed: error: online learning diverged at 0.03).")


def test_an_omniglot_table_reads_every_class_count():
    summary = {"benchmark": "omniglot", "rows": [
        {"label": label, "method": label, "seeds": [1, 2, 3], "by_seed": {},
         "metrics": {"held_out@10": {"mean": m10, "ci_low": m10 - 0.05, "ci_high": m10 + 0.05},
                     "held_out@200": {"mean": m200, "ci_low": m200 - 0.02, "ci_high": m200 + 0.02}}}
        for label, m10, m200 in (("A", 0.80, 0.50), ("B", 0.78, 0.20))]}
    text = tables.headline(summary)
    # a tie at 10 classes and a gap at 200 are both said, each at its own class count
    assert "Reading (held-out, 10 classes, 95% t intervals across seeds): A and B overlap (no claim)." in text
    assert "Reading (held-out, 200 classes, 95% t intervals across seeds): A higher than B (intervals apart)." in text


def test_a_learner_without_a_rate_is_shown_as_none():
    assert tables._rate([{"10": None, "50": None}]) == "none/none" and tables._rate([0.001, None]) == "0.001, none"


def test_class_counts_with_the_same_claims_share_one_reading():
    summary = {"benchmark": "omniglot", "rows": [
        {"label": label, "method": label, "seeds": [1, 2, 3], "by_seed": {},
         "metrics": {f"held_out@{n}": {"mean": m, "ci_low": m - 0.01, "ci_high": m + 0.01} for n in (10, 50, 100)}}
        for label, m in (("A", 0.8), ("B", 0.5))]}
    text = tables.headline(summary)
    assert "Reading (held-out, 10, 50 and 100 classes, 95% t intervals across seeds): A higher than B (intervals apart)." in text
    assert text.count("Reading") == 1
