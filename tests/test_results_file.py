"""Results files: Omniglot accuracies are keyed as the prose names them (trajectory / held-out), and
files written under the old keys (train_accuracy / test_accuracy) still read and plot."""
import json

import plot_results
from utils.cli import run_main
from utils.results import read_results


def _omniglot_result(trajectory_key: str, held_out_key: str) -> dict:
    ci = lambda m: {"mean": m, "ci_low": m - 0.01, "ci_high": m + 0.01}
    return {"benchmark": "omniglot", "schedule": [10, 50],
            "by_classes": {str(n): {"lr": 1e-3, trajectory_key: ci(0.9 - n / 100), held_out_key: ci(0.8 - n / 100),
                                    "runs": {trajectory_key: [0.9], held_out_key: [0.8], "classes": [[1, 2]]}}
                           for n in (10, 50)}}


def test_old_keys_are_read_under_the_new_names(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps(_omniglot_result("train_accuracy", "test_accuracy")))
    entry = read_results(tmp_path)["by_classes"]["50"]
    assert entry["trajectory_accuracy"]["mean"] == 0.9 - 0.5 and entry["held_out_accuracy"]["mean"] == 0.8 - 0.5
    assert entry["runs"]["held_out_accuracy"] == [0.8] and "test_accuracy" not in entry


def test_new_keys_are_left_alone_and_both_generations_plot_together(tmp_path):
    new = _omniglot_result("trajectory_accuracy", "held_out_accuracy")
    (tmp_path / "new.json").write_text(json.dumps(new))
    (tmp_path / "old.json").write_text(json.dumps(_omniglot_result("train_accuracy", "test_accuracy")))
    assert read_results(tmp_path / "new.json") == new
    out = run_main(plot_results.main, plot_results.get_args_parser(),
                   [str(tmp_path / "new.json"), str(tmp_path / "old.json"), "--out", str(tmp_path / "fig.png")])
    assert out.is_file() and out.stat().st_size > 0
