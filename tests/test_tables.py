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
    for kind in ("headline", "seeds", "candidates"):
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


def test_the_trajectory_table_shows_and_reads_trajectory_accuracy_alone():
    summary = {"benchmark": "omniglot", "not_counted": [], "rows": [
        {"label": label, "method": label, "seeds": [1, 2, 3], "by_seed": {},
         "metrics": {"held_out@10": {"mean": h, "ci_low": h - 0.01, "ci_high": h + 0.01},
                     "trajectory@10": {"mean": t, "ci_low": t - 0.01, "ci_high": t + 0.01}}}
        for label, h, t in (("A", 0.50, 0.90), ("B", 0.50, 0.70))]}
    text = tables.render(summary, "trajectory")
    assert text.splitlines()[0] == "| method | seeds | trajectory, 10 classes: mean (95% CI across seeds) |"
    assert "| A | 3 | **.900 (.890–.910)** |" in text and "held-out" not in text
    assert "Reading (trajectory, 10 classes, 95% t intervals across seeds): A higher than B (intervals apart)." in text
    with pytest.raises(UserError, match="Omniglot"):
        tables.render({"benchmark": "sine", "rows": summary["rows"]}, "trajectory", "sine_x")


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


# --- representation x learner ----------------------------------------------------------------------

def _learners_summary():
    """A hand-made summary of representation x learner rows, in the aggregate's (not the table's) order:
    at 10 classes OML's SLDA interval is apart from every other SLDA row, at 600 classes it overlaps
    Pretraining's; Random has one seed; SR-NN has no SLDA row and no NCM row."""
    def row(method, learner, seeds, at10, at600):
        metrics = {}
        for kind, shift in (("held_out", 0.0), ("trajectory", 0.1)):
            for n, (m, half) in (("10", at10), ("600", at600)):
                metrics[f"{kind}@{n}"] = {"mean": m + shift, "ci_low": m + shift - half, "ci_high": m + shift + half}
        return {"label": f"{method} (learner={learner})", "method": method, "row": f"learner={learner}",
                "seeds": list(range(1, seeds + 1)), "settings": {"learner": learner}, "metrics": metrics, "by_seed": {}}
    return {"benchmark": "omniglot", "made_by": "python -m experiment.aggregate A B --summary summaries/t.json", "rows": [
        row("Pretraining", "slda", 3, (0.80, 0.02), (0.55, 0.02)),
        row("OML", None, 3, (0.70, 0.02), (0.30, 0.02)),
        row("Random", "slda", 1, (0.60, 0.0), (0.25, 0.0)),
        row("OML", "slda", 3, (0.90, 0.02), (0.56, 0.02)),
        row("SR-NN", None, 3, (0.50, 0.02), (0.20, 0.02)),
        row("Pretraining", None, 3, (0.30, 0.02), (0.02, 0.01)),
        row("OML", "ncm", 3, (0.88, 0.02), (0.50, 0.02)),
    ]}


def test_the_learners_table_has_one_row_per_representation_and_learner_in_a_fixed_order():
    table = tables.render(_learners_summary(), "learners", "t")
    lines = table.splitlines()
    assert lines[0] == ("| representation | learner | seeds | held-out, 10 classes: mean (95% CI across seeds) | "
                        "held-out, 600 classes: mean (95% CI across seeds) |")
    # OML, SR-NN, Pretraining, Random; under each SGD PLN, NCM, SLDA; the name on a group's first row only
    assert [tuple(cell.strip() for cell in line.split("|")[1:3]) for line in lines[2:14]] == [
        ("OML", "SGD PLN"), ("", "NCM"), ("", "SLDA"), ("SR-NN", "SGD PLN"), ("", "NCM"), ("", "SLDA"),
        ("Pretraining", "SGD PLN"), ("", "NCM"), ("", "SLDA"), ("Random", "SGD PLN"), ("", "NCM"), ("", "SLDA")]
    assert lines[14] == ""
    # a combination not in the summary (its runs not finished) is a row of dashes; one seed says so
    assert lines[6] == "| | NCM | — | — | — |" and lines[7] == "| | SLDA | — | — | — |"
    assert "| | SLDA | 1 | .600 (one seed) | .250 (one seed) |" in table
    # the trajectory kind: the same rows, trajectory accuracy
    trajectory = tables.render(_learners_summary(), "learners_trajectory", "t")
    assert "trajectory, 600 classes" in trajectory.splitlines()[0] and "| OML | SGD PLN | 3 | **.800 (.780–.820)** |" in trajectory


