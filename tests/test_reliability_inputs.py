"""Bounded inputs and one-line errors everywhere (utils/bounds.py, experiment/limits.py, the
scripts): every row is a command that used to crash with a traceback, grow until the kernel
killed it, write outside the results folder or silently do something else. Each is now refused
with exit 2 and one `error:` line naming the problem, before anything is written: the test's
folder is byte-identical before and after.

In-process through utils.cli.run_main (one subprocess checks the real command line). Omniglot
rows run on a tiny generated tree; the sine rows on trained_models/sine_quick_oml.pt.
"""
import errno
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import evaluate_omniglot
import evaluate_regression
import oml_omniglot
import oml_regression
import plot_results
import visualize_representations
from experiment import export, limits, method_fields
from experiment.checkpoint import DIGEST, save_checkpoint
from experiment.config import as_dict, resolve
from experiment.evaluation import select
from experiment.omniglot_presets import OMNIGLOT_PRESETS, OmniglotConfig
from experiment.omniglot_presets import build_model as build_omniglot_model
from experiment.sine_presets import SINE_PRESETS, SineConfig
from experiment.sine_presets import build_model as build_sine_model
from tests.conftest import REPO
from tests.omniglot_fixtures import write_fake_both
from utils import bounds, files
from utils.cli import run_main
from utils.errors import UserError

SINE = REPO / "trained_models" / "sine_quick_oml.pt"
CONFIG_DAMAGE = [  # (fixture, config key, value) of a checkpoint whose config was edited
    ("cfg_channels_negative", "channels", -1), ("cfg_channels_huge", "channels", 10**6),
    ("cfg_image_huge", "image_size", 10**5), ("cfg_image_fraction", "image_size", 28.5),
    ("cfg_stride_zero", "strides", [2, 0]), ("cfg_width_huge", "width", 10**8), ("cfg_width_text", "width", "300"),
    ("cfg_outputs_huge", "n_outputs", 10**9), ("cfg_unknown_key", "colour", "red"), ("cfg_method", "method", "magic"),
    ("cfg_update_lr_nan", "update_lr", float("nan")), ("cfg_arch", "arch", "resnet"), ("cfg_rln_zero", "rln", 0),
]
ON_LINUX = sys.platform.startswith("linux") and Path("/sys").is_dir()
READ_ONLY = "/sys/oml-results"  # sysfs takes no new files, not even from root (chmod 0555 does not stop root)

SCRIPTS = {"train_sine": oml_regression, "eval_sine": evaluate_regression, "train_omni": oml_omniglot,
           "eval_omni": evaluate_omniglot, "visualize": visualize_representations, "plot": plot_results,
           "export": export, "select": select}
# Flags each script gets before a row's own (a later flag wins), so that every row would finish in
# seconds if its check were gone: its failure is then a traceback, or a run that was not refused.
BASE = {
    "train_sine": ["--preset", "oml2020", "--width", "16", "--steps", "2", "--eval-runs", "0", "--no-progress",
                   "--results-dir", "{results}"],
    "eval_sine": ["--model", "{sine}", "--runs", "2", "--lr", "0.01", "--no-progress", "--results-dir", "{results}"],
    "train_omni": ["--preset", "cpu", "--image-size", "12", "--channels", "4", "--strides", "2", "2", "--n-classes", "8",
                   "--class-split", "4", "--steps", "2", "--log-every", "1", "--save-every", "2", "--path", "{data}",
                   "--cache-dir", "{cache}", "--nonstandard-data", "--no-progress", "--results-dir", "{results}"],
    "eval_omni": ["--model", "{omni}", "--schedule", "4", "--runs", "2", "--lr", "0.01", "--engine", "torch",
                  "--path", "{data}", "--cache-dir", "{cache}", "--nonstandard-data", "--no-progress",
                  "--results-dir", "{results}"],
    "visualize": ["--model", "{omni}", "--path", "{data}", "--images", "40", "--maps", "4", "--nonstandard-data",
                  "--no-progress", "--results-dir", "{results}"],
    "plot": [], "export": [], "select": [],
}

