"""Caches never change a result: a damaged or foreign cache is rebuilt with a printed `warning:`
line, and what is computed equals the clean run. Also the official-size check of the data.

Feature cache (experiment/evaluation/features.py), image cache (datasets/omniglot.py), numba's cache of
the native kernel, and `--nonstandard-data`. All on small generated trees; the last test reads the real
data's listing and skips without it.
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

import evaluate_omniglot
import oml_omniglot
import visualize_representations
from datasets import omniglot as om
from experiment.evaluation import features as fc
from experiment.evaluation import native
from experiment.evaluation import omniglot as oe
from tests.conftest import REPO, SHARED_OMNIGLOT, one_line_error
from tests.omniglot_fixtures import fake_png, tiny_network_and_tree, write_fake_omniglot
from utils import bounds
from utils.cli import run_main

TINY = {"image_size": 12, "channels": 4, "strides": (2, 2), "n_outputs": 16, "n_classes": 8, "class_split": 4}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("reliable")
    data, cfg, net, ckpt = tiny_network_and_tree(root, TINY)
    split = om.load_omniglot(data, "evaluation", cfg.image_size, cache_dir=False, progress=False)
    with pytest.MonkeyPatch.context() as mp:  # leave the process-wide memory cache as other modules expect it
        mp.setattr(fc, "_MEMORY_CACHE", {})
        clean = fc.feature_bank(net.rln, split, cache_dir=False)
    return {"root": root, "data": data, "net": net, "ckpt": ckpt, "split": split, "clean": clean}


@pytest.fixture
def no_memory_cache(monkeypatch):
    """Each feature_bank call must go to disk, as a new process would."""
    monkeypatch.setattr(fc, "_MEMORY_CACHE", {})


def _warnings(capsys, fragment) -> list[str]:
    err = capsys.readouterr().err
    return [line for line in err.splitlines() if line.startswith("warning: ") and fragment in line]


# --- the feature cache ---------------------------------------------------------------------------

def _rewrite(path, change):
    data = torch.load(path, weights_only=True)
    change(data)
    torch.save(data, path)


def _flip_one_class(data):  # an exponent bit in every feature of class 3: the stored hash is kept
    data["train"][3].view(torch.int32).bitwise_xor_(1 << 30)


def _fewer_classes(data):  # a consistent file (hash and shapes redone) of the wrong size
    data["train"], data["test"] = data["train"][:5], data["test"][:5]
    data["shapes"] = {"train": list(data["train"].shape), "test": list(data["test"].shape)}
    data["sha256"] = fc.features_sha256(data["train"], data["test"])


def _no_hash(data):
    data.pop("sha256")


def _shapes_lie(data):
    data["shapes"]["train"][2] += 1


def _raw_byte_flip(path):
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))


FEATURE_DAMAGE = [
    ("bit flip in one class", lambda p: _rewrite(p, _flip_one_class), "corrupt"),
    ("right key, fewer classes", lambda p: _rewrite(p, _fewer_classes), "malformed"),
    ("no stored hash", lambda p: _rewrite(p, _no_hash), "corrupt"),
    ("stored shapes wrong", lambda p: _rewrite(p, _shapes_lie), "malformed"),
    ("raw byte flip", _raw_byte_flip, ""),
    ("truncated", lambda p: p.write_bytes(p.read_bytes()[:1000]), "unreadable"),
]


@pytest.mark.parametrize("damage, fragment", [row[1:] for row in FEATURE_DAMAGE], ids=[row[0] for row in FEATURE_DAMAGE])
def test_damaged_feature_cache_is_recomputed(tiny, tmp_path, capsys, no_memory_cache, damage, fragment):
    cache = tmp_path / "cache"
    rln, split = tiny["net"].rln, tiny["split"]
    fc.feature_bank(rln, split, cache_dir=cache)
    (path,) = cache.glob("omniglot_features_*.pt")
    damage(path)
    fc._MEMORY_CACHE.clear()
    capsys.readouterr()
    bank = fc.feature_bank(rln, split, cache_dir=cache)
    lines = _warnings(capsys, f"feature cache {path}")
    assert len(lines) == 1 and fragment in lines[0] and "recomputing" in lines[0], lines
    assert bank.source == "computed"
    assert torch.equal(bank.train, tiny["clean"].train) and torch.equal(bank.test, tiny["clean"].test)
    fc._MEMORY_CACHE.clear()  # the rewritten file is trusted again, silently
    again = fc.feature_bank(rln, split, cache_dir=cache)
    assert again.source == "disk" and torch.equal(again.train, tiny["clean"].train)
    assert not _warnings(capsys, "")


def test_flipped_feature_cache_does_not_change_the_evaluation(tiny, tmp_path, capsys, no_memory_cache):
    """The reported case, end to end: bits flipped in one class's cached features; the script's
    numbers equal the clean run's, with a warning, exit 0."""
    cache = tmp_path / "cache"

    def evaluate(name):
        argv = ["--model", str(tiny["ckpt"]), "--schedule", "4:8", "--runs", "3", "--search-runs", "2",
                "--path", str(tiny["data"]), "--cache-dir", str(cache), "--results-dir", str(tmp_path / name),
                "--no-progress", "--nonstandard-data", "--engine", "torch"]
        run = run_main(evaluate_omniglot.main, evaluate_omniglot.get_args_parser(), argv)
        return json.loads((run / "results.json").read_text())

    clean = evaluate("clean")
    (path,) = cache.glob("omniglot_features_*.pt")
    damaged = torch.load(path, weights_only=True)
    _flip_one_class(damaged)
    torch.save(damaged, path)
    fc._MEMORY_CACHE.clear()
    capsys.readouterr()
    again = evaluate("again")
    assert len(_warnings(capsys, "is corrupt")) == 1
    assert again["by_classes"] == clean["by_classes"]
    # The test can tell: the flipped features themselves give other numbers.
    flipped = fc.FeatureBank(damaged["train"], damaged["test"], "flipped")
    fixed = oe.Protocol(runs=3, lr=1e-3, engine="torch")
    assert (oe.evaluate(tiny["net"].pln, flipped, (8,), fixed)["by_classes"]
            != oe.evaluate(tiny["net"].pln, tiny["clean"], (8,), fixed)["by_classes"])


