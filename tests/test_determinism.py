"""Same inputs, same numbers: across processes, across --runs, and never from a stale cache.

- Split-Omniglot evaluation: two separate processes (different hash seeds, separate feature
  caches) write byte-identical results.json files.
- The on-disk feature cache is keyed by the RLN's weights: one changed weight is a new file and
  new features, never the old ones.
- Incremental sine: run i's numbers do not depend on how many runs are asked for.
"""
import copy
import json
import os
import subprocess
import sys

import pytest
import torch

import evaluate_regression
from datasets.omniglot import load_omniglot, to_float
from experiment.evaluation import features as fc
from tests.conftest import REPO
from tests.omniglot_fixtures import tiny_network_and_tree

TINY = {"image_size": 12, "channels": 4, "strides": (2, 2), "n_outputs": 16, "n_classes": 8, "class_split": 4}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("determinism")
    data, cfg, net, ckpt = tiny_network_and_tree(root, TINY)
    return {"root": root, "data": data, "cfg": cfg, "net": net, "ckpt": ckpt}


def _start_evaluation_in_a_new_process(tiny, out, hash_seed) -> subprocess.Popen:
    argv = [sys.executable, "evaluate_omniglot.py", "--model", str(tiny["ckpt"]), "--path", str(tiny["data"]),
            "--results-dir", str(out), "--cache-dir", str(out / "cache"), "--nonstandard-data", "--no-progress",
            "--schedule", "2:4", "--runs", "3", "--search-runs", "2", "--name", "same"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": str(hash_seed)}
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _results_of(process: subprocess.Popen, out):
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    (path,) = out.glob("*/omniglot_eval/same_1/results.json")
    return path


def test_omniglot_results_are_byte_identical_across_processes(tiny, tmp_path):
    # the two processes run at once (they share nothing but their inputs): on two cores, about half the wait
    processes = [_start_evaluation_in_a_new_process(tiny, tmp_path / name, seed) for name, seed in (("a", 1), ("b", 2))]
    try:
        first, second = (_results_of(process, tmp_path / name) for process, name in zip(processes, "ab"))
    finally:  # one failed: the other is not left running
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert list((tmp_path / "a" / "cache").glob("omniglot_features_*.pt"))  # each computed its own features
    assert list((tmp_path / "b" / "cache").glob("omniglot_features_*.pt"))
    assert first.read_bytes() == second.read_bytes()
    result = json.loads(first.read_text())
    accuracies = [result["by_classes"][n]["runs"]["held_out_accuracy"] for n in ("2", "4")]
    assert all(len(a) == 3 for a in accuracies) and len({v for a in accuracies for v in a}) > 1  # real numbers, not a constant


def test_feature_cache_follows_the_rln_weights(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(fc, "_MEMORY_CACHE", {})  # every call goes to disk, as a new process would
    split = load_omniglot(tiny["data"], "evaluation", TINY["image_size"], cache_dir=False, progress=False)
    cache = tmp_path / "cache"
    rln = tiny["net"].rln
    first = fc.feature_bank(rln, split, cache_dir=cache)
    assert first.source == "computed" and len(list(cache.glob("omniglot_features_*.pt"))) == 1
    monkeypatch.setattr(fc, "_MEMORY_CACHE", {})
    assert fc.feature_bank(rln, split, cache_dir=cache).source == "disk"  # the same weights: the file is used

    changed = copy.deepcopy(rln)  # the same RLN with one weight changed
    weight = next(p for name, p in changed.named_parameters() if name.endswith("weight"))
    with torch.no_grad():
        weight.view(-1)[0] += 0.5
    monkeypatch.setattr(fc, "_MEMORY_CACHE", {})
    second = fc.feature_bank(changed, split, cache_dir=cache)
    assert second.key != first.key and second.source == "computed"
    files = sorted(cache.glob("omniglot_features_*.pt"))
    assert len(files) == 2 and any(second.key[:24] in f.name for f in files)
    assert not torch.equal(second.train, first.train) and not torch.equal(second.test, first.test)
    # and what was computed is the changed RLN's features, not a mix
    with torch.no_grad():
        direct = changed.eval()(to_float(split.images[:, :15].reshape(-1, 12, 12)))
    torch.testing.assert_close(second.train.reshape(direct.shape), direct)
    # the original weights still find their own, unchanged file
    monkeypatch.setattr(fc, "_MEMORY_CACHE", {})
    again = fc.feature_bank(rln, split, cache_dir=cache)
    assert again.source == "disk" and again.key == first.key and torch.equal(again.train, first.train)


def _sine_runs(tmp_path, runs, *extra):
    run = evaluate_regression.main(evaluate_regression.get_args_parser().parse_args(
        ["--preset", "oml2020", "--width", "16", "--runs", str(runs), "--lr", "0.003", "--eval-steps", "3",
         "--test-samples", "30", "--no-progress", "--results-dir", str(tmp_path / f"{runs}{''.join(extra)}"), *extra]))
    result = json.loads((run / "results.json").read_text())
    assert result["protocol"]["lr_searched"] is False and result["protocol"]["lr_search"] is None  # no search
    return result["runs"]


def test_sine_run_i_does_not_depend_on_the_number_of_runs(tmp_path):
    three, five = _sine_runs(tmp_path, 3), _sine_runs(tmp_path, 5)
    assert len(three["curve"]) == 3 and len(five["curve"]) == 5
    assert five["curve"][:3] == three["curve"] and five["per_function"][:3] == three["per_function"]
    assert len({tuple(c) for c in five["curve"]}) == 5  # the runs differ from one another
    # batches of 3 runs: run 3 is trained beside run 4 with --runs 5, beside runs 4 and 5 with --runs 6
    six = _sine_runs(tmp_path, 6, "--run-batch", "3")
    assert six["curve"][:5] == five["curve"] and six["per_function"][:5] == five["per_function"]


def test_sine_a_run_alone_in_its_batch_gives_the_same_numbers(tmp_path):
    """A batch of one run took another float32 path (7th-digit differences) until it was paired
    with a copy of itself: --runs 3 with --run-batch 2 ends on a lone run, as does --run-batch 1."""
    three, four = _sine_runs(tmp_path, 3, "--run-batch", "2"), _sine_runs(tmp_path, 4, "--run-batch", "2")
    assert four["curve"][:3] == three["curve"] and four["per_function"][:3] == three["per_function"]
    looped = _sine_runs(tmp_path, 3, "--run-batch", "1")
    assert looped["curve"] == three["curve"] and looped["per_function"] == three["per_function"]
