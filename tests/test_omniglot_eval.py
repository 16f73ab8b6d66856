"""Split-Omniglot evaluation on a tiny generated data set: the protocol's guarantees and its errors."""
import json

import numpy as np
import pytest
import torch

import evaluate_omniglot
import plot_results
from datasets.omniglot import load_omniglot
from experiment.checkpoint import save_checkpoint
from experiment.config import as_dict, resolve
from experiment.evaluation import features, native
from experiment.evaluation.features import FeatureBank, feature_bank
from experiment.evaluation.omniglot import LR_GRID, Protocol, choose_lr, evaluate, parse_schedule, run_specs
from experiment.evaluation.online_learner import OnlineLearner
from tests.omniglot_fixtures import tiny_network_and_tree
from utils.cli import run_main
from utils.errors import UserError

TINY = {"image_size": 12, "channels": 4, "strides": (2, 2), "n_outputs": 16, "n_classes": 10, "class_split": 5}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """8 evaluation classes of 12px images, a tiny checkpoint, and its features."""
    root = tmp_path_factory.mktemp("omni")
    data, cfg, net, ckpt = tiny_network_and_tree(root, TINY)
    split = load_omniglot(data, "evaluation", cfg.image_size, cache_dir=root / "cache", progress=False)
    # Another module may have computed these features (same tiny network and tree) without a disk
    # cache; start from an empty memory cache so this one computes and writes them.
    features._MEMORY_CACHE.clear()
    bank = feature_bank(net.rln, split, cache_dir=root / "cache")
    return {"root": root, "data": data, "cfg": cfg, "net": net, "ckpt": ckpt, "bank": bank, "cache": root / "cache"}


def _cli(tiny, tmp_path, *argv):
    base = ["--path", str(tiny["data"]), "--results-dir", str(tmp_path), "--cache-dir", str(tiny["cache"]),
            "--no-progress", "--nonstandard-data"]
    return run_main(evaluate_omniglot.main, evaluate_omniglot.get_args_parser(), [*argv, *base])


