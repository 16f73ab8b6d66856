"""Fig. 4 drawn from a committed summary (plot_results.py summaries/NAME.json): the curves are the
summary's numbers, rows are picked by label, and every such command in the docs runs."""
import json
import re
import shlex
from pathlib import Path

import pytest

import plot_results
from experiment import summaries
from utils.errors import UserError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _from_the_repository_root(monkeypatch):
    monkeypatch.chdir(REPO)  # the docs' commands name summaries/ relative to it


def _main(argv):
    return plot_results.main(plot_results.get_args_parser().parse_args(argv))


def test_a_summary_row_becomes_the_curve_of_its_means_and_intervals():
    summary = json.loads((REPO / "summaries/omniglot_cpu_wide.json").read_text())
    drawn = summaries.figure_results(summary, "omniglot_cpu_wide.json")
    assert [r["label"] for r in drawn] == [row["label"] for row in summary["rows"]]
    for result, row in zip(drawn, summary["rows"]):
        assert result["schedule"] == [10, 50, 100, 200, 600]
        for n in result["schedule"]:
            assert result["by_classes"][str(n)]["held_out_accuracy"] == row["metrics"][f"held_out@{n}"]
            assert result["by_classes"][str(n)]["trajectory_accuracy"] == row["metrics"][f"trajectory@{n}"]


def test_a_selection_summary_draws_its_own_class_counts():
    summary = json.loads((REPO / "summaries/omniglot_cpu_wide_selection_oml.json").read_text())
    assert {tuple(r["schedule"]) for r in summaries.figure_results(summary, "x")} == {(10, 50, 97)}


def test_rows_are_drawn_in_the_order_named(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(plot_results, "plot_loaded",
                        lambda results, labels, out, title: drawn.update(labels=labels, results=results) or out)
    _main(["summaries/omniglot_cpu_learners.json", "--rows", "SR-NN (learner=None, nm_channels=None)",
           "OML (learner=None)", "--out", str(tmp_path / "f.png")])
    assert drawn["labels"] == ["SR-NN (learner=None, nm_channels=None)", "OML (learner=None)"]
    assert drawn["results"][1]["by_classes"]["10"]["held_out_accuracy"]["mean"] == pytest.approx(0.844, abs=5e-4)


def test_a_figure_file_is_written(tmp_path):
    out = _main(["summaries/omniglot_cpu_wide.json", "--out", str(tmp_path / "f.png")])
    assert Path(out).stat().st_size > 10_000


@pytest.mark.parametrize("argv, message", [
    (["summaries/omniglot_cpu_wide.json", "--rows", "OML (cpu)"], "no row labelled"),
    (["summaries/sine_quick.json"], "only an Omniglot summary"),
    (["summaries/omniglot_cpu_table2.json"], "only an Omniglot summary"),
    (["trained_models/omniglot_cpu_oml.pt", "--rows", "OML (cpu)"], "none was given"),
    (["summaries/omniglot_cpu_wide.json", "--labels", "a", "b"], "2 labels for 5"),
    (["summaries/omniglot_cpu_wide.json", "--table2"], "read results files"),
    (["summaries/omniglot_cpu_wide.json", "summaries/omniglot_cpu_wide_zero.json", "--rows", "OML (cpu_wide)"],
     "two summaries"),
])
def test_a_summary_that_cannot_be_drawn_so_is_refused_in_one_line(tmp_path, argv, message):
    with pytest.raises(UserError, match=re.escape(message)):
        _main([*argv, "--out", str(tmp_path / "f.png")])


def _docs_summary_plot_commands():
    found = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for line in doc.read_text().splitlines():
            if line.startswith("python plot_results.py summaries/"):
                found.append((doc.name, line))
    return found


def test_the_docs_draw_figures_from_summaries():
    assert {name for name, _ in _docs_summary_plot_commands()} >= {"cpu_wide.md", "learners.md"}


@pytest.mark.parametrize("doc, command", _docs_summary_plot_commands())
def test_every_docs_figure_command_from_a_summary_runs(tmp_path, doc, command):
    argv = shlex.split(command)[2:]
    out = argv.index("--out")
    if argv[out + 1].startswith("docs/"):
        assert (REPO / argv[out + 1]).is_file(), f"{doc}: the figure {argv[out + 1]} is not committed"
    argv[out + 1] = str(tmp_path / "figure.png")
    assert Path(_main(argv)).is_file()
