"""The 2019 and 2020 evaluation protocols on frozen RLNs (linear and 2-layer PLNs), on generated data."""
import json

import numpy as np
import pytest
import torch

import evaluate_omniglot
import oml_omniglot
from datasets.omniglot import load_omniglot
from experiment.checkpoint import load_checkpoint, save_checkpoint
from experiment.config import as_dict, resolve
from experiment.evaluation.features import FeatureBank, feature_bank
from experiment.evaluation.omniglot import Protocol, evaluate, run_specs
from experiment.evaluation.omniglot_protocols import BUNDLES
from experiment.evaluation.online_learner import OnlineLearner
from experiment.omniglot_presets import OMNIGLOT_PRESETS, OmniglotConfig, build_model, config_from_checkpoint
from tests.omniglot_fixtures import write_fake_both
from utils.cli import run_main

TINY = {"image_size": 12, "channels": 4, "strides": (2, 2), "n_outputs": 16, "n_classes": 10, "class_split": 5}


def _tiny_net(cfg, seed):
    torch.manual_seed(seed)
    net = build_model(cfg)
    with torch.no_grad():  # a meta-learned PLN has non-zero biases: make "kept" distinguishable from "reset"
        for layer in net.pln:
            if isinstance(layer, torch.nn.Linear):
                layer.bias.normal_(0, 0.1)
    return net


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """8 evaluation classes of 12px images; a linear-PLN and a 2-layer-PLN (2019) checkpoint and features."""
    root = tmp_path_factory.mktemp("omni_protocols")
    data = write_fake_both(root / "data", n_alphabets=2, chars_per_alphabet=4, size=24)
    out = {"data": data, "cache": root / "cache"}
    for name, hidden in (("linear", 0), ("two_layer", 8)):
        cfg = resolve(OmniglotConfig, OMNIGLOT_PRESETS, "cpu", {**TINY, "pln_hidden": hidden})
        net = _tiny_net(cfg, seed=hidden)
        save_checkpoint(root / f"{name}.pt", benchmark="omniglot", config=as_dict(cfg), model=net, step=0)
        split = load_omniglot(data, "evaluation", cfg.image_size, cache_dir=root / "cache", progress=False)
        out[name] = {"net": net, "ckpt": root / f"{name}.pt", "split": split,
                     "bank": feature_bank(net.rln, split, cache_dir=False)}
    return out


def _cli(tiny, tmp_path, *argv):
    base = ["--path", str(tiny["data"]), "--results-dir", str(tmp_path), "--cache-dir", str(tiny["cache"]),
            "--no-progress", "--nonstandard-data"]
    return run_main(evaluate_omniglot.main, evaluate_omniglot.get_args_parser(), [*argv, *base])


def _protocol(name, **kw):
    return Protocol(name=name, reset=BUNDLES[name].reset, **kw)


@pytest.mark.parametrize("name", ["2020", "2019"])
def test_frozen_rln_learners_change_only_the_pln(tiny, name):
    net, bank = tiny["two_layer"]["net"], tiny["two_layer"]["bank"]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    learner = OnlineLearner(net.pln, _protocol(name))
    specs = run_specs(2, "eval", 4, 2, bank.n_classes, False, 1)
    finals = learner.train(bank.train, specs, 3e-3)
    ckpt = [p.detach() for p in net.pln.parameters()]  # hidden W, b; output W, b
    for spec, final in zip(specs, finals):
        start = learner.init(spec.init_seed)
        if name == "2019":  # hidden layer from the checkpoint, output layer re-initialised (zero bias)
            assert torch.equal(start[0], ckpt[0]) and torch.equal(start[1], ckpt[1])
        else:                # every PLN layer re-initialised
            assert not torch.equal(start[0], ckpt[0]) and not start[1].any()
        assert not torch.equal(start[2], ckpt[2]) and not start[3].any()
        # every PLN tensor is trained, to finite values (NaN would also differ from the start)
        assert all(torch.isfinite(b).all() and not torch.equal(a, b) for a, b in zip(start, final, strict=True))
    evaluate(net.pln, bank, (4,), _protocol(name, runs=2, search_runs=2))
    # the network (RLN and the checkpoint's PLN) is bit-identical afterwards, and so are its features
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    again = feature_bank(net.rln, tiny["two_layer"]["split"], cache_dir=False)
    assert torch.equal(again.train, bank.train) and torch.equal(again.test, bank.test)


@pytest.mark.parametrize("pln", ["linear", "two_layer"])
def test_lr_search_never_sees_held_out_features(tiny, pln):
    net, bank = tiny[pln]["net"], tiny[pln]["bank"]
    protocol = _protocol("2019", runs=2, search_runs=3, seed=4)
    clean = evaluate(net.pln, bank, (4,), protocol)["by_classes"]["4"]
    nan_bank = FeatureBank(bank.train, torch.full_like(bank.test, float("nan")), bank.key)
    poisoned = evaluate(net.pln, nan_bank, (4,), protocol)["by_classes"]["4"]
    assert len(np.unique(clean["lr_search"]["scores"])) > 3  # informative scores, so a leak would show
    assert clean["lr_search"] == poisoned["lr_search"] and clean["lr"] == poisoned["lr"]
    assert clean["runs"]["trajectory_accuracy"] == poisoned["runs"]["trajectory_accuracy"]
    assert clean["runs"]["held_out_accuracy"] != poisoned["runs"]["held_out_accuracy"]  # NaN features do reach the report


