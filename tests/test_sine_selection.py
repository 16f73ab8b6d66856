"""Choices on the sine meta-validation pool: the selection split never touches the test pool, the
rate search rules out rates that never learned function 1, a chosen split travels in the checkpoint."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import evaluate_regression
import oml_regression
from experiment import export
from experiment.checkpoint import load_checkpoint, load_weights
from experiment.evaluation import select, sine
from experiment.evaluation.sine import eligible_scores, evaluate, learned_first_function, make_protocol
from experiment.sine_presets import SINE_PRESETS, SineConfig, build_model, config_from_checkpoint
from utils.errors import UserError


def tiny_config():
    return SineConfig(**{**SINE_PRESETS["oml2020"], "preset": "oml2020", "width": 16})


def tiny_model(cfg):
    torch.manual_seed(0)
    return build_model(cfg)


def small_protocol(cfg, **kw):
    return make_protocol("paper", cfg, runs=2, search_runs=2, batches_per_function=3, test_samples=20, **kw)


def test_the_selection_split_never_reads_the_test_pool(monkeypatch):
    cfg = tiny_config()
    clean = evaluate(tiny_model(cfg), cfg, small_protocol(cfg, split="selection"))
    real = sine.eval_functions

    def poisoned(cfg, seed, split="test"):
        family = real(cfg, seed, split)
        if split == "test":
            family.amplitudes[:] = np.nan  # any read of the test pool turns every number NaN
        return family

    monkeypatch.setattr(sine, "eval_functions", poisoned)
    again = evaluate(tiny_model(cfg), cfg, small_protocol(cfg, split="selection"))
    assert again == clean and clean["split"] == "selection" and np.isfinite(clean["final_mse"]["mean"])
    with pytest.raises(UserError, match="diverged"):  # the poison is live: the test split reads it
        evaluate(tiny_model(cfg), cfg, small_protocol(cfg, lr=0.01))


def test_the_two_pools_are_different_functions():
    cfg = tiny_config()
    test, selection = sine.eval_functions(cfg, 1, "test"), sine.eval_functions(cfg, 1, "selection")
    assert len(test) == len(selection) == cfg.n_eval_functions
    assert not np.isin(selection.amplitudes, test.amplitudes).any()
    result = evaluate(tiny_model(cfg), cfg, small_protocol(cfg, lr=0.01))
    assert result["split"] == "test" and result["protocol"]["split"] == "test"


def test_a_rate_that_never_learned_function_one_is_ruled_out():
    first_mse = np.array([[0.05, 3.0, 0.2], [4.0, 4.0, 4.0]])
    variance = np.array([[1.0], [1.0]])
    learned = learned_first_function(first_mse, variance)
    assert learned.tolist() == [[True, False, False], [False, False, False]]  # 0.2 > 0.1 x variance
    final = np.array([[0.9, 0.3, 0.5], [0.9, 0.3, 0.5]])
    eligible = eligible_scores(final, learned)
    # run 1: the lowest final MSE (0.3) never fitted function 1, so 0.9 wins; run 2: nobody learned it, all compete
    assert eligible[0].tolist() == [0.9, np.inf, np.inf] and eligible[1].tolist() == [0.9, 0.3, 0.5]
    assert not learned_first_function(np.array([[np.nan]]), np.array([[1.0]])).any()


def test_the_search_records_and_applies_the_rule():
    # a trained representation, so that some rates fit function 1 and others do not
    payload = load_checkpoint(Path(__file__).parents[1] / "trained_models" / "sine_quick_oml.pt", benchmark="sine")
    cfg = config_from_checkpoint(payload)
    model = load_weights(build_model(cfg), payload)
    p = make_protocol("paper", cfg, runs=1, search_runs=2, test_samples=20)
    search = sine.search_lr(model, cfg, p, sine.eval_functions(cfg, p.seed), "cpu")
    learned = np.array(search["learned_first_function"])
    scores = np.array([[np.inf if v is None else v for v in row] for row in search["scores"]])
    assert learned.shape == scores.shape == (2, len(sine.LR_GRID)) and learned.any() and not learned.all()
    for run, best in enumerate(search["best_per_search_run"]):
        j = sine.LR_GRID.index(best)
        assert learned[run, j] or not learned[run].any()
        assert scores[run, j] == min(scores[run, learned[run]]) if learned[run].any() else True


def _result(final_mse, split="selection", benchmark="sine"):
    if benchmark == "sine":
        return {"benchmark": "sine", "label": "x", "split": split, "final_mse": {"mean": final_mse}}
    return {"benchmark": "omniglot", "label": "x", "split": split,
            "by_classes": {"10": {"held_out_accuracy": {"mean": final_mse}}}}


def test_select_reads_the_meta_validation_split_only(tmp_path):
    assert select.select([_result(0.9), _result(0.4), _result(0.6)], ["a", "b", "c"]) == "b"
    with pytest.raises(UserError, match="--selection-functions"):
        select.select([_result(0.9), _result(0.1, split="test")])
    with pytest.raises(UserError, match="--selection-classes"):
        select.select([_result(0.5, benchmark="omniglot"), {"benchmark": "omniglot", "label": "y", "by_classes": {}}])
    omniglot = [_result(0.5, benchmark="omniglot"), _result(0.7, benchmark="omniglot")]
    assert select.select(omniglot, ["a", "b"]) == "b"  # accuracy: higher wins
    omniglot[0]["by_classes"]["97"] = {"held_out_accuracy": {"mean": 1.0}}  # a count the other lacks is ignored
    assert select.select(omniglot, ["a", "b"]) == "b"
    # a repeated label is one candidate's seeds: b's one lucky seed does not beat a's better mean
    assert select.select([_result(0.5), _result(0.5), _result(0.2), _result(1.0)], ["a", "a", "b", "b"]) == "a"
    paths = []
    for i, value in enumerate([0.9, 0.4]):
        (tmp_path / f"r{i}").mkdir()
        (tmp_path / f"r{i}" / "results.json").write_text(json.dumps(_result(value)))
        paths.append(str(tmp_path / f"r{i}"))
    assert select.main(select.get_args_parser().parse_args(paths + ["--labels", "p", "q"])) == "q"


def test_an_exported_split_is_what_the_plain_evaluation_uses(tmp_path, capsys):
    def train(method):
        return oml_regression.main(oml_regression.get_args_parser().parse_args(
            ["--preset", "quick", "--width", "8", "--eval-runs", "0", "--no-progress", "--steps", "2",
             "--method", method, "--results-dir", str(tmp_path / method)]))

    def evaluate_(model, *flags):
        run = evaluate_regression.main(evaluate_regression.get_args_parser().parse_args(
            ["--model", str(model), "--runs", "2", "--test-samples", "20", "--update_step", "2", "--lr", "0.001",
             "--results-dir", str(tmp_path / "eval"), *flags]))
        return json.loads((run / "results.json").read_text()), json.loads((run / "config.json").read_text())

    pretraining = train("pretraining")
    out = tmp_path / "pre_rln3.pt"
    export.main(export.get_args_parser().parse_args([str(pretraining), str(out), "--rln", "3"]))
    assert "evaluated at rln 3" in capsys.readouterr().out
    plain, config = evaluate_(out)
    explicit, _ = evaluate_(pretraining, "--rln", "3")
    assert config["evaluated"]["rln"] == 3 and plain["final_mse"] == explicit["final_mse"]
    assert plain["model"]["evaluation_defaults"] == {"rln": 3}
    _, config = evaluate_(out, "--rln", "5")
    assert config["evaluated"]["rln"] == 5
    with pytest.raises(UserError, match="part of what it learned"):
        export.main(export.get_args_parser().parse_args([str(train("oml")), str(tmp_path / "oml.pt"), "--rln", "3"]))
    with pytest.raises(UserError, match=r"--rln must lie in 1\.\.5"):
        export.main(export.get_args_parser().parse_args([str(pretraining), str(tmp_path / "bad.pt"), "--rln", "6"]))


def test_a_rate_that_diverged_in_any_search_run_is_ruled_out_in_every_run():
    learned = np.ones((3, 3), dtype=bool)
    final = np.array([[0.2, 0.5, 0.9], [0.2, 0.5, 0.9], [np.inf, 0.5, 0.9]])  # 0.2 wins twice, diverges once
    eligible = eligible_scores(final, learned)
    assert eligible[:, 0].tolist() == [np.inf] * 3 and eligible[:, 1].tolist() == [0.5] * 3
    # a run where the only rates that learned function 1 diverged elsewhere keeps those rates
    learned = np.array([[True, False], [True, True]])
    final = np.array([[0.3, 0.1], [np.inf, 0.2]])
    assert eligible_scores(final, learned)[0].tolist() == [0.3, np.inf]