def _one_line_error(capsys, tiny, tmp_path, *argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        _cli(tiny, tmp_path, *argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_seed_readme_command_runs(tiny, tmp_path, capsys):
    run_dir = _cli(tiny, tmp_path, "--rln", "6", "--model", str(tiny["ckpt"]), "--name", "Omni_test_traj", "--test",
                   "--runs", "3", "--schedule", "2:4", "--search-runs", "2")
    out = capsys.readouterr().out
    assert "--rln 6 ignored" in out and "--test accepted" in out and "n=   4" in out
    result = json.loads((run_dir / "results.json").read_text())
    assert result["benchmark"] == "omniglot" and result["schedule"] == [2, 4]
    entry = result["by_classes"]["4"]
    assert entry["lr"] in LR_GRID and len(entry["runs"]["held_out_accuracy"]) == 3
    assert {"mean", "ci_low", "ci_high"} <= set(entry["trajectory_accuracy"])
    assert np.array(entry["lr_search"]["scores"]).shape == (2, len(LR_GRID))
    assert result["model"]["method"] == "oml" and len(result["model"]["sha256"]) == 64
    assert (run_dir / "fig4.png").is_file() and not (run_dir / "results.partial.json").exists()
    # the seed's schedule spelling and a second results file overlay in the Fig. 4 layout
    assert parse_schedule("10:50:75:100:150:200") == (10, 50, 75, 100, 150, 200)
    figure = plot_results.main(plot_results.get_args_parser().parse_args(
        [str(run_dir), str(run_dir / "results.json"), "--labels", "OML", "again", "--out", str(tmp_path / "f.png")]))
    assert figure.is_file()


def test_lr_choice_never_sees_held_out_images(tiny):
    bank = tiny["bank"]
    protocol = Protocol(runs=2, search_runs=3, seed=5)
    first = evaluate(tiny["net"].pln, bank, (4,), protocol)["by_classes"]["4"]
    scrambled = FeatureBank(bank.train, torch.rand_like(bank.test) * 100 - 50, bank.key)
    second = evaluate(tiny["net"].pln, scrambled, (4,), protocol)["by_classes"]["4"]
    assert first["lr_search"] == second["lr_search"] and first["lr"] == second["lr"]
    assert first["runs"]["trajectory_accuracy"] == second["runs"]["trajectory_accuracy"]
    assert first["runs"]["held_out_accuracy"] != second["runs"]["held_out_accuracy"]  # the held-out images did change
    # the search classes come from their own stream ("lr_search"), apart from the reported runs' ("eval")
    n_pool = bank.n_classes
    assert first["lr_search"]["classes"] == [s.classes.tolist() for s in run_specs(5, "lr_search", 4, 3, n_pool, False, 1)]
    assert first["runs"]["classes"] == [s.classes.tolist() for s in run_specs(5, "eval", 4, 2, n_pool, False, 1)]


def _train(tiny, engine, run_batch, optimizer, specs, lr, bank=None, pln=None):
    bank, pln = bank or tiny["bank"], pln or tiny["net"].pln
    learner = OnlineLearner(pln, Protocol(engine=engine, run_batch=run_batch, optimizer=optimizer))
    assert learner.engine == engine
    finals = learner.train(bank.train, specs, lr)
    return finals, learner.trajectory_accuracy(bank.train, specs, finals), learner.held_out_accuracy(bank.test, specs, finals)


@pytest.mark.parametrize("optimizer, iid, epochs", [("adam", False, 1), ("sgd", True, 2)])
def test_batched_equals_looped_and_engines_agree(tiny, optimizer, iid, epochs):
    """The portable engine batched over runs gives each run the bits of its own loop; it and the
    autograd reference agree within float rounding, with the same accuracies."""
    bank = tiny["bank"]
    specs = run_specs(3, "eval", 4, 3, bank.n_classes, iid, epochs)
    lr = 3e-3 if optimizer == "adam" else 0.05
    loop, batch = (_train(tiny, "portable", k, optimizer, specs, lr) for k in (1, 3))
    assert loop[1:] == batch[1:]
    for a, b in zip(loop[0], batch[0]):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    reference = _train(tiny, "autograd", 3, optimizer, specs, lr)
    assert reference[1:] == loop[1:]
    for a, b in zip(reference[0], loop[0]):
        assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a, b))
    # a run's numbers do not depend on how many runs there are
    fewer = evaluate(tiny["net"].pln, bank, (4,), Protocol(runs=2, lr=lr, optimizer=optimizer, iid=iid, epochs=epochs, seed=3))
    assert fewer["by_classes"]["4"]["runs"]["trajectory_accuracy"] == loop[1][:2]


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_native_engine_agrees_with_portable(tiny, optimizer):
    if native.kernel() is None:
        pytest.skip("no native fast path here (numba missing or not compiling): the portable engine ran alone")
    specs = run_specs(3, "eval", 4, 3, tiny["bank"].n_classes, optimizer == "sgd", 2)
    lr = 3e-3 if optimizer == "adam" else 0.05
    fast, portable = (_train(tiny, e, 1, optimizer, specs, lr) for e in ("native", "portable"))
    assert fast[1:] == portable[1:]
    for a, b in zip(fast[0], portable[0]):
        assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a, b))


