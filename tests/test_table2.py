"""Table 2's protocol (experiment/evaluation/table2.py) and commands, on a tiny generated Omniglot tree."""
import json

import numpy as np
import pytest
import torch

import evaluate_omniglot
import plot_results
from datasets.omniglot import TRAIN_DRAWERS, load_omniglot
from experiment.evaluation import table2
from experiment.evaluation.features import FeatureBank, feature_bank
from experiment.evaluation.omniglot import run_specs
from experiment.evaluation.scratch import EvalImages
from tests.omniglot_fixtures import tiny_network_and_tree
from utils.cli import run_main
from utils.errors import UserError

TINY = {"image_size": 12, "channels": 16, "strides": (2, 2), "n_outputs": 16, "n_classes": 10, "class_split": 5}
SMALL_GRIDS = {"features": {"lr": (1.0, 0.1, 0.01), "er": {"replay": (2,)}, "mer": {"beta": (1.0, 0.5)},
                            "ewc": {"lam": (0.1,)}},
               "network": {"lr": (0.3, 0.03, 0.003), "er": {"replay": (2,)}, "mer": {"beta": (1.0,)},
                           "ewc": {"lam": (1.0,)}}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("omni_table2")
    data, cfg, net, ckpt = tiny_network_and_tree(root, TINY)
    split = load_omniglot(data, "evaluation", cfg.image_size, cache_dir=root / "cache", progress=False)
    return {"data": data, "cfg": cfg, "net": net, "ckpt": ckpt, "split": split, "cache": root / "cache",
            "features": feature_bank(net.rln, split, cache_dir=False), "images": EvalImages.from_split(split)}


def _cli(tiny, tmp_path, *argv):
    base = ["--path", str(tiny["data"]), "--results-dir", str(tmp_path), "--cache-dir", str(tiny["cache"]),
            "--no-progress", "--nonstandard-data"]
    return run_main(evaluate_omniglot.main, evaluate_omniglot.get_args_parser(), [*argv, *base])


def _refusal(data, tmp_path, capsys, *flags) -> str:
    """The one-line error (exit 2) of evaluate_omniglot.py on `data`'s checkpoint with these flags."""
    with pytest.raises(SystemExit) as exit_info:
        _cli(data, tmp_path, "--model", str(data["ckpt"]), *flags)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip()


def _moved(final, start) -> bool:
    """Every tensor changed and every value is finite (NaN parameters also differ from their start)."""
    return all(torch.isfinite(a).all() and not torch.equal(a, b) for a, b in zip(final, start, strict=True))


def test_streams_are_tasks_of_the_fig4_runs_classes():
    for i in range(3):
        run = table2.draw_task_run(4, "eval", 5, 3, i, 40, iid=False)
        fig4 = run_specs(4, "eval", 15, i + 1, 40, False, 1)[i]
        assert np.array_equal(run.classes, fig4.classes) and run.init_seed == fig4.init_seed
        length = 5 * TRAIN_DRAWERS
        assert run.task_length == length and sorted(run.order.tolist()) == list(range(3 * length))
        for t in range(3):  # each task's images, and only those, in a shuffled order
            chunk = run.order[t * length:(t + 1) * length]
            assert sorted(chunk.tolist()) == list(range(t * length, (t + 1) * length))
            assert not np.array_equal(chunk, np.sort(chunk))
        iid = table2.draw_task_run(4, "eval", 5, 3, i, 40, iid=True)
        assert np.array_equal(iid.classes, run.classes) and sorted(iid.order.tolist()) == list(range(3 * length))
        assert (iid.order[:length] >= length).any()  # mixes across tasks
    one = table2.draw_task_run(4, "eval", 1, 4, 0, 40, iid=False)  # one class per task: each class shuffled
    assert [sorted(one.order[k * 15:(k + 1) * 15].tolist()) for k in range(4)] == [list(range(k * 15, k * 15 + 15))
                                                                                  for k in range(4)]
    assert not np.array_equal(table2.draw_task_run(4, "lr_search", 5, 3, 0, 40, False).classes,
                              table2.draw_task_run(4, "eval", 5, 3, 0, 40, False).classes)


def test_grid_lists_every_combination_larger_rates_first():
    assert table2.grid("features", "online", SMALL_GRIDS) == [{"lr": 1.0}, {"lr": 0.1}, {"lr": 0.01}]
    assert table2.grid("features", "mer", SMALL_GRIDS)[:3] == [{"lr": 1.0, "beta": 1.0}, {"lr": 1.0, "beta": 0.5},
                                                               {"lr": 0.1, "beta": 1.0}]
    for kind in table2.GRIDS:
        for learner in table2.LEARNER_NAMES:
            combos = table2.grid(kind, learner)
            assert combos and all("lr" in c for c in combos)


def test_whole_network_trains_the_rln_and_the_frozen_one_does_not(tiny):
    net = tiny["net"]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    protocol = table2.Table2Protocol()
    run = table2.draw_task_run(1, "eval", 2, 2, 0, tiny["features"].n_classes, False)
    whole = table2.WholeNetwork(net)
    for learner in table2.LEARNER_NAMES:
        final = table2.train_run(whole, learner, {"lr": 0.05}, run, tiny["images"].train, protocol)
        start = whole.start(run.init_seed)
        n_rln = len(list(net.rln.parameters()))
        assert len(final) == len(start) == n_rln + 2
        assert _moved(final, start), learner  # every RLN conv and the PLN moved, to finite values
        assert all(torch.equal(a, b) for a, b in zip(start[:n_rln], net.rln.parameters()))  # from the checkpoint
    frozen = table2.FrozenRLN(net.pln, "OML")
    for learner in table2.LEARNER_NAMES:
        final = table2.train_run(frozen, learner, {"lr": 0.05}, run, tiny["features"].train, protocol)
        assert [tuple(p.shape) for p in final] == [tuple(net.pln[0].weight.t().shape), tuple(net.pln[0].bias.shape)]
        assert _moved(final, frozen.start(run.init_seed)), learner
    # the template network, and so the frozen RLN the features came from, never change
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert torch.equal(feature_bank(net.rln, tiny["split"], cache_dir=False).train, tiny["features"].train)


@pytest.mark.parametrize("whole", [False, True])
def test_hyperparameter_choice_never_sees_held_out_images(tiny, whole):
    if whole:
        bank, rep = tiny["images"], table2.WholeNetwork(tiny["net"])
        garbage = torch.from_numpy(np.random.default_rng(0).integers(0, 256, tuple(bank.test.shape), dtype=np.uint8))
        poisoned = EvalImages(bank.train, garbage)
    else:  # features with class structure (the fixture's images have none), so that learning can happen
        gen = torch.Generator().manual_seed(0)
        prototypes = torch.relu(torch.randn(8, 1, 24, generator=gen))
        train, test = (torch.relu(prototypes + 0.3 * torch.randn(8, k, 24, generator=gen)) for k in (15, 5))
        bank = FeatureBank(train, test, "synthetic")
        rep = table2.FrozenRLN(torch.nn.Sequential(torch.nn.Linear(24, 16)), "OML")
        poisoned = FeatureBank(train, torch.relu(torch.randn(8, 5, 24, generator=gen)), "synthetic")
    protocol = table2.Table2Protocol(runs=2, search_runs=2, seed=5)
    scores = []
    for learner in ("online", "mer"):
        clean = table2.evaluate_cell(rep, learner, (2, 2), bank, protocol, SMALL_GRIDS)
        dirty = table2.evaluate_cell(rep, learner, (2, 2), poisoned, protocol, SMALL_GRIDS)
        assert clean["search"] == dirty["search"] and clean["hyperparameters"] == dirty["hyperparameters"]
        assert clean["runs"]["trajectory_accuracy"] == dirty["runs"]["trajectory_accuracy"]
        assert clean["runs"]["held_out_accuracy"] != dirty["runs"]["held_out_accuracy"]  # the poison is reported
        scores += np.ravel(clean["search"]["scores"]).tolist()
    assert len(np.unique(scores)) > 1  # the search tells combinations apart: the check can fail


def test_cli_writes_a_column_and_plot_results_prints_the_table(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(table2, "GRIDS", SMALL_GRIDS)
    argv = ("--classes-per-task", "1:2", "--n-tasks", "4:2", "--runs", "2", "--search-runs", "1")
    frozen = _cli(tiny, tmp_path / "a", "--model", str(tiny["ckpt"]), "--learner", *table2.LEARNER_NAMES, *argv)
    whole = _cli(tiny, tmp_path / "b", "--model", str(tiny["ckpt"]), "--whole-network", "--learner", "online", "er",
                 *argv)
    out = capsys.readouterr().out
    assert "the i.i.d.-pretrained network" in out  # a Standard column from an OML checkpoint says so
    result = json.loads((frozen / "results.json").read_text())
    assert result["benchmark"] == "omniglot_table2" and result["column"] == "OML"
    assert result["settings"] == ["1x4", "2x2"] and set(result["table2"]["1x4"]) == set(table2.LEARNER_NAMES)
    entry = result["table2"]["2x2"]["mer"]
    assert len(entry["runs"]["held_out_accuracy"]) == 2 and set(entry["held_out_accuracy"]) >= {"mean", "std", "ci_low"}
    assert entry["search"]["grid"] == table2.grid("features", "mer", SMALL_GRIDS)
    assert result["protocol"]["search_runs"] == 1 and result["protocol"]["memory"] == 200
    standard = json.loads((whole / "results.json").read_text())
    assert standard["column"] == "Standard" and "whole network" in standard["protocol"]["trained"]
    meta = json.loads((frozen / "metadata.json").read_text())
    assert set(meta["cell_seconds"]) == {f"{s}/{learner}" for s in ("1x4", "2x2") for learner in table2.LEARNER_NAMES}
    # the same seed writes the same bytes
    again = _cli(tiny, tmp_path / "c", "--model", str(tiny["ckpt"]), "--learner", *table2.LEARNER_NAMES, *argv)
    assert (again / "results.json").read_bytes() == (frozen / "results.json").read_bytes()
    capsys.readouterr()
    run_main(plot_results.main, plot_results.get_args_parser(), ["--table2", str(frozen), str(whole)])
    table = capsys.readouterr().out
    lines = table.strip().splitlines()
    assert lines[0].startswith("| Method | 1x4: Standard | 1x4: OML | 1x4: Pre-training | 2x2: Standard")
    assert len(lines) == 2 + len(table2.LEARNER_NAMES)
    online = next(line for line in lines if line.startswith("| Online "))
    mean = 100 * result["table2"]["1x4"]["online"]["held_out_accuracy"]["mean"]
    assert f"{mean:.1f} ±" in online.split("|")[3]  # 1x4, OML
    md = tmp_path / "table2.md"
    run_main(plot_results.main, plot_results.get_args_parser(), ["--table2", str(frozen), "--out", str(md)])
    assert md.read_text() == table2.format_table([table2.read_table2(frozen)]) + "\n"


def test_paper_settings_show_the_papers_values():
    fake = {"benchmark": "omniglot_table2", "column": "OML",
            "table2": {"1x50": {"online": {"held_out_accuracy": {"mean": 0.5, "std": 0.02, "ci_low": 0.49,
                                                                 "ci_high": 0.51}}}}}
    table = table2.format_table([fake])
    online = next(line for line in table.splitlines() if line.startswith("| Online "))
    assert "50.0 ± 2.0 [49.0, 51.0] (64.72 ± 2.57)" in online and "(04.64" not in online and "(4.64 ± 2.61)" in online


@pytest.mark.parametrize("flags, message", [(("--learner", "er", "--lr", "0.1"), "--lr"),
                                            (("--learner", "er", "--scratch"), "--scratch"),
                                            (("--whole-network",), "give --learner"),
                                            (("--mer-batches", "3"), "give --learner"),
                                            (("--learner", "er", "--classes-per-task", "3"), "--n-tasks"),
                                            (("--learner", "er", "--classes-per-task", "1", "--n-tasks", "2:3"),
                                             "2 values for 1"),
                                            (("--learner", "er", "--classes-per-task", "5", "--n-tasks", "2"),
                                             "needs 10 classes"),
                                            (("--learner", "er", "--reset", "last"), "--pln-reset all")])
def test_table2_flags_are_checked(tiny, tmp_path, capsys, flags, message):
    err = _refusal(tiny, tmp_path, capsys, *flags)
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_the_step_time_benchmark_runs_on_tiny_data(tiny, capsys):
    import importlib.util

    from tests.conftest import REPO
    spec = importlib.util.spec_from_file_location("continual_learners", REPO / "benchmarks" / "continual_learners.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = bench.get_args_parser().parse_args(["--frozen", str(tiny["ckpt"]), "--whole", str(tiny["ckpt"]), "--path",
                                               str(tiny["data"]), "--nonstandard-data", "--classes", "4",
                                               "--classes-per-task", "2", "--rounds", "1"])
    out = bench.main(args)
    assert set(out["per_sample"]) == set(table2.LEARNER_NAMES)
    assert all(v > 0 for row in out["per_sample"].values() for v in row.values())
    assert "MER" in capsys.readouterr().out


def test_a_zero_output_layer_starts_every_column_from_zeros_and_is_recorded(tiny, tmp_path, monkeypatch):
    net = tiny["net"]
    run = table2.draw_task_run(1, "eval", 2, 2, 0, tiny["features"].n_classes, False)
    protocol = table2.Table2Protocol()
    frozen, kaiming = table2.FrozenRLN(net.pln, "OML", "zero"), table2.FrozenRLN(net.pln, "OML")
    assert all(not p.any() for p in frozen.start(run.init_seed))  # weight and bias of the only layer
    assert kaiming.start(run.init_seed)[0].abs().sum() > 0
    whole = table2.WholeNetwork(net, "zero")
    start = whole.start(run.init_seed)
    n_rln = len(list(net.rln.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(start[:n_rln], net.rln.parameters()))  # the RLN as trained
    assert all(not p.any() for p in start[n_rln:])
    for rep, train in ((frozen, tiny["features"].train), (whole, tiny["images"].train)):
        final = table2.train_run(rep, "online", {"lr": 0.05}, run, train, protocol)
        assert _moved(final, rep.start(run.init_seed))  # a zero head still learns (softmax gradients are not zero)
    monkeypatch.setattr(table2, "GRIDS", SMALL_GRIDS)
    argv = ("--classes-per-task", "1", "--n-tasks", "4", "--runs", "2", "--search-runs", "1", "--learner", "online")
    zero = _cli(tiny, tmp_path / "z", "--model", str(tiny["ckpt"]), "--reset", "zero", *argv)
    default = _cli(tiny, tmp_path / "k", "--model", str(tiny["ckpt"]), *argv)
    assert "zero output layer" in json.loads((zero / "results.json").read_text())["protocol"]["pln_initialisation"]
    assert "Kaiming" in json.loads((default / "results.json").read_text())["protocol"]["pln_initialisation"]


def test_a_search_setting_keeps_the_classes_per_task_and_the_tasks_the_split_has_classes_for():
    assert table2.search_setting((5, 20), 659) == (5, 20)
    assert table2.search_setting((5, 20), 97) == (5, 19)  # the meta-validation split
    assert table2.search_setting((1, 50), 97) == (1, 50)
    with pytest.raises(UserError, match="needs 5 classes per task, but the search split has 3"):
        table2.search_setting((5, 20), 3)


def test_a_search_on_another_split_never_reads_the_reported_images():
    gen = torch.Generator().manual_seed(1)

    def features(n_classes):  # class structure, so that the combinations score apart
        prototypes = torch.relu(torch.randn(n_classes, 1, 24, generator=gen))
        return FeatureBank(*(torch.relu(prototypes + 0.3 * torch.randn(n_classes, k, 24, generator=gen))
                             for k in (15, 5)), "synthetic")
    reported, selection = features(8), features(6)
    poisoned = FeatureBank(torch.full_like(reported.train, float("nan")), reported.test, "synthetic")
    rep = table2.FrozenRLN(torch.nn.Sequential(torch.nn.Linear(24, 16)), "OML")
    protocol = table2.Table2Protocol(runs=2, search_runs=2, seed=5)
    searched = table2.evaluate_cell(rep, "online", (2, 4), reported, protocol, SMALL_GRIDS, selection.train)
    blind = table2.evaluate_cell(rep, "online", (2, 4), poisoned, protocol, SMALL_GRIDS, selection.train)
    assert searched["search"] == blind["search"]  # NaN reported images: the search did not read them
    assert blind["runs"]["held_out_accuracy"] != searched["runs"]["held_out_accuracy"]  # the runs did read them
    assert all(len(c) == 6 and max(c) < 6 for c in searched["search"]["classes"])  # 2 x 3 of the 6 selection classes
    assert len(np.unique(searched["search"]["scores"])) > 1
    own = table2.evaluate_cell(rep, "online", (2, 4), reported, protocol, SMALL_GRIDS)
    assert own["search"]["classes"] != searched["search"]["classes"]


@pytest.fixture(scope="module")
def held_out_selection(tmp_path_factory):
    """A tree whose background split has 3 selection classes, and a tiny checkpoint meta-trained without them."""
    from experiment.checkpoint import save_checkpoint
    from experiment.config import as_dict, resolve
    from experiment.omniglot_presets import OMNIGLOT_PRESETS, OmniglotConfig, build_model
    from tests.omniglot_fixtures import write_fake_both

    root = tmp_path_factory.mktemp("table2_selection")
    data = write_fake_both(root / "data", n_alphabets=6, chars_per_alphabet=3, size=24)
    ckpts = {}
    for held_out in (True, False):
        cfg = resolve(OmniglotConfig, OMNIGLOT_PRESETS, "cpu", {**TINY, "n_outputs": 32, "n_classes": 18,
                                                                "class_split": 14, "hold_out_selection": held_out})
        torch.manual_seed(0)
        ckpts[held_out] = root / f"held_out_{held_out}.pt"
        save_checkpoint(ckpts[held_out], benchmark="omniglot", config=as_dict(cfg), model=build_model(cfg), step=0)
    return {"data": data, "cache": root / "cache", "ckpt": ckpts[True], "trained_on_them": ckpts[False]}


@pytest.mark.parametrize("whole", [False, True])
def test_search_classes_selection_searches_there_and_reports_on_the_evaluation_classes(held_out_selection, tmp_path,
                                                                                      monkeypatch, whole):
    monkeypatch.setattr(table2, "GRIDS", SMALL_GRIDS)
    argv = ["--model", str(held_out_selection["ckpt"]), "--learner", "online", "--classes-per-task", "1:2",
            "--n-tasks", "4:2", "--runs", "2", "--search-runs", "1", *(["--whole-network"] if whole else [])]
    selected = _cli(held_out_selection, tmp_path / "s", *argv, "--search-classes", "selection")
    default = _cli(held_out_selection, tmp_path / "d", *argv)
    result, plain = (json.loads((run / "results.json").read_text()) for run in (selected, default))
    assert result["split"] == "test" and result["protocol"]["search_classes"] == "the selection classes"
    assert result["protocol"]["search_settings"] == ["1x3", "2x1"]  # 3 selection classes: 3 tasks of 1, 1 task of 2
    assert plain["protocol"]["search_classes"] == "the reported classes"
    assert plain["protocol"]["search_settings"] == ["1x4", "2x2"]
    cell = result["table2"]["1x4"]["online"]
    assert [len(c) for c in cell["search"]["classes"]] == [3] and [len(c) for c in cell["runs"]["classes"]] == [4, 4]
    assert cell["runs"]["classes"] == plain["table2"]["1x4"]["online"]["runs"]["classes"]  # the same reported runs


@pytest.mark.parametrize("flags, message", [
    (("--search-classes", "selection"), "give --learner"),
    (("--learner", "ncm", "--search-classes", "selection"), "--search-classes does not apply"),
    (("--learner", "er", "--search-classes", "selection", "--selection-classes"), "drop one"),
    (("--learner", "er", "--search-classes", "selection", "--classes-per-task", "4", "--n-tasks", "1"),
     "needs 4 classes per task, but the search split has 3"),
])
def test_search_classes_flags_are_checked(held_out_selection, tmp_path, capsys, flags, message):
    err = _refusal(held_out_selection, tmp_path, capsys, *flags)
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not any(tmp_path.rglob("results.json"))


def test_search_classes_selection_refuses_a_checkpoint_meta_trained_on_them(held_out_selection, tmp_path, capsys):
    with pytest.raises(SystemExit):
        _cli(held_out_selection, tmp_path, "--model", str(held_out_selection["trained_on_them"]), "--learner", "er",
             "--search-classes", "selection")
    err = capsys.readouterr().err
    assert "no validation scores" in err and "without --search-classes selection" in err


def test_hyperparameters_from_takes_each_cell_from_the_twin_checkpoints_search(held_out_selection, tmp_path, capsys,
                                                                              monkeypatch):
    monkeypatch.setattr(table2, "GRIDS", SMALL_GRIDS)
    argv = ["--learner", "online", "mer", "--classes-per-task", "1:2", "--n-tasks", "4:2", "--runs", "2"]
    twin = _cli(held_out_selection, tmp_path / "twin", "--model", str(held_out_selection["ckpt"]), *argv,
                "--search-runs", "1", "--search-classes", "selection")
    whole = _cli(held_out_selection, tmp_path / "whole", "--model", str(held_out_selection["ckpt"]), "--whole-network",
                 "--learner", "online", "--classes-per-task", "1", "--n-tasks", "4", "--runs", "1", "--search-runs", "1",
                 "--search-classes", "selection")
    full = held_out_selection["trained_on_them"]  # the same method and seed, meta-trained on every class
    taken = _cli(held_out_selection, tmp_path / "taken", "--model", str(full), *argv,
                 "--hyperparameters-from", str(whole), str(twin))
    source, result = (json.loads((run / "results.json").read_text()) for run in (twin, taken))
    for setting in ("1x4", "2x2"):
        for learner in ("online", "mer"):
            cell = result["table2"][setting][learner]
            assert cell["hyperparameters"] == source["table2"][setting][learner]["hyperparameters"]
            assert cell["search"] == {"chosen": cell["hyperparameters"], "taken_from_an_earlier_search": True}
    assert result["protocol"]["hyperparameters_from"] == str(twin)
    assert result["protocol"]["search_classes"] == f"the selection classes, in the search of {twin}"
    assert result["protocol"]["search_settings"] == ["1x3", "2x1"]
    capsys.readouterr()
    for flags, message in ((["--hyperparameters-from", str(whole)], "0 of the 1 runs"),
                           (["--hyperparameters-from", str(twin), "--learner", "er"], "has no 1x4/er cell"),
                           (["--hyperparameters-from", str(twin), "--search-runs", "2"], "there is no search"),
                           (["--hyperparameters-from", str(twin), "--learner", "slda"], "--hyperparameters-from, --n-tasks do not apply")):
        with pytest.raises(SystemExit):
            _cli(held_out_selection, tmp_path / "bad", "--model", str(full), *argv, *flags)
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").rglob("results.json"))