ROWS = [
    # --- oml_regression.py -------------------------------------------------------------------------
    ("train_sine", ["--update_step", "1000000000000"], "for the trajectory of one meta-step and its inner-loop graph"),
    ("train_sine", ["--update_lr", "inf"], "--update_lr must be a positive finite number, got inf"),
    ("train_sine", ["--meta_lr", "nan"], "--meta_lr must be a positive finite number, got nan"),
    ("train_sine", ["--inner-clip", "nan"], "--inner-clip must be a positive finite number"),
    ("train_sine", ["--method", "srnn", "--srnn-beta", "nan"], "--srnn-beta must be a positive finite number"),
    ("train_sine", ["--seed", "-1"], "--seed must be in 0..2**63-1, got -1"),
    ("train_sine", ["--seed", str(2**63)], f"--seed must be in 0..2**63-1, got {2**63}"),
    ("train_sine", ["--name", "a/b"], "--name 'a/b' must be a plain folder name"),
    ("train_sine", ["--name", "../../x"], "--name '../../x' must be a plain folder name"),
    ("train_sine", ["--save-every", "0"], "--save-every must be at least 1, got 0"),
    ("train_sine", ["--log-every", "-3"], "--log-every must be at least 1, got -3"),
    ("train_sine", ["--rln", "9"], "--rln must be in 1..5"),
    ("train_sine", ["--eval-runs", "-5"], "--eval-runs must be at least 0, got -5"),
    ("train_sine", ["--eval-runs", "1", "--eval-test-samples", "0"], "--eval-test-samples must be at least 1, got 0"),
    ("train_sine", ["--eval-runs", "1", "--eval-lr", "0"], "the evaluation after training (--eval-* flags): --lr must be"),
    ("train_sine", ["--eval-runs", "1", "--eval-steps", "1000000000000"], "for the samples and features of one batch"),
    ("train_sine", ["--first-order", "--second-order"], "argument --second-order: not allowed with argument --first-order"),
    ("train_sine", ["--results-dir", "{file}"], "is a file, not a folder"),
    ("train_sine", ["--results-dir", "{file}/sub"], "is a file, not a folder"),
    # --- evaluate_regression.py --------------------------------------------------------------------
    ("eval_sine", ["--runs", "0"], "evaluation runs must be at least 1, got 0"),
    # 10,001 tiny runs in one batch: without the bound they would finish in seconds, and be accepted
    ("eval_sine", ["--runs", "10001", "--run-batch", "10001", "--tasks", "1", "--update_step", "1", "--batch-size", "1",
                   "--test-samples", "1"], "--runs must be in 1..10000"),
    ("eval_sine", ["--test-samples", "0"], "evaluation test samples must be at least 1, got 0"),
    ("eval_sine", ["--test-samples", "-5"], "evaluation test samples must be at least 1, got -5"),
    ("eval_sine", ["--test-samples", "1000000000000"], "for the samples and features of one batch of runs"),
    ("eval_sine", ["--run-batch", "0"], "evaluation run batch must be at least 1, got 0"),
    ("eval_sine", ["--lr", "0"], "--lr must be a positive finite number, got 0.0"),
    ("eval_sine", ["--lr", "inf"], "--lr must be a positive finite number, got inf"),
    ("eval_sine", ["--clip", "nan"], "the evaluation clamp must be positive and finite, got nan"),
    ("eval_sine", ["--seed", "-1"], "--seed must be in 0..2**63-1, got -1"),
    ("eval_sine", ["--seed", str(2**63)], "--seed must be in 0..2**63-1"),
    ("eval_sine", ["--preset", "oml2020"], "--preset oml2020 contradicts the checkpoint, which is preset quick"),
    ("eval_sine", ["--model", "{empty}"], "is empty (0 bytes), not a checkpoint"),
    ("eval_sine", ["--model", "{truncated}"], "is not a checkpoint this code can read"),
    ("eval_sine", ["--model", "{no_bias}"], "does not fit the network its config describes"),
    ("eval_sine", ["--model", "{no_step}"], "is a damaged checkpoint: step missing or of the wrong type"),
    ("eval_sine", ["--name", "../../x"], "--name '../../x' must be a plain folder name"),
    ("eval_sine", ["--name", ".."], "--name '..' must be a plain folder name"),
    ("eval_sine", ["--results-dir", "{file}"], "is a file, not a folder"),
    # --- oml_omniglot.py ---------------------------------------------------------------------------
    ("train_omni", ["--meta-random", "-5"], "--meta-random must be in 0..80"),
    ("train_omni", ["--held-out", "-1"], "--held-out must be at least 0, got -1"),
    ("train_omni", ["--quick-eval", "-1"], "--quick-eval must be in 0..1000"),
    ("train_omni", ["--quick-eval", "9"], "--quick-eval must be in 0..8"),
    ("train_omni", ["--update_lr", "inf"], "--update_lr must be a positive finite number, got inf"),
    ("train_omni", ["--method", "srnn", "--srnn-beta", "nan"], "--srnn-beta must be a positive finite number"),
    ("train_omni", ["--seed", "-1"], "--seed must be in 0..2**63-1, got -1"),
    ("train_omni", ["--name", "../../x"], "--name '../../x' must be a plain folder name"),
    ("train_omni", ["--save-every", "0"], "--save-every must be at least 1, got 0"),
    ("train_omni", ["--image-size", "5"], "--image-size 5 is too small for 2 3x3 convolutions"),
    ("train_omni", ["--method", "pretraining", "--iid-batch", "1000000000000"],
     "for the activations of one training step"),
    ("train_omni", ["--first-order", "--second-order"], "not allowed with argument --first-order"),
    ("train_omni", ["--results-dir", "{file}"], "is a file, not a folder"),
    # --- evaluate_omniglot.py ----------------------------------------------------------------------
    ("eval_omni", ["--runs", "10001", "--run-batch", "10001", "--schedule", "1"], "--runs must be in 1..10000"),
    ("eval_omni", ["--runs", "0"], "--runs must be at least 1, got 0"),
    ("eval_omni", ["--run-batch", "0"], "--run-batch must be at least 1, got 0"),
    ("eval_omni", ["--lr", "0"], "--lr must be a positive finite number, got 0.0"),
    ("eval_omni", ["--lr", "inf"], "--lr must be a positive finite number, got inf"),
    ("eval_omni", ["--seed", "-1"], "--seed must be in 0..2**63-1, got -1"),
    ("eval_omni", ["--model", "{empty}"], "is empty (0 bytes), not a checkpoint"),
    ("eval_omni", ["--model", "{omni_no_bias}"], "does not fit the network its config describes"),
    ("eval_omni", ["--name", "a/b"], "--name 'a/b' must be a plain folder name"),
    ("eval_omni", ["--results-dir", "{file}"], "is a file, not a folder"),
    # --- checkpoints: weights checked at load (finite; equal to the digest recorded at save) --------------
    ("eval_omni", ["--model", "{omni_nan}"], "holds non-finite weights (nan or inf in rln.0.weight)"),
    ("eval_sine", ["--model", "{sine_nan}"], "holds non-finite weights (nan or inf in rln.0.weight)"),
    ("eval_omni", ["--model", "{omni_flipped}"], "its weights differ from the SHA-256 recorded when it was written"),
    ("eval_sine", ["--model", "{sine_flipped}"], "its weights differ from the SHA-256 recorded when it was written"),
    ("eval_omni", ["--model", "{omni_no_bias_digest}"], "its weights differ from the SHA-256 recorded"),
    ("eval_omni", ["--model", "{omni_bad_digest}"], "its weights differ from the SHA-256 recorded"),
    ("visualize", ["--model", "{omni_nan}"], "holds non-finite weights"),
    ("export", ["{sine_flipped}", "{tmp}/out.pt"], "its weights differ from the SHA-256 recorded"),
    # --- checkpoints: the config held to the flags' bounds, before a network of its sizes is built ---------
    ("eval_omni", ["--model", "{cfg_channels_negative}"], "a value its flag would refuse: --channels must be at least 1"),
    ("eval_omni", ["--model", "{cfg_channels_huge}"], "does not fit the network its config describes: the config's "
                                                      "sizes need"),
    ("eval_omni", ["--model", "{cfg_image_huge}"], "does not fit the network its config describes"),
    ("eval_omni", ["--model", "{cfg_image_fraction}"], "holds image_size = 28.5, not an int"),
    ("eval_omni", ["--model", "{cfg_stride_zero}"], "--strides must be positive integers, got [2, 0]"),
    ("eval_omni", ["--model", "{cfg_outputs_huge}"], "does not fit the network its config describes"),
    ("eval_omni", ["--model", "{cfg_unknown_key}"], "checkpoint config has keys this code does not know: ['colour']"),
    ("eval_omni", ["--model", "{cfg_method}"], "holds method = 'magic', not one of"),
    ("eval_omni", ["--model", "{cfg_update_lr_nan}"], "--update_lr must be a positive finite number, got nan"),
    ("visualize", ["--model", "{cfg_channels_huge}"], "does not fit the network its config describes"),
    ("visualize", ["--model", "{cfg_image_fraction}"], "holds image_size = 28.5, not an int"),
    ("eval_sine", ["--model", "{cfg_width_huge}"], "does not fit the network its config describes"),
    ("eval_sine", ["--model", "{cfg_width_text}"], "holds width = '300', not an int"),
    ("eval_sine", ["--model", "{cfg_arch}"], "holds arch = 'resnet', not one of mrcl2019, oml2020"),
    ("eval_sine", ["--model", "{cfg_rln_zero}"], "a value its flag would refuse: --rln must be in 1.."),
    ("visualize", ["--model", "{cfg_width_huge}"], "does not fit the network its config describes"),
    # --- visualize_representations.py --------------------------------------------------------------
    ("visualize", ["--images", "161"], "--images 161 exceeds the 160 images of background classes 0-7"),
    ("visualize", ["--images", "0"], "--images must be at least 1, got 0"),
    ("visualize", ["--maps", "181"], "--maps must be in 1..180"),
    ("visualize", ["--classes", "21"], "--classes must be in 1..20"),
    ("visualize", ["--classes", "9"], "--classes 9 exceeds the 8 background classes the study reads"),
    ("visualize", ["--seed", "-1"], "--seed must be in 0..2**63-1, got -1"),
    ("visualize", ["--model", "{empty}"], "is empty (0 bytes), not a checkpoint"),
    ("visualize", ["--model", "{no_bias}"], "does not fit the network its config describes"),
    ("visualize", ["--name", "../../x"], "--name '../../x' must be a plain folder name"),
    ("visualize", ["--results-dir", "{file}"], "is a file, not a folder"),
    # --- plot_results.py, experiment.export, experiment.evaluation.select ---------------------------------------
    ("plot", ["{listjson}"], "is not an evaluation results file of evaluate_regression.py or evaluate_omniglot.py"),
    ("plot", ["{sine_results}", "--out", "{tmp}/missing/fig.png"], "the folder '{tmp}/missing' does not exist"),
    ("plot", ["{sine_results}", "--out", "{tmp}/fig.xyz"], "matplotlib cannot write '.xyz' files"),
    ("plot", ["{sine_results}", "--out", "{file}/fig.png"], "is a file, not a folder"),
    ("export", ["{empty}", "{tmp}/out.pt"], "is empty (0 bytes), not a checkpoint"),
    ("export", ["{sine}", "{file}/out.pt"], "is a file, not a folder"),
    ("select", ["{listjson}", "{sine_results}"], "is not an evaluation results file"),
    ("select", ["{no_search}", "{sine_results}"], "meta-validation split only"),
    ("select", ["{no_score}", "{no_score}"], "lacks what is scored"),
]
READ_ONLY_ROWS = [  # a folder no one may write in
    ("train_sine", ["--results-dir", READ_ONLY], "cannot write in '/sys'"),
    ("eval_sine", ["--results-dir", READ_ONLY], "cannot write in '/sys'"),
    ("eval_omni", ["--results-dir", READ_ONLY], "cannot write in '/sys'"),
    ("visualize", ["--results-dir", READ_ONLY], "cannot write in '/sys'"),
    ("plot", ["{sine_results}", "--out", f"{READ_ONLY}.png"], "cannot write in '/sys'"),
    ("export", ["{sine}", f"{READ_ONLY}.pt"], "cannot write in '/sys'"),
]
FULL_DISK_ROWS = [  # the disk reports 1 MiB free
    ("train_sine", [], "only 1.0 MiB free on its disk"),
    ("eval_sine", [], "only 1.0 MiB free on its disk"),
    ("train_omni", [], "only 1.0 MiB free on its disk"),
    ("eval_omni", [], "only 1.0 MiB free on its disk"),
    ("visualize", [], "only 1.0 MiB free on its disk"),
    ("plot", ["{sine_results}", "--out", "{tmp}/fig.png"], "only 1.0 MiB free on its disk"),
]
SMALL_MEMORY_ROWS = [  # the machine reports 1 KiB of memory available: sizes that fit a real machine
    ("train_sine", [], "needs about"),
    ("eval_sine", [], "of memory for the samples and features of one batch of runs"),
    ("train_omni", [], "of memory for"),
    ("eval_omni", [], "needs about"),
    ("visualize", [], "needs about"),
    ("visualize", ["--model", "{sine}", "--images", "20000"], "--images 20000 needs about"),
]


