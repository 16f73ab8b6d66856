"""End-to-end checks of the incremental-sine scripts on tiny settings (in-process)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import evaluate_regression
import oml_regression
import plot_results
from experiment.checkpoint import load_checkpoint
from experiment.evaluation.sine import evaluate, make_protocol
from experiment.sine_presets import build_model, config_from_checkpoint
from tests.conftest import REPO, die_at_step
from utils.errors import UserError

TINY = ["--preset", "oml2020", "--width", "16", "--steps", "30", "--eval-runs", "3", "--eval-test-samples", "100", "--eval-steps", "4", "--no-progress",
        "--log-every", "5", "--save-every", "10"]


def train(tmp_path, *extra):
    args = oml_regression.get_args_parser().parse_args(TINY + ["--results-dir", str(tmp_path)] + list(extra))
    return oml_regression.main(args)


def test_training_writes_a_complete_run_folder(tmp_path):
    run = train(tmp_path)
    for name in ("config.json", "metadata.json", "metrics.jsonl", "results.json", "results_untrained.json",
                 "checkpoint.pt", "mse.png"):
        assert (run / name).is_file(), name
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    assert payload["benchmark"] == "sine" and payload["step"] == 30
    results = json.loads((run / "results.json").read_text())
    assert len(results["curve"]["mean"]) == 10 and len(results["runs"]["curve"]) == 3
    assert all(lo <= m <= hi for lo, m, hi in zip(results["curve"]["ci_low"], results["curve"]["mean"], results["curve"]["ci_high"]))
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20, 25, 30]


def test_same_seed_gives_byte_identical_results(tmp_path):
    first, second = train(tmp_path / "a"), train(tmp_path / "b")
    for name in ("results.json", "results_untrained.json", "metrics.jsonl", "config.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    other = train(tmp_path / "c", "--seed", "7")
    assert (other / "results.json").read_bytes() != (first / "results.json").read_bytes()


def test_killed_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    whole = train(tmp_path / "whole", "--eval-runs", "0")
    from experiment.training import sine
    revive = die_at_step(monkeypatch, sine.OMLTraining, 17)  # between the checkpoints at 10 and 20
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "killed", "--eval-runs", "0")
    revive()
    killed = next((tmp_path / "killed").glob("*/sine/*"))
    assert torch.load(killed / "checkpoint.pt", weights_only=True)["step"] == 10
    args = oml_regression.get_args_parser().parse_args(["--resume", str(killed), "--eval-runs", "0", "--no-progress"])
    oml_regression.main(args)
    a = torch.load(whole / "checkpoint.pt", weights_only=True)["state_dict"]
    b = torch.load(killed / "checkpoint.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (whole / "metrics.jsonl").read_bytes() == (killed / "metrics.jsonl").read_bytes()


def test_baselines_train_and_evaluate_like_oml(tmp_path):
    weights, untrained = {}, []
    # beta 0.05: in this short run no unit's mean activity reaches the presets' 0.8, so at 0.8 the penalty is zero
    for method, extra in (("pretraining", ()), ("srnn", ("--srnn-beta", "0.05"))):
        run = train(tmp_path / method, "--method", method, *extra)
        payload = load_checkpoint(run, benchmark="sine")
        assert payload["method"] == method
        config = config_from_checkpoint(payload)
        model = build_model(config)
        model.load_state_dict(payload["state_dict"])  # same shape as an OML network
        # the checkpoint's output layer is head 0 of the head bank, exactly
        heads, last = payload["training"]["heads"], len(model.pln) - 1
        assert torch.equal(payload["state_dict"][f"pln.{last}.weight"], heads["weight"][:1])
        assert torch.equal(payload["state_dict"][f"pln.{last}.bias"], heads["bias"][:1])
        # results.json holds the evaluation of that checkpoint
        result = json.loads((run / "results.json").read_text())
        assert result["model"]["method"] == method
        direct = evaluate(model, config, make_protocol("paper", config, runs=3, test_samples=100, batches_per_function=4))
        assert result["runs"] == direct["runs"] and result["protocol"]["lr"] == direct["protocol"]["lr"]
        weights[method] = payload["state_dict"]
        untrained.append(json.loads((run / "results_untrained.json").read_text())["runs"])
    # the same seed and batches: only the sparsity penalty tells SR-NN from pretraining
    assert not torch.equal(weights["srnn"]["rln.0.weight"], weights["pretraining"]["rln.0.weight"])
    assert untrained[0] == untrained[1]  # and both are compared with the same untrained network


def test_batched_evaluation_equals_the_loop(tmp_path):
    payload = load_checkpoint(train(tmp_path, "--eval-runs", "0"), benchmark="sine")
    config = config_from_checkpoint(payload)
    model = build_model(config)
    model.load_state_dict(payload["state_dict"])
    for kwargs in ({}, {"iid": True, "epochs": 2}, {"reset": True}):
        common = dict(runs=4, seed=5, test_samples=50, batches_per_function=5, search_runs=2, **kwargs)
        looped = evaluate(model, config, make_protocol("paper", config, run_batch=1, **common))
        batched = evaluate(model, config, make_protocol("paper", config, run_batch=4, **common))
        assert looped["protocol"]["lr_search"]["best_per_search_run"] == batched["protocol"]["lr_search"]["best_per_search_run"]
        torch.testing.assert_close(torch.tensor(looped["runs"]["curve"]), torch.tensor(batched["runs"]["curve"]), rtol=1e-4, atol=1e-6)


def _eval_script(*argv):
    run = evaluate_regression.main(evaluate_regression.get_args_parser().parse_args([*argv, "--no-progress"]))
    return run, json.loads((run / "results.json").read_text())


def test_evaluation_script_evaluates_the_checkpoint_it_is_given(tmp_path):
    run = train(tmp_path, "--eval-runs", "0")
    seq_dir, seq = _eval_script("--model", str(run), "--runs", "3", "--test-samples", "50", "--eval-steps", "4",
                                "--search-runs", "2", "--results-dir", str(tmp_path / "eval"))
    # the same numbers as the library on the run's checkpoint, with the rate searched
    payload = load_checkpoint(run, benchmark="sine")
    config = config_from_checkpoint(payload)
    model = build_model(config)
    model.load_state_dict(payload["state_dict"])
    direct = evaluate(model, config, make_protocol("paper", config, runs=3, test_samples=50, batches_per_function=4,
                                                   search_runs=2))
    assert seq["runs"] == direct["runs"] and seq["protocol"]["lr"] == direct["protocol"]["lr"]
    assert seq["protocol"]["lr_searched"]
    assert seq["final_mse"]["mean"] == pytest.approx(np.mean([c[-1] for c in seq["runs"]["curve"]]), abs=1e-7)
    # no --model: an untrained network of the preset's shape, seeded by the preset's seed
    scratch_dir, scratch = _eval_script("--preset", "oml2020", "--width", "16", "--runs", "3", "--test-samples", "50",
                                        "--eval-steps", "4", "--lr", "0.003", "--results-dir", str(tmp_path / "eval"))
    assert scratch["model"]["method"] == "random" and scratch["protocol"]["lr"] == 0.003
    torch.manual_seed(config.seed)
    untrained = evaluate(build_model(config), config, make_protocol("paper", config, runs=3, test_samples=50,
                                                                     batches_per_function=4, lr=0.003))
    assert scratch["runs"] == untrained["runs"]
    out = plot_results.main(plot_results.get_args_parser().parse_args(
        [str(seq_dir), str(scratch_dir), "--labels", "OML", "Scratch", "--out", str(tmp_path / "fig.png")]))
    assert Path(out).stat().st_size > 10_000


def test_the_oracle_beats_one_sequential_pass_on_the_same_runs(tmp_path):
    """On the shipped quick OML model: the Oracle (i.i.d., 3 epochs over all functions so far) ends
    lower than the one-pass sequential protocol on every run, and forgets function 1 less."""
    common = ["--model", str(REPO / "trained_models" / "sine_quick_oml.pt"), "--runs", "3", "--test-samples", "50",
              "--eval-steps", "10", "--lr", "0.003", "--results-dir", str(tmp_path)]
    _, seq = _eval_script(*common)
    _, oracle = _eval_script(*common, "--iid", "--epochs", "3")
    assert (oracle["protocol"]["iid"], oracle["protocol"]["epochs"]) == (True, 3)
    assert (seq["protocol"]["iid"], seq["protocol"]["epochs"]) == (False, 1)
    final = lambda r: [curve[-1] for curve in r["runs"]["curve"]]
    # measured: 0.18-0.25 against 0.74-1.05
    assert all(o < 0.6 * s for o, s in zip(final(oracle), final(seq))), (final(oracle), final(seq))
    first = lambda r: [per_function[0] for per_function in r["runs"]["per_function"]]
    assert sum(first(oracle)) < 0.6 * sum(first(seq)), (first(oracle), first(seq))
    assert oracle["label"].endswith("iid x3") and not seq["label"].endswith("iid x3")


def _cli(script, *args, cwd=REPO):
    return subprocess.run([sys.executable, script, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("make_bad, message", [
    (lambda tmp: ["--model", str(tmp / "missing.pt")], "no checkpoint at"),
    (lambda tmp: ["--model", str(_write(tmp / "junk.pt", b"not a checkpoint"))], "not a checkpoint"),
    (lambda tmp: ["--model", str(_fake_checkpoint(tmp, "omniglot"))], "is a omniglot checkpoint"),
])
def test_bad_model_is_a_one_line_error(tmp_path, make_bad, message):
    result = _cli("evaluate_regression.py", *make_bad(tmp_path), "--results-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr


def test_inconsistent_flags_are_errors(tmp_path):
    run = train(tmp_path, "--eval-runs", "0")
    with pytest.raises(UserError, match="--capacity 10 does not match"):
        evaluate_regression.main(evaluate_regression.get_args_parser().parse_args(["--model", str(run), "--capacity", "10"]))
    with pytest.raises(UserError, match="needs at least as many one-hot slots"):
        train(tmp_path, "--tasks", "60")
    result = _cli("oml_regression.py", "--preset", "nope", "--results-dir", str(tmp_path))
    assert result.returncode == 2 and "unknown preset" in result.stderr


def test_diverging_loss_stops_with_an_error(tmp_path):
    result = _cli("oml_regression.py", *TINY, "--update_lr", "1e6", "--inner-clip", "0", "--results-dir", str(tmp_path))
    assert result.returncode == 2 and "training diverged" in result.stderr


def test_seed_readme_commands_select_the_2019_configuration(tmp_path):
    args = oml_regression.get_args_parser().parse_args(
        ["--update_step", "40", "--meta_lr", "0.0001", "--update_lr", "0.003", "--tasks", "10", "--capacity", "10", "--width", "300", "--rln", "6"])
    config = oml_regression._config(args)
    assert (config.preset, config.arch, config.first_order, config.batch_size, config.slot_mode) == ("mrcl2019", "mrcl2019", True, 32, "position")
    assert config.lr_milestones == (1500, 2500, 3500) and config.inner_clip is None
    # The same command runs as written (only shortened by --steps and --eval-runs, to stay fast).
    run = oml_regression.main(oml_regression.get_args_parser().parse_args(
        "--update_step 40 --meta_lr 0.0001 --update_lr 0.003 --tasks 10 --capacity 10 --width 300 --rln 6 "
        f"--steps 2 --eval-runs 0 --results-dir {tmp_path}".split()))
    assert load_checkpoint(run, benchmark="sine")["step"] == 2


def test_seed_readme_evaluation_command_runs_on_the_shipped_2019_model(tmp_path):
    # As written, with --runs 50 shortened to 3, fewer held-out samples, and the original's fixed
    # rate (0.003) instead of the search, to stay fast.
    result = _cli("evaluate_regression.py", "--model", "trained_models/sine_mrcl2019_oml.pt", "--name", "sine_test_set",
                  "--rln", "6", "--tasks", "10", "--capacity", "10", "--runs", "50", "--results-dir", str(tmp_path),
                  "--runs", "3", "--test-samples", "100", "--lr", "0.003")
    assert result.returncode == 0, result.stderr
    assert "3 runs" in result.stdout
    assert list(tmp_path.glob("*/sine_eval/sine_test_set_1/results.json"))


def _write(path, data):
    path.write_bytes(data)
    return path


def _fake_checkpoint(tmp, benchmark):
    path = tmp / "other.pt"
    torch.save({"format": 1, "benchmark": benchmark, "method": "oml", "config": {}, "state_dict": {}, "step": 0}, path)
    return path


def test_online_blow_up_is_reported_as_divergence_not_a_number(tmp_path):
    payload = load_checkpoint(train(tmp_path, "--eval-runs", "0"), benchmark="sine")
    config = config_from_checkpoint(payload)
    model = build_model(config)
    model.load_state_dict(payload["state_dict"])
    with pytest.raises(UserError, match="online learning diverged"):
        evaluate(model, config, make_protocol("paper", config, runs=2, seed=5, lr=10.0, test_samples=20))
