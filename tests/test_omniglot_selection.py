"""The meta-validation (selection) split: which classes, that meta-training with --selection-classes
never gathers one of their images, that evaluation with --selection-classes never opens an
evaluation image, and its refusals. Generated trees; the real-data test skips without the data."""
import dataclasses
import json

import numpy as np
import pytest
import torch

import evaluate_omniglot
import oml_omniglot
from datasets import omniglot
from datasets.omniglot_selection import (
    kept_classes,
    selection_alphabets,
    selection_classes,
    selection_split,
)
from experiment.checkpoint import load_checkpoint, save_checkpoint
from experiment.config import as_dict, resolve
from experiment.evaluation.features import feature_key
from experiment.omniglot_presets import OMNIGLOT_PRESETS, OmniglotConfig, build_model, config_from_checkpoint
from experiment.training import omniglot as training
from experiment.training.omniglot import sampling_layout
from tests.conftest import SHARED_OMNIGLOT, one_line_error
from tests.omniglot_fixtures import write_fake_both

# 6 alphabets x 3 characters; sorted: Armenian, Bengali, Futurama, Korean, Sanskrit, Tifinagh, so the
# selection alphabet (the fifth) is Sanskrit, classes 12-14. --class-split 14 puts two of them below
# the split and one above it: 12 kept classes below, 3 above.
N_FAKE, SELECTED = 18, [12, 13, 14]
TINY = ["--image-size", "14", "--channels", "4", "--strides", "2", "1", "--n-classes", str(N_FAKE),
        "--class-split", "14", "--no-progress", "--log-every", "1", "--save-every", "2", "--nonstandard-data"]
SENTINEL = 7  # a uniform grey no drawing has: a selection image made of it is recognised wherever it goes


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("omniglot")
    return write_fake_both(root, as_zip=True, n_alphabets=6, chars_per_alphabet=3, size=24)


def _names(n_alphabets: int) -> list[str]:
    return [f"A{a:02d}/character{c:02d}" for a in range(n_alphabets) for c in (1, 2)]


# --- the definition --------------------------------------------------------------------------------

def test_the_rule_is_every_tenth_alphabet_from_the_fifth():
    names = _names(30)
    assert selection_alphabets(names) == ("A04", "A14", "A24")
    assert selection_classes(names).tolist() == [8, 9, 28, 29, 48, 49]
    assert kept_classes(names, 30).tolist() == [c for c in range(30) if c not in (8, 9, 28, 29)]
    assert selection_alphabets(_names(4)) == ()


def test_fixture_selection_is_one_whole_alphabet(data):
    background = omniglot.load_omniglot(data, "background", 14, cache_dir=False, progress=False)
    split = selection_split(background)
    assert selection_classes(background.class_names).tolist() == SELECTED
    assert split.name == "selection" and split.n_classes == 3
    assert {name.split("/")[0] for name in split.class_names} == {"Sanskrit"}
    assert np.array_equal(split.images, background.images[SELECTED])
    with pytest.raises(omniglot.OmniglotDataError, match="97"):
        selection_classes(background.class_names, standard=True)


@pytest.mark.skipif(not (SHARED_OMNIGLOT / "images_background.zip").exists(), reason="no real Omniglot data")
def test_real_selection_is_the_three_alphabets():
    # The loader's own listing, without decoding 19,280 images: the names and order load_omniglot uses.
    source = omniglot._find_source(SHARED_OMNIGLOT, "background")
    names = [f"{a}/{c}" for a, c, _, _ in omniglot._list_characters(source, "background")]
    assert len(names) == 964
    assert selection_alphabets(names) == ("Asomtavruli_(Georgian)", "Greek", "N_Ko")
    ids = selection_classes(names, standard=True)
    expected = [*range(116, 156), *range(424, 448), *range(780, 813)]
    assert ids.tolist() == expected and len(ids) == 97
    kept = kept_classes(names, 963, standard=True)
    assert len(kept) == 866 and not set(kept) & set(expected)
    cfg = resolve(OmniglotConfig, OMNIGLOT_PRESETS, "oml2020", {"hold_out_selection": True})
    assert sampling_layout(cfg, kept) == (866, 417)  # 481 - 40 - 24 kept classes below the split


# --- meta-training never gathers a selection image --------------------------------------------------