def _id(row):
    return f"{row[0]} {' '.join(row[1])}"[:80]


# --- fixtures -----------------------------------------------------------------------------------------

def _omniglot_checkpoint(path):
    cfg = resolve(OmniglotConfig, OMNIGLOT_PRESETS, "cpu",
                  {"image_size": 12, "channels": 4, "strides": (2, 2), "n_outputs": 8, "n_classes": 8, "class_split": 4})
    torch.manual_seed(0)
    net = build_omniglot_model(cfg)
    save_checkpoint(path, benchmark="omniglot", config=as_dict(cfg), model=net, step=0)
    return path


def _damaged(source, path, change, digest=False):
    """A copy of `source` changed by `change`; its weights digest dropped (as in a checkpoint written
    before digests were recorded), so that the check under test is not pre-empted by the digest's,
    unless `digest` keeps it."""
    payload = torch.load(source, weights_only=True)
    if not digest:
        payload.pop(DIGEST, None)
    change(payload)
    torch.save(payload, path)
    return path


def _flip_bytes(payload, count=64):
    """`count` bytes of the first weight tensor inverted in place (a damaged disk or copy)."""
    name = sorted(payload["state_dict"])[0]
    raw = payload["state_dict"][name].view(-1).view(torch.uint8)
    raw[:count] = raw[:count] ^ 0x55