# --- the image cache -----------------------------------------------------------------------------

def _load(root, cache, **kw):
    return om.load_omniglot(root, "background", 28, cache_dir=cache, progress=False, **kw)


def _member(root):
    return root / "images_background" / "Bengali" / "character02" / "0006_01.png"


def _replace_png(root):  # another drawing under the same name
    _member(root).write_bytes(fake_png(999, 1, 105))


def _flip_cached_pixel(root, cache):
    npy = cache / "omniglot_background_28.npy"
    array = np.load(npy)
    array[1, 0, 5, 5] ^= 0xFF
    np.save(npy, array)


def _rezip(root, replace: bool):
    """The tree as images_background.zip, one member's PNG replaced when `replace`."""
    zipped = root.parent / f"{root.name}_zip_{'edited' if replace else 'real'}"
    zipped.mkdir(exist_ok=True)
    with zipfile.ZipFile(zipped / "images_background.zip", "w") as zf:
        for path in sorted((root / "images_background").rglob("*.png")):
            name = path.relative_to(root).as_posix()
            data = fake_png(999, 1, 105) if replace and path == _member(root) else path.read_bytes()
            zf.writestr(name, data)
    return zipped


@pytest.mark.parametrize("kind", ["folder", "zip"])
def test_cache_built_from_an_edited_copy_is_not_used_for_the_real_data(tmp_path, capsys, kind):
    """The reported case: a cache built from a copy where one PNG was replaced, then loaded with
    the real data (same names, same cache folder), must give the real pixels."""
    real = write_fake_omniglot(tmp_path / "real")
    copy = tmp_path / "copy"
    shutil.copytree(real, copy)
    _replace_png(copy)
    if kind == "zip":
        real, copy = _rezip(real, False), _rezip(real, True)
    cache = tmp_path / "cache"
    edited = _load(copy, cache)
    truth = _load(real, False)
    assert not np.array_equal(edited.images, truth.images)  # the copy really differs
    capsys.readouterr()
    loaded = _load(real, cache)
    assert np.array_equal(loaded.images, truth.images)
    lines = _warnings(capsys, "Omniglot cache")
    assert len(lines) == 1 and "stale" in lines[0] and "content differs" in lines[0], lines