@pytest.fixture
def poisoned(monkeypatch):
    """Selection images made of SENTINEL in the background split as meta-training loads it; counts
    every sentinel image that reaches an image bank or is gathered from one."""
    seen = {"bank": 0, "gathered": 0, "gathers": 0}
    real_load = training.load_omniglot

    def load(*args, **kwargs):
        split = real_load(*args, **kwargs)
        images = split.images.copy()
        images[selection_classes(split.class_names)] = SENTINEL
        return dataclasses.replace(split, images=images)

    def sentinel_images(uint8_images):
        return int((uint8_images == SENTINEL).flatten(1).all(1).sum())

    real_init, real_gather = training.ImageBank.__init__, training.ImageBank.gather

    def init(self, images, device):
        real_init(self, images, device)
        seen["bank"] += sentinel_images(self.images.flatten(0, 1))

    def gather(self, classes, drawers):
        x = real_gather(self, classes, drawers)
        seen["gathers"] += 1
        seen["gathered"] += sentinel_images((x * 255).round().to(torch.uint8).flatten(1))
        return x

    monkeypatch.setattr(training, "load_omniglot", load)
    monkeypatch.setattr(training.ImageBank, "__init__", init)
    monkeypatch.setattr(training.ImageBank, "gather", gather)
    return seen


def _train(data, tmp_path, *extra):
    argv = ["--preset", "cpu", "--path", str(data), "--cache-dir", str(data / "cache"), "--results-dir", str(tmp_path),
            *TINY, *extra]
    return oml_omniglot.main(oml_omniglot.get_args_parser().parse_args(argv))


@pytest.mark.parametrize("method", ["oml", "pretraining", "srnn", "maml-rep"])
def test_training_never_gathers_a_selection_image(data, tmp_path, poisoned, method):
    iid = ["--iid-batch", "64"] if method in ("pretraining", "srnn") else []  # other methods refuse it (unread)
    run = _train(data, tmp_path, "--method", method, "--steps", "4", *iid, "--selection-classes")
    assert poisoned["gathers"] >= 4 and poisoned["bank"] == 0 and poisoned["gathered"] == 0
    assert json.loads((run / "config.json").read_text())["hold_out_selection"] is True
    assert config_from_checkpoint(load_checkpoint(run)).hold_out_selection is True


def test_the_poison_is_seen_without_the_flag(data, tmp_path, poisoned):
    # The detector works: i.i.d. batches of 64 over 18 classes x 20 images meet the selection images.
    run = _train(data, tmp_path, "--method", "pretraining", "--steps", "4", "--iid-batch", "64")
    assert poisoned["bank"] == 60 and poisoned["gathered"] > 0
    assert config_from_checkpoint(load_checkpoint(run)).hold_out_selection is False


def test_resume_keeps_the_hold_out(data, tmp_path, poisoned):
    run = _train(data, tmp_path, "--steps", "2", "--selection-classes")
    oml_omniglot.main(oml_omniglot.get_args_parser().parse_args(
        ["--resume", str(run), "--steps", "4", "--no-progress", "--cache-dir", str(data / "cache"),
         "--nonstandard-data"]))
    payload = load_checkpoint(run)
    assert payload["step"] == 4 and config_from_checkpoint(payload).hold_out_selection is True
    assert poisoned["gathered"] == 0 and poisoned["bank"] == 0


def test_quick_eval_of_a_selection_run_checks_on_selection_classes(data, tmp_path, monkeypatch):
    real = omniglot._find_source
    monkeypatch.setattr(omniglot, "_find_source",
                        lambda root, split: pytest.fail("opened the evaluation split") if split == "evaluation"
                        else real(root, split))
    run = _train(data, tmp_path, "--steps", "2", "--selection-classes", "--quick-eval", "3")
    assert json.loads((run / "quick_eval.json").read_text())["split"] == "selection"


def test_layout_maps_the_split_to_the_kept_classes():
    cfg = resolve(OmniglotConfig, OMNIGLOT_PRESETS, "cpu", {"n_classes": N_FAKE, "class_split": 14,
                                                            "hold_out_selection": True})
    kept = np.setdiff1d(np.arange(N_FAKE), SELECTED)
    assert sampling_layout(cfg, kept) == (15, 12)
    with pytest.raises(ValueError, match="class ids"):
        training.make_training(cfg, "cpu", np.zeros((15, 20, 28, 28), np.uint8))  # rows of unknown classes


# --- evaluation never opens an evaluation image ----------------------------------------------------