def _set(path, value):
    def change(payload):
        payload["config"][path] = value
    return change


def _nan(payload):
    payload["state_dict"]["rln.0.weight"][0] = float("nan")


def _resaved(source, path):
    """`source`'s weights saved by this code: with their digest recorded."""
    payload = torch.load(source, weights_only=True)
    cfg = resolve(SineConfig, SINE_PRESETS, payload["config"]["preset"], {})
    net = build_sine_model(cfg)
    net.load_state_dict(payload["state_dict"])
    save_checkpoint(path, benchmark="sine", config=as_dict(cfg), model=net, step=payload["step"])
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Paths the rows name; none of them lies in a row's own folder."""
    root = tmp_path_factory.mktemp("inputs")
    data = write_fake_both(root / "data", n_alphabets=2, chars_per_alphabet=4, size=20)
    omni = _omniglot_checkpoint(root / "omni.pt")
    (root / "empty.pt").write_bytes(b"")
    (root / "truncated.pt").write_bytes(SINE.read_bytes()[:300])
    listjson = root / "list.json"
    listjson.write_text("[1, 2]")
    no_search = root / "no_search.json"
    no_search.write_text(json.dumps({"benchmark": "sine", "label": "x"}))  # no split: not a meta-validation result
    no_score = root / "no_score.json"
    no_score.write_text(json.dumps({"benchmark": "sine", "label": "x", "split": "selection"}))  # no final_mse
    paths = {
        "sine": SINE, "omni": omni, "data": data, "cache": root / "cache", "empty": root / "empty.pt",
        "truncated": root / "truncated.pt", "listjson": listjson, "no_search": no_search, "no_score": no_score,
        "no_bias": _damaged(SINE, root / "no_bias.pt", lambda p: p["state_dict"].pop("pln.0.bias")),
        "no_step": _damaged(SINE, root / "no_step.pt", lambda p: p.pop("step")),
        "omni_no_bias": _damaged(omni, root / "omni_no_bias.pt", lambda p: p["state_dict"].pop("pln.0.bias")),
        "omni_nan": _damaged(omni, root / "omni_nan.pt", _nan, digest=True),
        "sine_nan": _damaged(SINE, root / "sine_nan.pt", _nan),
        "omni_flipped": _damaged(omni, root / "omni_flipped.pt", _flip_bytes, digest=True),
        "omni_no_bias_digest": _damaged(omni, root / "omni_no_bias_digest.pt", lambda p: p["state_dict"].pop("pln.0.bias"),
                                        digest=True),
        "omni_bad_digest": _damaged(omni, root / "omni_bad_digest.pt", lambda p: p.update({DIGEST: 7}), digest=True),
    }
    sine_digest = _resaved(SINE, root / "sine_digest.pt")
    paths["sine_digest"] = sine_digest
    paths["sine_flipped"] = _damaged(sine_digest, root / "sine_flipped.pt", _flip_bytes, digest=True)
    # configs holding what the flags refuse (the weights unchanged): each used to be a traceback, some
    # after asking torch for gigabytes to terabytes
    for name, key, value in CONFIG_DAMAGE:
        source = sine_digest if key in ("width", "capacity", "arch", "rln") else omni
        paths[name] = _damaged(source, root / f"{name}.pt", _set(key, value), digest=True)
    # a real results file, and the image cache filled once (so rows read it and never write it)
    paths["sine_results"] = run_main(evaluate_regression.main, evaluate_regression.get_args_parser(),
                                     [a.format(**paths, results=root / "results") for a in BASE["eval_sine"]])
    return paths


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def _command(inputs, tmp_path, script, argv):
    (tmp_path / "file").write_text("a file where a folder is expected\n")
    names = {**inputs, "tmp": tmp_path, "results": tmp_path / "results", "file": tmp_path / "file"}
    return [a.format(**names) for a in BASE[script] + list(argv)], names