@pytest.mark.parametrize("damage", ["replace a PNG", "flip a cached pixel"])
def test_warm_image_cache_follows_its_source(tmp_path, capsys, damage):
    root = write_fake_omniglot(tmp_path / "data")
    cache = tmp_path / "cache"
    warm = _load(root, cache)
    if damage == "replace a PNG":
        _replace_png(root)
    else:
        _flip_cached_pixel(root, cache)
    capsys.readouterr()
    loaded = _load(root, cache)
    truth = _load(root, False)
    assert np.array_equal(loaded.images, truth.images)
    assert len(_warnings(capsys, "rebuilding it")) == 1
    if damage == "replace a PNG":
        assert not np.array_equal(warm.images, truth.images)


def test_copied_tree_with_same_content_reuses_the_cache(tmp_path, capsys, monkeypatch):
    """New mtimes alone (a copy) fall back to the content hash, which matches: no rebuild."""
    root = write_fake_omniglot(tmp_path / "data")
    cache = tmp_path / "cache"
    warm = _load(root, cache)
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, copy_function=shutil.copyfile)  # copyfile: new mtimes
    monkeypatch.setattr(om, "_decode_png", lambda *a: pytest.fail("decoded instead of reusing the cache"))
    capsys.readouterr()
    assert np.array_equal(_load(copy, cache).images, warm.images)
    assert not _warnings(capsys, "")
    manifest = json.loads((cache / "omniglot_background_28.json").read_text())
    assert manifest["source"] == str((copy / "images_background").resolve())  # the new stat is remembered


def test_full_verification_catches_what_the_cheap_check_cannot(tmp_path, capsys, monkeypatch):
    """A PNG rewritten with the same size and its old mtime passes the size+mtime check (the
    documented limit); OML_VERIFY_DATA=1 compares the content and rebuilds."""
    root = write_fake_omniglot(tmp_path / "data")
    cache = tmp_path / "cache"
    warm = _load(root, cache)
    target = _member(root)
    old, st = target.read_bytes(), target.stat()
    other = next(p.read_bytes() for p in sorted(root.rglob("*.png")) if len(old) - p.stat().st_size > 0)
    target.write_bytes(other + b"\0" * (len(old) - len(other)))  # Pillow ignores bytes after IEND
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    truth = _load(root, False)
    assert not np.array_equal(truth.images, warm.images)
    assert np.array_equal(_load(root, cache).images, warm.images)  # cheap check: not detected
    monkeypatch.setenv(om.VERIFY_ENV, "1")
    capsys.readouterr()
    assert np.array_equal(_load(root, cache).images, truth.images)
    assert len(_warnings(capsys, "content differs")) == 1


# --- the native kernel (numba) -------------------------------------------------------------------

_CHILD = ("import sys; from experiment.evaluation import native, online_learner as ol; import torch, numpy as np; "
          "fn = native.kernel(); print('engine', fn is not None); "
          "g = torch.Generator().manual_seed(0); x = torch.rand(30, 8, generator=g) * (torch.rand(30, 8, generator=g) < 0.5); "
          "w, b = ol.train_native(fn, [torch.randn(5, 8, generator=g), torch.zeros(5)], x, torch.arange(30) % 5, "
          "np.arange(30), 0.01, 'adam'); print('sum', repr(float(w.double().sum())))")


