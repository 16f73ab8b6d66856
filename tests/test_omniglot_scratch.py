"""Scratch (the 2019 `--scratch`): a fresh network per run, all of it trained online, on generated data."""
import json

import numpy as np
import pytest
import torch

import evaluate_omniglot
from datasets.omniglot import load_omniglot
from experiment.evaluation.features import feature_bank
from experiment.evaluation.omniglot import Protocol, evaluate, run_specs
from experiment.evaluation.scratch import EvalImages, ScratchLearner, evaluate_scratch
from experiment.omniglot_presets import build_model
from tests.omniglot_fixtures import tiny_network_and_tree
from utils.cli import run_main

TINY = {"image_size": 12, "channels": 4, "strides": (2, 2), "n_outputs": 16, "n_classes": 10, "class_split": 5}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """8 evaluation classes of 12px images, their uint8 bank, and a tiny checkpoint."""
    root = tmp_path_factory.mktemp("omni_scratch")
    data, cfg, net, ckpt = tiny_network_and_tree(root, TINY)
    split = load_omniglot(data, "evaluation", cfg.image_size, cache_dir=root / "cache", progress=False)
    return {"data": data, "cfg": cfg, "net": net, "ckpt": ckpt, "split": split, "images": EvalImages.from_split(split),
            "cache": root / "cache"}


def _cli(tiny, tmp_path, *argv):
    base = ["--path", str(tiny["data"]), "--results-dir", str(tmp_path), "--cache-dir", str(tiny["cache"]),
            "--no-progress", "--nonstandard-data"]
    return run_main(evaluate_omniglot.main, evaluate_omniglot.get_args_parser(), [*argv, *base])


def test_scratch_trains_every_parameter_from_a_fresh_start(tiny):
    net = tiny["net"]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    learner = ScratchLearner(net, Protocol())
    specs = run_specs(1, "eval", 4, 2, tiny["images"].n_classes, False, 1)
    finals = learner.train(tiny["images"].train, specs, 3e-3)
    names = [k for k, _ in net.named_parameters()]
    assert any(k.startswith("rln.") for k in names) and any(k.startswith("pln.") for k in names)
    for spec, final in zip(specs, finals):
        start = learner.init(spec.init_seed)
        assert len(start) == len(final) == len(names)
        changed = [k for k, a, b in zip(names, start, final) if not torch.equal(a, b)]
        assert changed == names  # every conv of the RLN and every PLN tensor moved
        # a fresh network: not the template's weights (biases start at zero in both, weights differ)
        assert not any(torch.equal(a, p) for a, p in zip(start[::2], list(net.parameters())[::2]))
    # the template is only an architecture: it is left as it was
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    # and the run's seed alone fixes its initialisation
    assert all(torch.equal(a, b) for a, b in zip(learner.init(specs[0].init_seed), learner.init(specs[0].init_seed)))
    assert not torch.equal(learner.init(specs[0].init_seed)[0], learner.init(specs[1].init_seed)[0])


def test_scratch_is_deterministic_and_run_i_does_not_depend_on_runs(tiny):
    images = tiny["images"]
    three = evaluate_scratch(tiny["net"], images, (4,), Protocol(runs=3, search_runs=2, seed=7))["by_classes"]["4"]
    again = evaluate_scratch(tiny["net"], images, (4,), Protocol(runs=3, search_runs=2, seed=7))["by_classes"]["4"]
    assert three == again
    two = evaluate_scratch(tiny["net"], images, (4,), Protocol(runs=2, search_runs=2, seed=7))["by_classes"]["4"]
    assert two["lr_search"] == three["lr_search"]
    for key in ("trajectory_accuracy", "held_out_accuracy", "classes"):
        assert two["runs"][key] == three["runs"][key][:2]
    # bit for bit in the weights too, from separate learners (no state carried between calls)
    n_pool = images.n_classes
    a = ScratchLearner(tiny["net"], Protocol()).train(images.train, run_specs(7, "eval", 4, 3, n_pool, False, 1), 1e-3)
    b = ScratchLearner(tiny["net"], Protocol()).train(images.train, run_specs(7, "eval", 4, 2, n_pool, False, 1), 1e-3)
    assert all(torch.equal(x, y) for run_a, run_b in zip(a, b) for x, y in zip(run_a, run_b))
    assert not torch.equal(a[0][0], a[1][0])
    # run for run the same class sets (reported and search) as the frozen-RLN evaluation of any checkpoint
    bank = feature_bank(tiny["net"].rln, tiny["split"], cache_dir=False)
    frozen = evaluate(tiny["net"].pln, bank, (4,), Protocol(runs=3, search_runs=2, seed=7))["by_classes"]["4"]
    assert frozen["runs"]["classes"] == three["runs"]["classes"]
    assert frozen["lr_search"]["classes"] == three["lr_search"]["classes"]