def _refused(capsys, monkeypatch, inputs, tmp_path, script, argv, fragment) -> str:
    monkeypatch.setenv("OML_CACHE_DIR", str(inputs["cache"]))
    argv, names = _command(inputs, tmp_path, script, argv)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    module = SCRIPTS[script]
    with pytest.raises(SystemExit) as info:
        run_main(module.main, module.get_args_parser(), argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err  # argparse's refusals too (utils.cli.run_main)
    assert fragment.format(**names) in err, err
    assert _snapshot(tmp_path) == before  # nothing written, not even an empty run folder
    return err


# --- the rows -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("script, argv, fragment", ROWS, ids=[_id(r) for r in ROWS])
def test_refused_before_anything_is_written(inputs, tmp_path, capsys, monkeypatch, script, argv, fragment):
    _refused(capsys, monkeypatch, inputs, tmp_path, script, argv, fragment)


@pytest.mark.skipif(not ON_LINUX, reason="needs /sys, a folder no one may write in")
@pytest.mark.parametrize("script, argv, fragment", READ_ONLY_ROWS, ids=[_id(r) for r in READ_ONLY_ROWS])
def test_read_only_folder_is_refused(inputs, tmp_path, capsys, monkeypatch, script, argv, fragment):
    _refused(capsys, monkeypatch, inputs, tmp_path, script, argv, fragment)


@pytest.mark.parametrize("script, argv, fragment", FULL_DISK_ROWS, ids=[_id(r) for r in FULL_DISK_ROWS])
def test_full_disk_is_refused(inputs, tmp_path, capsys, monkeypatch, script, argv, fragment):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=2**20))
    _refused(capsys, monkeypatch, inputs, tmp_path, script, argv, fragment)