def test_the_protocols_differ_exactly_by_the_reset(tiny):
    def numbers(pln, name, **kw):
        return evaluate(tiny[pln]["net"].pln, tiny[pln]["bank"], (2, 4), _protocol(name, runs=3, search_runs=2, **kw))
    two_2019, two_2020 = numbers("two_layer", "2019"), numbers("two_layer", "2020")
    assert two_2019["by_classes"] != two_2020["by_classes"]
    assert (two_2019["protocol"]["reset"], two_2020["protocol"]["reset"]) == ("last", "all")
    # 2019 with the reset overridden to "all" is the 2020 protocol, number for number
    overridden = evaluate(tiny["two_layer"]["net"].pln, tiny["two_layer"]["bank"], (2, 4),
                          Protocol(name="2019", reset="all", runs=3, search_runs=2))
    assert overridden["by_classes"] == two_2020["by_classes"]
    assert overridden["protocol"]["overrides"] == {"reset": "all"}
    # a linear PLN: the two coincide, and the record says so
    lin_2019, lin_2020 = numbers("linear", "2019"), numbers("linear", "2020")
    assert lin_2019["by_classes"] == lin_2020["by_classes"]
    assert "coincides_with" in lin_2019["protocol"] and "coincides_with" not in two_2019["protocol"]


def test_protocol_2019_end_to_end_on_a_mrcl2019_checkpoint(tiny, tmp_path, capsys):
    """A checkpoint written by `oml_omniglot.py --preset mrcl2019` (2-layer PLN, tiny sizes, 2 steps)."""
    meta = oml_omniglot.main(oml_omniglot.get_args_parser().parse_args(
        ["--preset", "mrcl2019", "--path", str(tiny["data"]), "--cache-dir", str(tiny["cache"]),
         "--results-dir", str(tmp_path / "train"), "--steps", "2", "--n-classes", "8", "--image-size", "12",
         "--channels", "4", "--strides", "2", "2", "--pln-hidden", "8", "--no-progress", "--nonstandard-data"]))
    argv = ("--model", str(meta), "--schedule", "2:4", "--runs", "2", "--search-runs", "2")
    run_dir = _cli(tiny, tmp_path / "eval", "--protocol", "2019", *argv)
    assert "coincide" not in capsys.readouterr().out
    result = json.loads((run_dir / "results.json").read_text())
    p = result["protocol"]
    assert (p["name"], p["reset"], p["learner"], p["pln_layers"]) == ("2019", "last", "frozen_rln", 2)
    assert p["overrides"] == {}
    assert "2019" in p["source"] and any("batches of 32" in s for s in p["not_copied"])
    assert any("reported set" in s for s in p["not_copied"]) and result["label"].endswith("protocol 2019")
    # the CLI's numbers are the library's on the checkpoint's network, with the 2019 reset
    payload = load_checkpoint(meta, benchmark="omniglot")
    config = config_from_checkpoint(payload)
    assert (config.preset, config.pln_hidden, config.first_order) == ("mrcl2019", 8, True)
    net = build_model(config)
    net.load_state_dict(payload["state_dict"])
    split = load_omniglot(tiny["data"], "evaluation", 12, cache_dir=tiny["cache"], progress=False)
    direct = evaluate(net.pln, feature_bank(net.rln, split, cache_dir=False), (2, 4),
                      Protocol(name="2019", reset="last", runs=2, search_runs=2))
    assert direct["by_classes"] == result["by_classes"]
    # the default is the 2020 protocol, and --reset still overrides a protocol's bundle
    default = json.loads((_cli(tiny, tmp_path / "d", *argv) / "results.json").read_text())
    assert (default["protocol"]["name"], default["protocol"]["reset"]) == ("2020", "all")
    over = json.loads((_cli(tiny, tmp_path / "o", "--protocol", "2019", "--reset", "all", *argv) / "results.json")
                      .read_text())
    assert over["protocol"]["overrides"] == {"reset": "all"} and over["by_classes"] == default["by_classes"]


def test_protocol_2019_on_a_linear_pln_prints_that_the_protocols_coincide(tiny, tmp_path, capsys):
    argv = ("--model", str(tiny["linear"]["ckpt"]), "--schedule", "4", "--runs", "2", "--search-runs", "2")
    old = json.loads((_cli(tiny, tmp_path / "a", "--protocol", "2019", *argv) / "results.json").read_text())
    assert "linear, so the 2019 and 2020 protocols coincide" in capsys.readouterr().out
    new = json.loads((_cli(tiny, tmp_path / "b", *argv) / "results.json").read_text())
    assert "coincide" not in capsys.readouterr().out
    assert old["by_classes"] == new["by_classes"] and old["protocol"]["name"] == "2019"
