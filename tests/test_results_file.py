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


def _study_point(features: int, steps: int, held_200: float, held_600: float) -> dict:
    ci = lambda m: {"mean": m, "ci_low": m - 0.01, "ci_high": m + 0.01}
    grid = [0.03, 0.01, 0.003, 0.001]
    entry = lambda held, valid: {"lr": 0.001, "held_out_accuracy": ci(held), "trajectory_accuracy": ci(held + 0.2),
                                 "lr_search": {"grid": grid, "mean_scores": [0.1, 0.2, 0.3, valid]}}
    return {"benchmark": "omniglot", "schedule": [200, 600], "features": {"n_features": features},
            "model": {"step": steps, "checkpoint": f"w{features}_{steps}.pt"}, "by_classes": {"200": entry(held_200, 0.7), "600": entry(held_600, 0.5)}}


def test_cost_accuracy_table_and_figure(tmp_path, capsys):
    """plot_results.py --cost-accuracy: one row per evaluation, sorted by width then steps, its
    minutes = steps x the given seconds per step of its width, the validation score read at the
    chosen rate (never the held-out one); a width with no seconds is a one-line error."""
    points = [(1152, 20_000, 0.61, 0.41), (576, 10_000, 0.50, 0.31), (1152, 10_000, 0.58, 0.38)]
    paths = []
    for point in points:  # a run folder names its row; a bare file its stem
        folder = tmp_path / f"w{point[0]}_{point[1]}"
        folder.mkdir()
        paths.append(folder / "results.json" if point[0] == 1152 else tmp_path / f"w{point[0]}_{point[1]}.json")
        paths[-1].write_text(json.dumps(_study_point(*point)))
    parser = plot_results.get_args_parser()
    out = run_main(plot_results.main, parser, [*map(str, paths), "--cost-accuracy", "--step-seconds", "576=0.15",
                                               "1152=0.3", "--out", str(tmp_path / "study.png")])
    assert out.is_file() and out.with_suffix(".md").is_file()
    rows = [r for r in capsys.readouterr().out.splitlines() if " | w" in r]
    assert rows == ["| 576 features | w576_10000 | 576 | 10,000 | 25 | 0.700 / 0.500 | 0.500 (0.490-0.510) | 0.310 (0.300-0.320) |",
                    "| 1152 features | w1152_10000 | 1152 | 10,000 | 50 | 0.700 / 0.500 | 0.580 (0.570-0.590) | 0.380 (0.370-0.390) |",
                    "| 1152 features | w1152_20000 | 1152 | 20,000 | 100 | 0.700 / 0.500 | 0.610 (0.600-0.620) | 0.410 (0.400-0.420) |"]
    # --labels names each file's series (e.g. one width at two meta rates): rows keep them apart
    out = run_main(plot_results.main, parser, [*map(str, paths), "--cost-accuracy", "--step-seconds", "576=0.15",
                                               "1152=0.3", "--labels", "wide B", "narrow", "wide A",
                                               "--out", str(tmp_path / "series.png")])
    rows = [r.split(" | ")[0] for r in capsys.readouterr().out.splitlines() if " | w" in r]
    assert rows == ["| narrow", "| wide A", "| wide B"] and out.is_file()  # by width, then series
    try:
        run_main(plot_results.main, parser, [*map(str, paths), "--cost-accuracy", "--step-seconds", "576=0.15",
                                             "--out", str(tmp_path / "bad.png")])
    except SystemExit as err:
        assert err.code != 0
    else:
        raise AssertionError("a width without seconds per step must be refused")
    assert "no seconds per step given for the 1152-feature network" in capsys.readouterr().err