@pytest.mark.parametrize("script, argv, fragment", SMALL_MEMORY_ROWS, ids=[_id(r) for r in SMALL_MEMORY_ROWS])
def test_too_little_memory_is_refused_with_the_estimate(inputs, tmp_path, capsys, monkeypatch, script, argv, fragment):
    monkeypatch.setattr(bounds, "available_memory", lambda: 2**10)
    err = _refused(capsys, monkeypatch, inputs, tmp_path, script, argv, fragment)
    assert "and this machine has 1.0 KiB available" in err


# --- what is accepted, and where it goes ------------------------------------------------------------------

def test_preset_equal_to_the_checkpoints_is_a_note(inputs, tmp_path, capsys):
    argv, _ = _command(inputs, tmp_path, "eval_sine", ["--preset", "quick"])
    run = run_main(evaluate_regression.main, evaluate_regression.get_args_parser(), argv)
    assert "note: --preset quick is the checkpoint's own" in capsys.readouterr().err
    assert (run / "results.json").is_file()


@pytest.mark.parametrize("out, written", [("figs", "figs/figure.png"), ("fig", "fig.png"), ("fig.pdf", "fig.pdf")])
def test_plot_out_is_written_where_printed(inputs, tmp_path, capsys, out, written):
    (tmp_path / "figs").mkdir()
    argv = [str(inputs["sine_results"]), "--out", str(tmp_path / out)]
    path = run_main(plot_results.main, plot_results.get_args_parser(), argv)
    assert path == tmp_path / written and path.is_file()
    assert capsys.readouterr().out.strip() == f"figure: {tmp_path / written}"
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [written]


def test_a_disk_that_fills_up_mid_run_is_one_line(inputs, tmp_path, capsys, monkeypatch):
    def full(path, write):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(files, "atomic_write", full)
    argv, _ = _command(inputs, tmp_path, "eval_sine", [])
    with pytest.raises(SystemExit) as info:
        run_main(evaluate_regression.main, evaluate_regression.get_args_parser(), argv)
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and err.startswith("error: No space left on device: '") and "\n" not in err, err


