"""Sine baselines: the 2019 recipe, their resume (head bank, schedule), the RLN/PLN re-split at
evaluation (the choice between candidates: tests/test_sine_selection.py)."""
import json

import numpy as np
import pytest
import torch

import evaluate_regression
import oml_regression
from datasets.sine import SineFamily, sample_iid
from experiment.sine_presets import SINE_PRESETS, SineConfig
from experiment.training.sine import IIDTraining
from model.networks import build_sine_net, resplit_sine_net
from utils.errors import UserError

SMALL_2019 = ["--preset", "mrcl2019", "--width", "8", "--eval-runs", "0", "--no-progress", "--log-every", "2", "--save-every", "4"]


def test_grouped_batches_are_one_heads_functions_in_turn():
    family = SineFamily.draw(40, np.random.default_rng(0))
    for group in range(4):
        x, y, heads = sample_iid(family, np.random.default_rng(1), n_functions=10, samples=3, capacity=10, group=group)
        assert set(heads) == {group}
        slots = x[:, :10].argmax(1)
        assert sorted(set(slots)) == list(range(10))  # slot = id % 10, all ten functions present
        ids = group * 10 + slots
        np.testing.assert_allclose(y[:, 0], family(ids, x[:, -1].astype(np.float64)), atol=1e-5)


def test_the_2019_baseline_recipe_is_what_trains():
    cfg = SineConfig(**{**SINE_PRESETS["mrcl2019"], "preset": "mrcl2019", "method": "pretraining", "width": 8,
                        "iid_lr_milestones": (2, 4)})
    task = IIDTraining(cfg, "cpu")
    seen = []
    original = sample_iid

    def spy(*args, **kwargs):
        seen.append(kwargs["group"])
        return original(*args, **kwargs)

    import experiment.training.sine
    experiment.training.sine.sample_iid, saved = spy, experiment.training.sine.sample_iid
    try:
        rates = []
        for _ in range(5):
            task.step()
            rates.append(task.optimizer.param_groups[0]["lr"])
    finally:
        experiment.training.sine.sample_iid = saved
    assert seen == [0, 1, 2, 3, 4] and task.n_heads == 40  # 400 functions / 10 slots, heads in turn
    assert rates == pytest.approx([1e-4, 2e-5, 2e-5, 4e-6, 4e-6])  # MultiStepLR x 0.2 at updates 2 and 4
    assert cfg.iid_samples == 32 and cfg.iid_grouped


@pytest.mark.parametrize("method", ["pretraining", "srnn"])
def test_killed_baseline_resumes_to_the_same_weights_and_heads(tmp_path, monkeypatch, method):
    def train(folder, steps):
        args = oml_regression.get_args_parser().parse_args(
            SMALL_2019 + ["--method", method, "--steps", str(steps), "--results-dir", str(folder)])
        return oml_regression.main(args)

    whole = train(tmp_path / "whole", 10)
    calls = {"n": 0}
    original = IIDTraining.step

    def dying(self):
        calls["n"] += 1
        if calls["n"] == 7:  # killed between the checkpoints at 4 and 8
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(IIDTraining, "step", dying)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "killed", 10)
    monkeypatch.setattr(IIDTraining, "step", original)
    killed = next((tmp_path / "killed").glob("*/sine/*"))
    at_kill = torch.load(killed / "checkpoint.pt", weights_only=True)
    assert at_kill["step"] == 4 and at_kill["training"]["updates"] == 4  # it died after the checkpoint at 4
    oml_regression.main(oml_regression.get_args_parser().parse_args(
        ["--resume", str(killed), "--eval-runs", "0", "--no-progress"]))
    a, b = (torch.load(run / "checkpoint.pt", weights_only=True) for run in (whole, killed))
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    heads_a, heads_b = a["training"]["heads"], b["training"]["heads"]
    assert heads_a.keys() == heads_b.keys() == {"weight", "bias"}
    assert all(torch.equal(heads_a[k], heads_b[k]) for k in heads_a)
    assert not torch.equal(heads_a["weight"], at_kill["training"]["heads"]["weight"])  # the heads trained after step 4
    assert a["training"]["updates"] == b["training"]["updates"] == 10
    # everything else as well: optimiser moments, schedule, data stream (byte-for-byte)
    assert (whole / "checkpoint.pt").read_bytes() == (killed / "checkpoint.pt").read_bytes()
    assert (whole / "metrics.jsonl").read_bytes() == (killed / "metrics.jsonl").read_bytes()


@pytest.mark.parametrize("arch, rln, new", [("mrcl2019", 6, 4), ("mrcl2019", 6, 8), ("oml2020", 5, 3)])
def test_resplit_moves_the_boundary_and_keeps_the_function(arch, rln, new):
    torch.manual_seed(0)
    net = build_sine_net(arch, 12, 10, rln)
    moved = resplit_sine_net(net, arch, 12, 10, new)
    x = torch.randn(7, 11)
    torch.testing.assert_close(moved(x), net(x))
    linears = lambda m: sum(isinstance(layer, torch.nn.Linear) for layer in m.modules())
    assert linears(moved.rln) == new and linears(moved.rln) + linears(moved.pln) == linears(net)


def test_evaluation_resplits_a_baseline_but_not_an_oml_checkpoint(tmp_path):
    def train(method):
        return oml_regression.main(oml_regression.get_args_parser().parse_args(
            SMALL_2019 + ["--method", method, "--steps", "2", "--results-dir", str(tmp_path / method)]))

    common = ["--runs", "2", "--test-samples", "20", "--eval-steps", "2", "--lr", "0.001", "--results-dir", str(tmp_path / "eval")]
    run = evaluate_regression.main(evaluate_regression.get_args_parser().parse_args(
        ["--model", str(train("pretraining")), "--rln", "8"] + common))
    result = json.loads((run / "results.json").read_text())
    assert json.loads((run / "config.json").read_text())["evaluated"]["rln"] == 8
    assert np.isfinite(result["final_mse"]["mean"])
    with pytest.raises(UserError, match="--rln 8 does not match"):
        evaluate_regression.main(evaluate_regression.get_args_parser().parse_args(["--model", str(train("oml")), "--rln", "8"] + common))


def test_srnn_step_adds_the_set_sparsity_penalty_of_its_batch():
    cfg = SineConfig(**{**SINE_PRESETS["oml2020"], "preset": "oml2020", "method": "srnn", "width": 16, "srnn_beta": 0.05})
    task = IIDTraining(cfg, "cpu")
    state = task.rng.bit_generator.state
    x, _, _ = sample_iid(task.functions, task.rng, n_functions=cfg.iid_functions, samples=cfg.iid_samples,
                         capacity=cfg.capacity, group=None)
    task.rng.bit_generator.state = state  # step() draws the same batch
    with torch.no_grad():
        units = task.model.rln(torch.as_tensor(x)).mean(0)
    r = cfg.srnn_beta / (units + 1e-4)
    by_hand = torch.where(units > cfg.srnn_beta, r - torch.log(r) - 1, torch.zeros_like(r)).mean().item()
    assert by_hand > 0.01
    metrics = task.step()
    assert metrics["loss"] == pytest.approx(metrics["mse"] + cfg.srnn_weight * by_hand, rel=1e-5)