def test_native_engine_replays_idle_steps_exactly():
    """Very sparse features (columns idle for tens of steps, some never active): the native loop's
    lazy per-column Adam gives the dense loop's weights, for both optimisers."""
    if native.kernel() is None:
        pytest.skip("no native fast path here (numba missing or not compiling)")
    gen = torch.Generator().manual_seed(1)
    train = torch.rand(6, 15, 24, generator=gen)
    train = train * (torch.rand(6, 15, 24, generator=gen) < 0.15)
    train[..., :3] = 0
    specs = run_specs(2, "eval", 6, 2, 6, True, 3)
    pln = torch.nn.Sequential(torch.nn.Linear(24, 10))
    for optimizer, lr in (("adam", 0.01), ("sgd", 0.5)):
        fast, dense = (OnlineLearner(pln, Protocol(engine=e, optimizer=optimizer)).train(train, specs, lr)
                       for e in ("native", "autograd"))
        for a, b in zip(fast, dense):
            assert all(torch.allclose(x, y, atol=2e-6) for x, y in zip(a, b))
            assert torch.equal(a[0][:, :3], b[0][:, :3])  # never-active columns keep their initial weights


def test_perfect_features_reach_full_accuracy():
    n_classes = 12
    eye = torch.eye(n_classes)
    bank = FeatureBank(eye[:, None].repeat(1, 15, 1), eye[:, None].repeat(1, 5, 1), "onehot")
    pln = torch.nn.Sequential(torch.nn.Linear(n_classes, 20))
    result = evaluate(pln, bank, (n_classes,), Protocol(runs=3, search_runs=2))
    entry = result["by_classes"][str(n_classes)]
    assert entry["trajectory_accuracy"]["mean"] == 1.0 and entry["held_out_accuracy"]["mean"] == 1.0


def test_lr_tie_rules():
    grid = (0.1, 0.01, 0.001)
    # per search run the first best in grid order; then the most frequent
    assert choose_lr([[1, 1, 0], [0, 1, 1], [0, 1, 0]], grid) == (0.01, [0.1, 0.01, 0.01])
    # frequency tie (0.1 twice, 0.001 twice): the higher mean search score wins ...
    assert choose_lr([[.9, 0, .1], [.9, 0, .1], [0, 0, .6], [0, 0, .6]], grid)[0] == 0.1
    # ... and with equal means too, the smaller rate
    assert choose_lr([[.5, 0, .4], [.4, 0, .5]], grid) == (0.001, [0.1, 0.001])
    assert choose_lr([[1, 0, 0], [0, 0, 1]], grid)[0] == 0.001


def test_feature_cache_is_reused(tiny):
    split = load_omniglot(tiny["data"], "evaluation", tiny["cfg"].image_size, cache_dir=tiny["cache"], progress=False)
    again = feature_bank(tiny["net"].rln, split, cache_dir=tiny["cache"])
    assert again.source == "memory" and again.key == tiny["bank"].key and torch.equal(again.train, tiny["bank"].train)
    assert list(tiny["cache"].glob(f"omniglot_features_{again.key[:24]}.pt"))


def test_bad_input_gives_one_line_errors(tiny, tmp_path, capsys):
    from experiment.sine_presets import SINE_PRESETS, SineConfig, build_model
    sine_cfg = resolve(SineConfig, SINE_PRESETS, "quick", {})
    save_checkpoint(tmp_path / "sine.pt", benchmark="sine", config=as_dict(sine_cfg), model=build_model(sine_cfg), step=0)
    err = _one_line_error(capsys, tiny, tmp_path, "--model", str(tmp_path / "sine.pt"), "--schedule", "2")
    assert "sine checkpoint" in err
    err = _one_line_error(capsys, tiny, tmp_path, "--model", str(tiny["ckpt"]), "--schedule", "2:100")
    assert "100 classes" in err and "only 8" in err
    err = _one_line_error(capsys, tiny, tmp_path, "--model", str(tiny["ckpt"]), "--schedule", "10:abc")
    assert "10:abc" in err
    err = _one_line_error(capsys, tiny, tmp_path, "--model", str(tmp_path / "missing.pt"))
    assert "no checkpoint" in err
    with pytest.raises(UserError, match="outputs"):
        evaluate(torch.nn.Linear(3, 4), FeatureBank(torch.ones(8, 15, 3), torch.ones(8, 5, 3), "k"), (2,), Protocol(lr=0.1))