def test_scratch_search_never_sees_held_out_images(tiny):
    images = tiny["images"]
    garbage = torch.from_numpy(np.random.default_rng(0).integers(0, 256, tuple(images.test.shape), dtype=np.uint8))
    poisoned_bank = EvalImages(images.train, garbage)
    protocol = Protocol(runs=2, search_runs=3, seed=5)
    clean = evaluate_scratch(tiny["net"], images, (4,), protocol)["by_classes"]["4"]
    poisoned = evaluate_scratch(tiny["net"], poisoned_bank, (4,), protocol)["by_classes"]["4"]
    assert len(np.unique(clean["lr_search"]["scores"])) > 3  # the scores tell the rates apart: a real check
    assert clean["lr_search"] == poisoned["lr_search"] and clean["lr"] == poisoned["lr"]
    assert clean["runs"]["trajectory_accuracy"] == poisoned["runs"]["trajectory_accuracy"]
    # the poison does reach what is reported as held-out (at a rate where the network still tells images apart)
    fixed = Protocol(runs=3, lr=1e-3, seed=5)
    clean, poisoned = (evaluate_scratch(tiny["net"], b, (4,), fixed)["by_classes"]["4"]["runs"]
                       for b in (images, poisoned_bank))
    assert clean["trajectory_accuracy"] == poisoned["trajectory_accuracy"]
    assert clean["held_out_accuracy"] != poisoned["held_out_accuracy"]


def test_scratch_end_to_end_uses_only_the_checkpoints_architecture(tiny, tmp_path, capsys):
    argv = ("--scratch", "--schedule", "2:4", "--runs", "2", "--search-runs", "2")
    run_dir = _cli(tiny, tmp_path / "a", "--model", str(tiny["ckpt"]), *argv)
    out = capsys.readouterr().out
    assert "only the architecture" in out and "Scratch (cpu)" in out
    result = json.loads((run_dir / "results.json").read_text())
    p = result["protocol"]
    assert (p["name"], p["learner"], p["reset"]) == ("2020", "scratch", None)
    assert "whole network" in p["trained"] and "RLN" in p["trained"]
    assert p["n_parameters"] == sum(t.numel() for t in tiny["net"].parameters())
    assert result["label"] == "Scratch (cpu)" and result["model"]["method"] == "scratch"
    assert result["model"]["architecture_from"]["checkpoint"] == "oml.pt"
    # other weights, same architecture: the same numbers (the checkpoint's weights are never used)
    cfg = tiny["cfg"]
    torch.manual_seed(123)
    other = build_model(cfg)
    direct = evaluate_scratch(other, tiny["images"], (2, 4), Protocol(runs=2, search_runs=2))
    assert direct["by_classes"] == result["by_classes"]
    # the 2019 protocol gives Scratch the same numbers, and says so
    run_2019 = _cli(tiny, tmp_path / "b", "--model", str(tiny["ckpt"]), "--protocol", "2019", *argv)
    assert "coincide" in capsys.readouterr().out
    result_2019 = json.loads((run_2019 / "results.json").read_text())
    assert result_2019["protocol"]["name"] == "2019" and result_2019["by_classes"] == result["by_classes"]
    assert any("200 evaluation classes" in s for s in result_2019["protocol"]["not_copied"])


def test_scratch_of_a_preset_and_the_frozen_random_rln_are_labelled_apart(tiny, tmp_path, capsys):
    # no --model: the cpu preset's architecture (28px images), a fixed rate keeps this short
    argv = ("--schedule", "2", "--runs", "1", "--lr", "1e-3")
    scratch = json.loads((_cli(tiny, tmp_path / "s", "--scratch", *argv) / "results.json").read_text())
    frozen = json.loads((_cli(tiny, tmp_path / "f", *argv) / "results.json").read_text())
    assert scratch["label"] == "Scratch (cpu)" and scratch["model"]["architecture_from"] == "preset cpu"
    assert scratch["protocol"]["learner"] == "scratch" and scratch["protocol"]["n_parameters"] > 100_000
    assert frozen["label"] == "Frozen random RLN (cpu)" and frozen["protocol"]["learner"] == "frozen_rln"
    assert "PLN only" in frozen["protocol"]["trained"] and frozen["model"]["method"] == "random"


@pytest.mark.parametrize("flags, message", [(("--reset", "last"), "--scratch keeps nothing"),
                                            (("--engine", "c"), "--engine c"),
                                            (("--run-batch", "2"), "--run-batch")])
def test_scratch_rejects_flags_that_do_not_apply(tiny, tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        _cli(tiny, tmp_path, "--scratch", "--model", str(tiny["ckpt"]), "--schedule", "2", *flags)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