def test_the_learners_table_bolds_a_representation_only_when_apart_from_every_other_under_its_learner():
    table = tables.render(_learners_summary(), "learners", "t")
    # SGD PLN: OML is apart from SR-NN and Pretraining at both counts
    assert "| OML | SGD PLN | 3 | **.700 (.680–.720)** | **.300 (.280–.320)** |" in table
    # SLDA: a one-seed row (Random) has no interval to be apart from, so nothing is bold
    assert "| | SLDA | 3 | .900 (.880–.920) | .560 (.540–.580) |" in table
    summary = _learners_summary()
    del summary["rows"][2]  # without Random: OML is apart from Pretraining at 10 classes, overlaps at 600
    table = tables.render(summary, "learners", "t")
    assert "| | SLDA | 3 | **.900 (.880–.920)** | .560 (.540–.580) |" in table
    # NCM: a learner with one representation has nothing to be apart from
    assert "| | NCM | 3 | .880 (.860–.900) | .500 (.480–.520) |" in table


def test_the_learners_readings_claim_only_what_the_intervals_say():
    summary = _learners_summary()
    text = tables.render(summary, "learners", "t")
    assert ("Reading (SGD PLN; held-out, 10 and 600 classes, 95% t intervals across seeds): "
            "OML higher than SR-NN and Pretraining; SR-NN higher than Pretraining (intervals apart).") in text
    assert "Reading (NCM): Fewer than two rows with several seeds: no comparison across seeds." in text
    assert ("Reading (SLDA; held-out, 10 classes, 95% t intervals across seeds): OML higher than Pretraining "
            "(intervals apart). One seed, not compared: Random.") in text
    assert ("Reading (SLDA; held-out, 600 classes, 95% t intervals across seeds): OML and Pretraining overlap "
            "(no claim). One seed, not compared: Random.") in text
    # the SGD PLN against the best exact learner (by mean) at the smallest and largest class count
    assert ("Reading (SGD PLN against the exact learner with the highest mean; held-out, 95% t intervals across seeds): "
            "OML: SLDA higher than SGD PLN at 10 and 600 classes (intervals apart). "
            "Pretraining: SLDA higher than SGD PLN at 10 and 600 classes (intervals apart).") in text
    # an overlap, and three representations where only some pairs are apart
    summary["rows"][1]["metrics"]["held_out@600"] = {"mean": 0.50, "ci_low": 0.40, "ci_high": 0.545}
    summary["rows"][4]["metrics"]["held_out@600"] = {"mean": 0.45, "ci_low": 0.30, "ci_high": 0.60}
    text = tables.render(summary, "learners", "t")
    assert "OML: SLDA higher than SGD PLN at 10 classes (intervals apart); SLDA and SGD PLN overlap at 600 classes (no claim)." in text
    assert ("Reading (SGD PLN; held-out, 600 classes, 95% t intervals across seeds): OML higher than Pretraining; "
            "SR-NN higher than Pretraining (intervals apart); every other pair overlaps (no claim).") in text


def test_a_learners_table_shows_the_jobs_left_out():
    summary = _learners_summary()
    summary["not_counted"] = [{"job": "oc_anml_slda/r2", "state": "failed", "error": ""}]
    assert tables.render(summary, "learners", "t").endswith("Not counted: oc_anml_slda/r2 (failed: no error text).")


def test_a_summary_without_settings_is_refused_for_a_learners_table(tmp_path):
    summary = _learners_summary()
    for row in summary["rows"]:
        del row["settings"]
    (tmp_path / "summaries").mkdir()
    (tmp_path / "docs").mkdir()
    (tmp_path / "summaries" / "old.json").write_text(json.dumps(summary))
    (tmp_path / "README.md").write_text("<!-- table: old learners_trajectory -->\nold\n<!-- /table -->\n")
    with pytest.raises(UserError) as info:
        tables.stale_files(tmp_path)
    message = str(info.value)
    assert "summaries/old.json" in message and "learners_trajectory" in message and "\n" not in message
    # rows that do not differ by learner cannot say which learner each is
    summary = _learners_summary()
    for row in summary["rows"]:
        row["settings"] = {"preset": "cpu"}
    with pytest.raises(UserError, match=r"summaries/t\.json"):
        tables.render(summary, "learners", "t")


def test_two_rows_of_one_method_and_learner_are_two_representations():
    summary = _learners_summary()
    wide = json.loads(json.dumps(summary["rows"][3]))
    for row, preset in ((summary["rows"][3], "cpu"), (wide, "cpu_wide")):
        row["settings"] = {"learner": "slda", "preset": preset}
    summary["rows"].append(wide)
    table = tables.render(summary, "learners", "t")
    assert "| OML (preset=cpu) | SGD PLN |" in table and "| OML (preset=cpu_wide) | SGD PLN | — |" in table
    assert table.index("OML (preset=cpu_wide)") < table.index("| SR-NN |")
