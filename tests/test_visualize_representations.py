"""Representation statistics on hand-made matrices, and visualize_representations.py end to end
on a tiny generated Omniglot tree and a tiny sine checkpoint (in-process, CPU, seconds)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import visualize_representations as vr
from analysis import representation_stats as rs
from experiment.checkpoint import save_checkpoint
from experiment.config import as_dict, resolve
from experiment.omniglot_presets import OmniglotConfig
from experiment.omniglot_presets import build_model as build_omniglot_model
from experiment.sine_presets import SINE_PRESETS, SineConfig, build_model
from model.networks import build_omniglot_net
from tests.conftest import REPO
from tests.omniglot_fixtures import write_fake_omniglot
from utils.errors import UserError

# 4 inputs x 5 units; unit 4 is never active, unit 0 always.
HAND = np.array([[1.0, 0.0, 2.0, 0.0, 0.0],
                 [0.5, 0.0, 0.0, 0.0, -1.0],
                 [3.0, 1.0, 0.0, 0.0, 0.0],
                 [0.1, -2.0, 0.0, 7.0, 0.0]])


# --- statistics -------------------------------------------------------------------------------

def test_statistics_of_a_hand_made_matrix():
    active = rs.binarise(HAND)
    assert active.dtype == np.bool_ and active.sum() == 7
    np.testing.assert_array_equal(rs.instance_activity(HAND), [2 / 5, 1 / 5, 2 / 5, 2 / 5])
    np.testing.assert_array_equal(rs.lifetime_activity(HAND), [1.0, 0.25, 0.25, 0.25, 0.0])
    assert rs.instance_sparsity(HAND) == pytest.approx(7 / 20, abs=1e-15)
    assert not hasattr(rs, "lifetime_sparsity")  # = instance sparsity by construction: not reported
    assert rs.dead_units(HAND) == 0.2
    hist = rs.activity_histogram(HAND, bins=4)
    assert hist["counts"] == [1, 3, 0, 1] and hist["n_dead"] == 1 and hist["n_units"] == 5
    assert hist["edges"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    summary = rs.summarise(torch.tensor(HAND))  # tensors are accepted too
    assert summary["instance_sparsity"] == 0.35 and summary["dead_units"] == 0.2 and summary["n_dead_units"] == 1
    assert summary["n_inputs"] == 4 and summary["representation_size"] == 5
    assert summary["instance_activity_min_max"] == [0.2, 0.4]


def test_statistics_extremes_and_threshold():
    assert rs.instance_sparsity(np.zeros((3, 4))) == 0.0 and rs.dead_units(np.zeros((3, 4))) == 1.0
    assert rs.instance_sparsity(np.ones((3, 4))) == 1.0 and rs.dead_units(np.ones((3, 4))) == 0.0
    assert rs.binarise(HAND, threshold=1.0).sum() == 3  # only 2.0, 3.0 and 7.0 exceed 1
    assert rs.binarise(np.array([[True, False]])).tolist() == [[True, False]]
    with pytest.raises(ValueError):
        rs.summarise(np.zeros(5))


def test_map_shapes():
    assert rs.map_shape(2304) == (32, 72)  # the original's reshape
    assert rs.map_shape(3136) == (56, 56)  # the cpu preset (64 x 7 x 7)
    assert rs.map_shape(400) == (20, 20) and rs.map_shape(300) == (15, 20) and rs.map_shape(64) == (8, 8)
    assert rs.map_shape(7) == (3, 3)  # prime: padded near-square
    assert rs.map_shape(2 * 101) == (14, 15)  # 2 x 101 is too wide
    m = rs.to_map(np.arange(7))
    assert m.shape == (3, 3) and np.isnan(m[2, 1:]).all() and m[1, 0] == 3
    np.testing.assert_array_equal(rs.to_map(np.arange(2304)).ravel(), np.arange(2304))


def _svd_projection(x, k=2):
    """The rows of x on their top-k principal directions, from a plain SVD of the centred matrix."""
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:k].T


def test_projection_is_the_principal_components():
    rng = np.random.default_rng(0)
    # distinct variances per direction, so the top two directions are well defined
    x = rng.normal(size=(30, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1]) + 7.0
    points = rs.project_2d(x)
    want = _svd_projection(x)
    assert points.shape == (30, 2)
    for j in range(2):  # each component up to its sign
        sign = np.sign(points[:, j] @ want[:, j])
        np.testing.assert_allclose(points[:, j], sign * want[:, j], atol=1e-9)
    assert np.var(points[:, 0]) > np.var(points[:, 1]) > 0
    # one unit: that unit, centred, on the x axis
    one = rs.project_2d(x[:, :1])
    np.testing.assert_allclose(np.abs(one[:, 0]), np.abs(x[:, 0] - x[:, 0].mean()), atol=1e-9)
    assert np.all(one[:, 1] == 0)
    assert rs.project_2d(x[:1]).tolist() == [[0.0, 0.0]]
    tsne = rs.project_2d(x, "tsne")
    assert tsne.shape == (30, 2) and np.all(np.isfinite(tsne)) and np.array_equal(tsne, rs.project_2d(x, "tsne"))
    with pytest.raises(ValueError, match="unknown projection"):
        rs.project_2d(x, "umap")


def test_table():
    row = {"label": "OML", "instance_sparsity": 0.038, "dead_units": 0.0,
           "n_inputs": 18000, "representation_size": 2304}
    table = rs.format_table([row])
    assert table.splitlines()[0].startswith("| model") and "| 3.8%" in table and "| 0.0%" in table


# --- the script -------------------------------------------------------------------------------

def _omniglot_checkpoint(path, method="oml", seed=0):
    cfg = OmniglotConfig(preset="tiny", method=method, image_size=20, channels=4, strides=(2, 2), n_outputs=12,
                         n_classes=12, class_split=None, tasks=1)
    torch.manual_seed(seed)
    net = build_omniglot_model(cfg)
    save_checkpoint(path, benchmark="omniglot", config=as_dict(cfg), model=net, step=0)
    return path


def _sine_checkpoint(path):
    cfg = resolve(SineConfig, SINE_PRESETS, "oml2020", {"width": 16})
    torch.manual_seed(0)
    save_checkpoint(path, benchmark="sine", config=as_dict(cfg), model=build_model(cfg), step=0)
    return path


@pytest.fixture
def omniglot_root(tmp_path, monkeypatch):
    monkeypatch.setenv("OML_CACHE_DIR", str(tmp_path / "cache"))
    return write_fake_omniglot(tmp_path / "omniglot", n_alphabets=3, chars_per_alphabet=4)


def run_script(tmp_path, *argv):
    args = vr.get_args_parser().parse_args(["--results-dir", str(tmp_path / "results"), "--no-progress",
                                            "--nonstandard-data", *argv])
    return vr.main(args)


def test_seed_readme_command_on_omniglot(tmp_path, omniglot_root, capsys):
    ckpt = _omniglot_checkpoint(tmp_path / "oml.pt")
    run = run_script(tmp_path, "--name", "MRCL_rep_study", "--model", str(ckpt), "--data-path", str(omniglot_root))
    assert run.parent.name == "omniglot" and run.name == "MRCL_rep_study_1"
    for name in ("instances_oml_tiny.png", "instances.png", "average_activation.png", "histogram.png",
                 "projection.png", "statistics.json", "config.json", "metadata.json"):
        assert (run / name).is_file(), name
    stats = json.loads((run / "statistics.json").read_text())
    (model,) = stats["models"]
    assert model["label"] == "oml (tiny)" and model["model"]["method"] == "oml" and len(model["model"]["sha256"]) == 64
    assert model["n_inputs"] == 12 * 20 and model["representation_size"] == 4 * 4 * 4
    assert 0 < model["instance_sparsity"] < 1 and "lifetime_sparsity" not in model
    assert sum(model["histogram"]["counts"]) == 64
    # the numbers are what the library gives on the same images
    from datasets.omniglot import load_omniglot, to_float
    split = load_omniglot(omniglot_root, "background", 20)
    net = build_omniglot_net(4, 20, (2, 2), 0, 12)
    net.load_state_dict(torch.load(ckpt, weights_only=True)["state_dict"])
    with torch.no_grad():
        reps = net.rln(to_float(split.images.reshape(-1, 20, 20)))
    assert model["instance_sparsity"] == rs.summarise(reps)["instance_sparsity"]
    assert model["dead_units"] == rs.summarise(reps)["dead_units"]
    out = capsys.readouterr().out
    assert "| model" in out and "oml (tiny)" in out


def test_several_models_side_by_side_with_subset_and_random(tmp_path, omniglot_root, capsys):
    paths = [_omniglot_checkpoint(tmp_path / f"{m}.pt", m, seed=i) for i, m in enumerate(("oml", "pretraining", "srnn"))]
    run = run_script(tmp_path, "--model", *map(str, paths), "--add-random", "--labels", "OML", "Pretraining", "SR-NN",
                     "--path", str(omniglot_root), "--images", "50", "--maps", "8", "--classes", "3", "--binary")
    stats = json.loads((run / "statistics.json").read_text())
    assert [m["label"] for m in stats["models"]] == ["OML", "Pretraining", "SR-NN", "random init"]
    assert all(m["n_inputs"] == 50 for m in stats["models"])
    assert stats["models"][-1]["model"]["method"] == "random"
    assert len({m["instance_sparsity"] for m in stats["models"]}) > 1
    assert (run / "instances_SR_NN.png").is_file() and (run / "projection.png").is_file()
    again = run_script(tmp_path, "--model", *map(str, paths), "--add-random", "--labels", "OML", "Pretraining", "SR-NN",
                       "--path", str(omniglot_root), "--images", "50", "--maps", "8", "--classes", "3")
    assert again.name == "representations_2"  # never overwritten
    same = json.loads((again / "statistics.json").read_text())
    assert [m["instance_sparsity"] for m in same["models"]] == [m["instance_sparsity"] for m in stats["models"]]


def test_default_labels_tell_equal_methods_apart(tmp_path, omniglot_root):
    _omniglot_checkpoint(tmp_path / "a" / "checkpoint.pt")
    b = _omniglot_checkpoint(tmp_path / "b" / "checkpoint.pt", seed=1)
    run = run_script(tmp_path, "--model", str(tmp_path / "a"), str(b), "--path", str(omniglot_root), "--images", "20")
    labels = [m["label"] for m in json.loads((run / "statistics.json").read_text())["models"]]
    assert labels == ["oml (tiny) a", "oml (tiny) b"]


def test_sine_checkpoint(tmp_path):
    ckpt = _sine_checkpoint(tmp_path / "sine.pt")
    run = run_script(tmp_path, "--model", str(ckpt), str(ckpt), "--images", "600", "--name", "sine_rep")
    assert run.parent.name == "sine"
    stats = json.loads((run / "statistics.json").read_text())
    assert [m["representation_size"] for m in stats["models"]] == [16, 16]
    assert stats["models"][0]["n_inputs"] == 600 and stats["models"][0]["inputs"]["capacity"] == 50
    assert stats["models"][0]["instance_sparsity"] == stats["models"][1]["instance_sparsity"]
    assert (run / "projection.png").is_file() and (run / "histogram.png").is_file()


def test_errors(tmp_path, omniglot_root):
    with pytest.raises(UserError, match="give --model"):
        run_script(tmp_path)
    sine, omni = _sine_checkpoint(tmp_path / "s.pt"), _omniglot_checkpoint(tmp_path / "o.pt")
    with pytest.raises(UserError, match="cannot compare omniglot and sine"):
        run_script(tmp_path, "--model", str(omni), str(sine), "--path", str(omniglot_root))
    with pytest.raises(UserError, match="2 --labels for 1"):
        run_script(tmp_path, "--model", str(omni), "--labels", "a", "b")
    with pytest.raises(UserError, match="no checkpoint"):
        run_script(tmp_path, "--model", str(tmp_path / "missing"))
    with pytest.raises(UserError, match="no Omniglot data"):
        run_script(tmp_path, "--model", str(omni), "--path", str(tmp_path / "nowhere"))
    assert not (tmp_path / "results").exists()  # nothing is created before the inputs are in hand


def test_errors_are_one_line_from_the_command_line(tmp_path):
    out = subprocess.run([sys.executable, "visualize_representations.py", "--results-dir", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and out.stderr.startswith("error: give --model"), out.stderr