def _child(cache):
    return subprocess.run([sys.executable, "-c", _CHILD], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_CACHE_DIR": str(cache)})


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


@pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba not installed: no native kernel to cache")
def test_damaged_numba_cache_is_rebuilt_not_a_crash(tmp_path):
    """numba caches the compiled kernel (under NUMBA_CACHE_DIR here; beside the source by default,
    never in the shared data cache). A damaged cache file makes a new process warn, recompile and
    give the same numbers; the next process loads the repaired cache silently."""
    first = _child(tmp_path)
    assert "engine True" in first.stdout, first.stderr
    data = sorted(tmp_path.rglob("oml_online.online_linear-*.nbc"))
    assert data, list(tmp_path.rglob("*"))
    for path in data:
        _truncate(path)
    second = _child(tmp_path)
    assert second.returncode == 0 and "engine True" in second.stdout, (second.returncode, second.stderr)
    assert "warning: the native online learner did not load" in second.stderr and "compiling again" in second.stderr
    assert second.stdout.splitlines()[-1] == first.stdout.splitlines()[-1]  # the same weights
    third = _child(tmp_path)
    assert "warning" not in third.stderr and third.stdout == first.stdout


# A kernel cache others can write would let them run code as the evaluating user: numba loads the
# compiled file it finds there (it used to, from a shared world-writable NUMBA_CACHE_DIR).

def _folder(path, mode):
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    return path


def test_private_folder_rule(tmp_path):
    private = _folder(tmp_path / "private", 0o700)
    assert bounds.private_folder_problem(private) is None
    assert "is writable by other users (mode drwxrwxrwx)" in bounds.private_folder_problem(_folder(tmp_path / "open", 0o777))
    assert "(mode drwxrwx---)" in bounds.private_folder_problem(_folder(tmp_path / "group", 0o770))
    # under a sticky shared folder (as /tmp) a folder of one's own is private; under a plain shared one it is not
    sticky, plain = _folder(tmp_path / "sticky", 0o1777), _folder(tmp_path / "plain", 0o777)
    assert bounds.private_folder_problem(_folder(sticky / "mine", 0o755)) is None
    assert f"'{plain}' is writable by other users" in bounds.private_folder_problem(_folder(plain / "mine", 0o755))
    link = tmp_path / "link"
    link.symlink_to(plain / "mine")  # judged where it leads
    assert f"'{plain}' is writable by other users" in bounds.private_folder_problem(link)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to give a file to another user")
def test_private_folder_rule_owners(tmp_path):
    sticky = _folder(tmp_path / "sticky", 0o1777)
    planted = _folder(sticky / "numba", 0o755)  # made by another user before this one's first run
    os.chown(planted, 54321, -1)
    assert "belongs to another user (uid 54321)" in bounds.private_folder_problem(planted)
    mine = _folder(tmp_path / "mine", 0o700)
    (mine / "kernel.nbi").write_bytes(b"planted")
    os.chown(mine / "kernel.nbi", 54321, -1)
    assert "kernel.nbi' belongs to another user" in bounds.private_folder_problem(mine)


@pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba not installed: no native kernel to cache")
def test_a_shared_kernel_cache_is_refused_before_anything_is_written(tiny, tmp_path):
    shared = _folder(tmp_path / "shared", 0o777)
    out = subprocess.run([sys.executable, "evaluate_omniglot.py", "--model", str(tiny["ckpt"]), "--path", str(tiny["data"]),
                          "--schedule", "2", "--runs", "1", "--lr", "0.01", "--results-dir", str(tmp_path / "r"),
                          "--cache-dir", str(tmp_path / "c"), "--no-progress", "--nonstandard-data"],
                         cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_CACHE_DIR": str(shared)})
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: the native engine's kernel cache") and out.stderr.count("\n") == 1, out.stderr
    assert f"'{shared}' is writable by other users" in out.stderr and "NUMBA_CACHE_DIR" in out.stderr
    assert not (tmp_path / "r").exists() and not (tmp_path / "c").exists()
    assert not list(shared.rglob("*.nbi"))  # nothing was compiled into it, nor loaded from it


@pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba not installed: no native kernel to cache")
def test_numba_without_its_jit_is_said(monkeypatch, capsys):
    """NUMBA_DISABLE_JIT=1 made the evaluation ~1500x slower without a word."""
    import numba

    # Imported and compiled with the JIT on first: a first import under DISABLE_JIT would leave plain
    # Python functions in sys.modules for every later test of this process (~1500x slower evaluations),
    # and a first compile under it fails (it did in a fresh checkout, with no numba cache beside the source).
    from experiment.evaluation import oml_online  # noqa: F401
    monkeypatch.setattr(native, "_KERNEL", None)
    assert native.kernel() is not None
    capsys.readouterr()
    monkeypatch.setattr(native, "_KERNEL", None)
    monkeypatch.setattr(numba.config, "DISABLE_JIT", True)
    capsys.readouterr()
    native.kernel()
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "NUMBA_DISABLE_JIT is set" in warnings[0], warnings
    monkeypatch.setattr(numba.config, "DISABLE_JIT", False)
    monkeypatch.setattr(native, "_KERNEL", None)
    native.kernel()
    assert "warning" not in capsys.readouterr().err


def test_evaluation_writes_no_code_into_the_data_cache(tiny, tmp_path):
    """What users share (--cache-dir / .oml_cache) holds data only: no compiled kernel is built or
    loaded from there, so write access to it cannot run code in someone else's evaluation."""
    cache = tmp_path / "shared_cache"
    run_main(evaluate_omniglot.main, evaluate_omniglot.get_args_parser(),
             ["--model", str(tiny["ckpt"]), "--path", str(tiny["data"]), "--schedule", "2", "--runs", "1",
              "--lr", "0.01", "--results-dir", str(tmp_path / "r"), "--cache-dir", str(cache), "--no-progress",
              "--nonstandard-data"])
    written = [p for p in cache.rglob("*") if p.is_file()]
    assert written and all(p.suffix in (".npy", ".json", ".pt") for p in written), written
    assert not list(cache.glob("kernels*"))


# --- official class counts -----------------------------------------------------------------------

_script_error = one_line_error


@pytest.mark.parametrize("script", ["evaluate_omniglot", "oml_omniglot", "visualize_representations"])
def test_non_standard_tree_needs_the_flag(tiny, tmp_path, capsys, script):
    common = ["--path", str(tiny["data"]), "--results-dir", str(tmp_path / "results"), "--no-progress"]
    argv = {"evaluate_omniglot": ["--model", str(tiny["ckpt"]), "--schedule", "2", "--cache-dir", str(tmp_path / "c")],
            "oml_omniglot": ["--preset", "cpu", "--cache-dir", str(tmp_path / "c")],
            "visualize_representations": ["--model", str(tiny["ckpt"])]}[script]
    module = {"evaluate_omniglot": evaluate_omniglot, "oml_omniglot": oml_omniglot,
              "visualize_representations": visualize_representations}[script]
    err = _script_error(capsys, module.main, module.get_args_parser(), argv + common)
    assert "has 8 classes" in err and "official release has" in err and "--nonstandard-data" in err
    assert not (tmp_path / "results").exists() and not (tmp_path / "c").exists()  # nothing written


@pytest.mark.parametrize("split, official", [("background", 964), ("evaluation", 659)])
def test_class_count_rule(tmp_path, monkeypatch, split, official):
    """With the official counts scaled down to the fixture's 12 classes: 12 passes, a tree missing
    an alphabet (8) or with an extra one (16) does not, unless standard=False."""
    monkeypatch.setitem(om.OFFICIAL_CLASSES, split, 12)
    for n_alphabets, ok in ((3, True), (2, False), (4, False)):
        root = write_fake_omniglot(tmp_path / f"{split}{n_alphabets}", n_alphabets=n_alphabets, split=f"images_{split}")
        if ok:
            om.load_omniglot(root, split, 12, cache_dir=False, progress=False, standard=True)
        else:
            with pytest.raises(om.OmniglotDataError, match=f"has {4 * n_alphabets} classes.*official release has 12"):
                om.load_omniglot(root, split, 12, cache_dir=False, progress=False, standard=True)
        om.load_omniglot(root, split, 12, cache_dir=False, progress=False, standard=False)


@pytest.mark.skipif(not (SHARED_OMNIGLOT / "images_evaluation.zip").exists(), reason="no real Omniglot data")
def test_real_data_has_the_official_counts():
    for split, official in om.OFFICIAL_CLASSES.items():
        source = om._find_source(SHARED_OMNIGLOT, split)
        assert len(om._list_characters(source, split)) == official