def test_the_command_line_prints_one_line_for_an_empty_checkpoint(inputs, tmp_path):
    """The real process (this crashed inside the error message before)."""
    out = subprocess.run([sys.executable, "evaluate_regression.py", "--model", str(inputs["empty"]),
                          "--results-dir", str(tmp_path / "results")], cwd=REPO, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 2 and out.stderr == f"error: '{inputs['empty']}' is empty (0 bytes), not a checkpoint\n"
    assert not (tmp_path / "results").exists()


# --- the estimates themselves (pure functions; nothing is allocated) ---------------------------------------

def test_estimates_refuse_the_reported_sizes_and_pass_the_presets():
    huge = resolve(SineConfig, SINE_PRESETS, "quick", {"update_step": 99999999})
    with pytest.raises(UserError, match=r"--tasks 10 x \(--update_step 99999999 x --batch-size 10 \+ --meta-batch 10\) samples of "
                                        r"--capacity 50 needs about "
                                               r"[0-9.]+ TiB of memory for the trajectory"):
        limits.sine_training(huge)
    study = types.SimpleNamespace(images=99999999999, classes=None, batch_size=256)
    with pytest.raises(UserError, match="--images 99999999999 needs about"):
        limits.sine_study(resolve(SineConfig, SINE_PRESETS, "quick", {}), study, study.images)
    # every shipped preset fits a 4 GiB machine
    small = 4 * 2**30
    for preset in SINE_PRESETS:
        for method in ("oml", "pretraining"):
            cfg = resolve(SineConfig, SINE_PRESETS, preset, {"method": method})
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(bounds, "available_memory", lambda: small)
                limits.sine_training(cfg)
    assert bounds.size_text(74.5 * 2**30) == "74.5 GiB" and bounds.size_text(512) == "512 B"


def test_single_value_checks():
    assert bounds.seed(0) == 0 and bounds.seed(2**63 - 1) == 2**63 - 1
    for bad in (-1, 2**63):
        with pytest.raises(UserError):
            bounds.seed(bad)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(UserError, match="positive finite"):
            bounds.positive_finite("--lr", bad)
    assert bounds.run_name("run-1.b") == "run-1.b" and bounds.run_name(None) is None
    for bad in ("", " ", ".", "..", "a/b", "a\\b", "x" * 201):
        with pytest.raises(UserError):
            bounds.run_name(bad)
    bounds.fits_in_memory([("--x 1", "a thing", 10)], available=10)
    with pytest.raises(UserError, match=r"--big 2 needs about 1\.0 KiB of memory for the big part, "
                                               r"and this machine has 100 B available"):
        bounds.fits_in_memory([("--x 1", "a thing", 24), ("--big 2", "the big part", 1000)], available=100)


# --- every numeric and path flag of every script, single values and list members ---------------------------
#
# Generated from the parsers, so a flag added later is covered (or fails here) without a new row. Each
# case must be refused at its parse-level checks: exit 2, one `error:` line naming the flag, nothing
# written. A case that is not refused runs the script's tiny BASE command instead: it fails in seconds.

HUGE = str(10**12)
TABLE2_BASE = ["--model", "{omni}", "--learner", "mer", "--classes-per-task", "1", "--n-tasks", "2", "--runs", "2",
               "--path", "{data}", "--cache-dir", "{cache}", "--nonstandard-data", "--no-progress",
               "--results-dir", "{results}"]
BASE["table2"] = TABLE2_BASE
SCRIPTS["table2"] = evaluate_omniglot
GENERATED = ("train_sine", "eval_sine", "train_omni", "eval_omni", "table2", "visualize", "export")
# Values a flag legitimately takes (so not a bad value for it), with the reason.
ZERO_OK = {  # 0 means something
    "--seed": "a seed", "--rank": "the first sweep point", "--eval-runs": "no evaluation after training",
    "--inner-clip": "no clipping", "--maml-clip": "no clipping", "--class-split": "no split",
    "--pln-hidden": "a linear PLN", "--held-out": "no held-out images in the meta set",
    "--meta-random": "no random images in the meta set", "--quick-eval": "no quick check",
}
HUGE_OK = {  # 10**12 is not an error
    "--seed": "below 2**63", "--steps": "a long run", "--maml-steps": "a long run", "--iid-epochs": "a long run",
    "--save-every": "only the last checkpoint", "--log-every": "one metrics line at the end",
    "--run-batch": "capped at --runs", "--batch-size": "visualize: capped at the inputs",
    "--rln": "evaluate_omniglot: accepted for the seed README's command, noted as unused",
    "--strides": "a stride past the image takes one position",
}


def _context(script, dest) -> tuple[str, list]:
    """(the script whose BASE to use, flags that make `dest` apply): a flag read by one method (or by
    the evaluation after training, or by Table 2) is tested where it is read, so that its own bound,
    not its being foreign, is what refuses the value."""
    if script == "train_omni":
        users = method_fields.OMNIGLOT_METHOD_FIELDS.get(dest, ("oml",))
        if "oml" in users:
            return script, []
        if users[0] == "anml":
            return script, ["--preset", "anml_cpu", "--method", "anml", "--image-size", "18", "--channels", "4",
                            "--nm-channels", "2", "--strides", "1", "1", "1"]
        return script, ["--method", users[0]]
    if script == "train_sine":
        users = method_fields.SINE_METHOD_FIELDS.get(dest, ("oml",))
        extra = ["--eval-runs", "1", "--eval-test-samples", "4"] if dest.startswith("eval_") and dest != "eval_runs" else []
        return script, ([] if "oml" in users else ["--method", users[0]]) + extra
    if script == "export":  # a baseline, whose RLN/PLN split --rln chooses
        return script, [str(REPO / "trained_models" / "sine_quick_pretraining.pt"), "{tmp}/out.pt"]
    return script, []


def _numeric_actions(script):
    parser = SCRIPTS[script].get_args_parser()
    table2_group = {a.dest for g in parser._action_groups if g.title.startswith("Table 2") for a in g._group_actions}
    for action in parser._actions:
        kind = getattr(action.type, "__name__", None)
        if kind not in ("int", "float"):
            continue
        if script in ("eval_omni", "table2") and (action.dest in table2_group) != (script == "table2"):
            continue  # each of evaluate_omniglot's two protocols tests its own flags
        if script == "table2" and action.dest in ("lr", "run_batch", "epochs"):
            continue
        yield action


def _bad_values(flag, kind) -> list[str]:
    values = ["nan", "inf", "-1"] if kind == "float" else ["-1", "1.5", HUGE]
    if flag not in ZERO_OK:
        values.append("0")
    return [v for v in values if not (v == HUGE and flag in HUGE_OK)]


def _good_value(script, action) -> str:
    """A value the flag accepts in its context: BASE's own, else its setting in the resolved config."""
    base, extra = _context(script, action.dest)
    argv = BASE[base] + extra
    for option in action.option_strings:
        if option in argv:
            return argv[argv.index(option) + 1]
    return {"seed": "1", "rank": "0", "lr": "0.01"}.get(action.dest, "1")


def _generated():
    cases = []
    for script in GENERATED:
        seen = set()
        for action in _numeric_actions(script):
            flag = action.option_strings[0]
            if flag in seen:
                continue
            seen.add(flag)
            base, extra = _context(script, action.dest)
            listed = action.nargs == "+"
            for value in _bad_values(flag, action.type.__name__):
                cases.append((base, extra + [flag, value], action.dest))
                if listed and value != "1.5":  # a list whose second member is bad (1.5: argparse's own refusal)
                    cases.append((base, extra + [flag, _good_value(script, action), value], action.dest))
    paths = [  # a file for a folder, a missing path
        *[(s, ["--results-dir", v], "results_dir") for s in ("train_sine", "eval_sine", "train_omni", "eval_omni",
                                                               "table2", "visualize") for v in ("{file}", "{file}/sub")],
        *[(s, ["--path", v], "path") for s in ("train_omni", "eval_omni", "table2", "visualize")
          for v in ("{file}", "{tmp}/missing")],
        *[(s, ["--cache-dir", "{file}"], "cache_dir") for s in ("train_omni", "eval_omni", "table2")],
        *[(s, ["--model", v], "model") for s in ("eval_sine", "eval_omni", "table2", "visualize")
          for v in ("{tmp}/missing.pt", "{tmp}")],
        ("eval_omni", ["--model", "{omni}", "{tmp}/missing.pt"], "model"),  # a list member
        *[(s, ["--resume", v], "resume") for s in ("train_sine", "train_omni") for v in ("{tmp}/missing", "{file}")],
        ("export", ["{tmp}/missing.pt", "{tmp}/out.pt"], "model"), ("export", ["{sine}", "{tmp}"], "out"),
    ]
    return cases + paths


GENERATED_CASES = _generated()


# How the evaluation protocols' own checks (experiment/evaluation/sine.py) name what a flag sets.
NAMED_AS = {"clip": "evaluation clamp", "update_step": "batches per function", "batch_size": "batch size"}


def _names_the_flag(err, script, dest) -> bool:
    """The refusal is about this flag: it names it (a spelling, its setting's name, the --eval-* group of
    the evaluation after training), or it is a memory estimate, which names the flags that size the
    largest part (the bad value among them or beside them), or it quotes the huge value."""
    parser = SCRIPTS[script].get_args_parser()
    spellings = {o for a in parser._actions if a.dest == dest for o in a.option_strings}
    words = {dest, dest.replace("_", " "), dest.replace("_", "-"), NAMED_AS.get(dest, dest)}
    if dest.startswith("eval_") and "(--eval-* flags)" in err:
        return True
    return (any(s in err for s in spellings | words) or "needs about" in err or HUGE in err
            or dest in ("model", "out", "path", "resume", "results_dir"))


@pytest.mark.parametrize("script, argv, dest", GENERATED_CASES, ids=[_id(c) for c in GENERATED_CASES])
def test_every_flag_refuses_bad_values(inputs, tmp_path, capsys, monkeypatch, script, argv, dest):
    if script == "train_omni" and "anml" in argv and "anml" not in OmniglotConfig.__dataclass_fields__["method"].metadata["choices"]:
        pytest.skip("no ANML in this checkout")
    err = _refused(capsys, monkeypatch, inputs, tmp_path, script, argv, "")
    assert _names_the_flag(err, script, dest), err


def test_the_table_covers_every_numeric_flag():
    """Each numeric flag of each script appears in the table, and as a list member when it takes lists."""
    single = {(script, argv[-2]) for script, argv, _ in GENERATED_CASES}
    member = {(script, argv[-3]) for script, argv, _ in GENERATED_CASES if len(argv) > 2}
    for script in GENERATED:
        for action in _numeric_actions(script):
            where = (_context(script, action.dest)[0], action.option_strings[0])
            assert where in single, where
            assert action.nargs != "+" or where in member, where
    assert len(GENERATED_CASES) > 300