def _checkpoint(tmp_path, **over) -> str:
    cfg = resolve(OmniglotConfig, OMNIGLOT_PRESETS, "cpu", {"image_size": 14, "channels": 4, "strides": (2, 1),
                                                            "n_outputs": 20, "n_classes": N_FAKE, "class_split": 14,
                                                            **over})
    torch.manual_seed(0)
    path = tmp_path / "oml.pt"
    config = as_dict(cfg)
    if "hold_out_selection" not in over:
        del config["hold_out_selection"]  # a checkpoint written before the field existed
    save_checkpoint(path, benchmark="omniglot", config=config, model=build_model(cfg), step=0)
    return str(path)


def _evaluate(data, tmp_path, *argv):
    args = evaluate_omniglot.get_args_parser().parse_args(
        [*argv, "--path", str(data), "--results-dir", str(tmp_path), "--cache-dir", str(tmp_path / "cache"),
         "--no-progress", "--nonstandard-data", "--runs", "2", "--search-runs", "1"])
    return json.loads((evaluate_omniglot.main(args) / "results.json").read_text())


def test_selection_evaluation_never_opens_the_evaluation_split(data, tmp_path, monkeypatch):
    ckpt = _checkpoint(tmp_path, hold_out_selection=True)
    test = _evaluate(data, tmp_path, "--model", ckpt, "--schedule", "2:3")
    assert test["split"] == "test" and test["protocol"]["classes_from"] == 18

    real = omniglot._find_source

    def find_source(root, split):
        assert split != "evaluation", "an evaluation image was about to be opened"
        return real(root, split)

    monkeypatch.setattr(omniglot, "_find_source", find_source)
    result = _evaluate(data, tmp_path, "--model", ckpt, "--schedule", "2:3", "--selection-classes")
    assert result["split"] == "selection" and result["schedule"] == [2, 3]
    assert result["protocol"]["classes_from"] == 3 and "selection classes" in result["label"]
    assert result["by_classes"]["3"]["lr_search"]["classes"] == [[0, 1, 2]]  # the search ran on them too
    assert result["features"]["key"] != test["features"]["key"]
    with pytest.raises(AssertionError, match="evaluation image"):  # the guard is live
        _evaluate(data, tmp_path, "--model", ckpt, "--schedule", "2")


def test_feature_key_names_the_split(data):
    background = omniglot.load_omniglot(data, "background", 14, cache_dir=False, progress=False)
    split = selection_split(background)
    same_pixels = dataclasses.replace(split, name="evaluation")
    rln = build_model(resolve(OmniglotConfig, OMNIGLOT_PRESETS, "cpu", {"image_size": 14, "channels": 4,
                                                                        "strides": (2, 1)})).rln
    assert feature_key(rln, split) != feature_key(rln, same_pixels)


# --- refusals --------------------------------------------------------------------------------------

def test_a_checkpoint_trained_on_the_selection_classes_is_refused(data, tmp_path, capsys):
    parser = evaluate_omniglot.get_args_parser()
    base = ["--path", str(data), "--results-dir", str(tmp_path), "--no-progress", "--nonstandard-data",
            "--selection-classes", "--schedule", "2", "--runs", "1", "--search-runs", "1"]
    for over in ({}, {"hold_out_selection": False}):  # absent (older checkpoints) or false
        ckpt = _checkpoint(tmp_path, **over)
        err = one_line_error(capsys, evaluate_omniglot.main, parser, ["--model", ckpt, *base])
        assert "meta-trained on the selection classes" in err
    assert not list(tmp_path.glob("*/omniglot_eval"))  # refused before any run folder
    # A random RLN has no meta-training to refuse.
    result = _evaluate(data, tmp_path, "--selection-classes", "--schedule", "2", "--preset", "cpu")
    assert result["split"] == "selection" and result["model"]["method"] == "random"


def test_a_schedule_beyond_the_97_classes_is_refused(tmp_path, capsys):
    # Refused before any data is read: the path does not even exist.
    err = one_line_error(capsys, evaluate_omniglot.main, evaluate_omniglot.get_args_parser(),
                         ["--selection-classes", "--schedule", "10:100", "--path", str(tmp_path / "nowhere"),
                          "--results-dir", str(tmp_path)])
    assert "100 classes" in err and "97 selection classes" in err
    assert evaluate_omniglot.SELECTION_SCHEDULE == (10, 50, 97)
