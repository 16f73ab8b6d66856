"""datasets/omniglot.py: layouts, order, drawer split, the verified cache, error messages.

Everything runs on a generated tree (tests/omniglot_fixtures.py) except the last test, which
reads ../shared/omniglot and skips when it is absent.
"""
import hashlib
import io
import json
import logging
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datasets import omniglot as om
from datasets.omniglot import N_DRAWERS, TRAIN_DRAWERS, OmniglotDataError, load_both, load_omniglot, to_float

try:
    from omniglot_fixtures import alphabet_names, fake_png, write_fake_both, write_fake_omniglot
except ImportError:  # tests/ imported as a package
    from tests.omniglot_fixtures import alphabet_names, fake_png, write_fake_both, write_fake_omniglot

REAL_OMNIGLOT = Path(__file__).resolve().parents[2] / "shared" / "omniglot"
N_CLASSES = 3 * 4  # the fixture's default: 3 alphabets x 4 characters


def load(root, split="background", size=105, cache_dir=False, **kw):
    return load_omniglot(root, split, size, cache_dir=cache_dir, progress=False, **kw)


def pil_reference(png: bytes, size: int) -> np.ndarray:
    im = Image.open(io.BytesIO(png)).convert("L")
    if im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR)
    return np.asarray(im)


def fail_decoding(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("decoded although a valid cache exists")
    monkeypatch.setattr(om, "_decode_png", boom)


def rewrite_zip(path: Path, replace: dict, compression=zipfile.ZIP_DEFLATED):
    """Rewrite a zip, replacing members' bytes (None drops the member)."""
    with zipfile.ZipFile(path) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            data = replace.get(name, data)
            if data is not None:
                zf.writestr(name, data)


def first_file(root: Path, alphabet="Korean", char="character02", drawer=5) -> Path:
    folder = root / "images_background" / alphabet / char
    return next(folder.glob(f"*_{drawer:02d}.png"))


# ---------------------------------------------------------------------------------------------
# Layouts, order, drawers


def test_folder_zip_and_omniglot_py_nesting_give_identical_splits(tmp_path):
    roots = {
        "folder": write_fake_omniglot(tmp_path / "folder"),
        "zip": write_fake_omniglot(tmp_path / "zip", as_zip=True),
        "nested folder": write_fake_omniglot(tmp_path / "nf" / "omniglot-py").parent,
        "nested zip": write_fake_omniglot(tmp_path / "nz" / "omniglot-py", as_zip=True).parent,
    }
    assert not (roots["zip"] / "images_background").exists()
    splits = {kind: load(root, size=28) for kind, root in roots.items()}
    ref = splits["folder"]
    assert ref.images.shape == (N_CLASSES, N_DRAWERS, 28, 28) and ref.images.dtype == np.uint8
    for kind, split in splits.items():
        assert np.array_equal(split.images, ref.images), kind
        assert split.class_names == ref.class_names and split.char_ids == ref.char_ids, kind


def test_classes_are_sorted_and_every_image_sits_at_its_drawer(tmp_path):
    split = load(write_fake_omniglot(tmp_path))
    created = [(a, f"character{c:02d}") for a in alphabet_names(3) for c in range(1, 5)]
    ids = {f"{a}/{c}": i + 1 for i, (a, c) in enumerate(created)}  # ids run in creation order
    expected = sorted(f"{a}/{c}" for a, c in created)
    assert expected != [f"{a}/{c}" for a, c in created]  # the fixture does exercise sorting
    assert split.name == "background" and split.image_size == 105
    assert list(split.class_names) == expected
    assert list(split.char_ids) == [ids[name] for name in expected]
    for c, char_id in enumerate(split.char_ids):
        for d in range(N_DRAWERS):
            assert np.array_equal(split.images[c, d], pil_reference(fake_png(char_id, d + 1), 105))


def test_marked_drawer_lands_in_test_images(tmp_path):
    root = write_fake_omniglot(tmp_path)
    marked = first_file(root, "Korean", "character02", drawer=17)
    Image.new("1", (105, 105), 0).save(marked)  # all black: unlike any fixture image
    split = load(root)
    c = split.class_names.index("Korean/character02")
    assert (split.images[c, 16] == 0).all()
    black = (split.images == 0).all(axis=(2, 3))
    assert black.sum() == 1
    train, test = split.train_images(), split.test_images()
    assert TRAIN_DRAWERS == 15 and N_DRAWERS == 20
    assert train.shape == (N_CLASSES, 15, 105, 105) and test.shape == (N_CLASSES, 5, 105, 105)
    assert (test[c, 1] == 0).all() and not black[:, :15].any()
    # One-bit images: white background 255, strokes 0, not inverted.
    assert set(np.unique(split.images)) == {0, 255}
    assert (split.images[~black][:, 0, 0] == 255).all()


@pytest.mark.parametrize("size", [28, 84])
def test_resize_is_pillow_bilinear_of_the_grey_image(tmp_path, size):
    split = load(write_fake_omniglot(tmp_path), size=size)
    c = 5
    ref = pil_reference(fake_png(split.char_ids[c], 3), size)
    assert np.array_equal(split.images[c, 2], ref)
    assert split.images.shape == (N_CLASSES, N_DRAWERS, size, size)


def test_both_splits_and_split_names(tmp_path):
    root = write_fake_both(tmp_path, chars_per_alphabet=2)
    background, evaluation = load_both(root, image_size=28, cache_dir=False, progress=False)
    assert (background.name, evaluation.name) == ("background", "evaluation")
    assert sorted(background.char_ids) == list(range(1, 7))
    assert sorted(evaluation.char_ids) == list(range(7, 13))
    again = load(root, split="images_evaluation", size=28)
    assert np.array_equal(again.images, evaluation.images)
    with pytest.raises(ValueError, match="split"):
        load(root, split="train")
    with pytest.raises(ValueError, match="image_size"):
        load(root, size=0)


def test_to_float(tmp_path):
    images = load(write_fake_omniglot(tmp_path), size=28).images
    x = to_float(images[:2, :3])
    assert x.dtype == torch.float32 and x.shape == (2, 3, 1, 28, 28)
    assert x.min() >= 0.0 and x.max() == 1.0
    assert torch.equal(x[:, :, 0], torch.from_numpy(images[:2, :3]).float() / 255)
    assert torch.equal(to_float(torch.from_numpy(images[:2, :3])), x)
    frozen = images[0].copy()
    frozen.flags.writeable = False
    assert to_float(frozen).shape == (20, 1, 28, 28)  # read-only arrays work (no torch warning)
    with pytest.raises(TypeError, match="uint8"):
        to_float(images.astype(np.float32))


# ---------------------------------------------------------------------------------------------
# Cache


def test_cache_manifest_and_warm_load(tmp_path, monkeypatch):
    root = write_fake_omniglot(tmp_path / "data")
    cache = tmp_path / "cache"
    cold = load(root, size=28, cache_dir=cache)
    npy, manifest_path = cache / "omniglot_background_28.npy", cache / "omniglot_background_28.json"
    assert sorted(p.name for p in cache.iterdir()) == [manifest_path.name, npy.name]  # no temps
    manifest = json.loads(manifest_path.read_text())
    assert manifest["source"] == str((root / "images_background").resolve())
    assert manifest["source_kind"] == "folder"
    assert (manifest["n_classes"], manifest["images_per_class"]) == (N_CLASSES, 20)
    assert manifest["image_size"] == 28 and "BILINEAR" in manifest["resize_method"]
    assert manifest["pillow_version"] == Image.__version__
    assert manifest["class_names"] == list(cold.class_names)
    assert manifest["char_ids"] == list(cold.char_ids)
    assert manifest["format_version"] == om.CACHE_FORMAT_VERSION
    stored = np.load(npy)
    assert manifest["sha256"] == hashlib.sha256(stored.tobytes()).hexdigest()
    assert np.array_equal(stored, cold.images)

    fail_decoding(monkeypatch)
    warm = load(root, size=28, cache_dir=cache)
    assert np.array_equal(warm.images, cold.images) and warm.class_names == cold.class_names
    # The source kind does not matter: the same images as a zip reuse the same cache.
    zipped = write_fake_omniglot(tmp_path / "zipped", as_zip=True)
    assert np.array_equal(load(zipped, size=28, cache_dir=cache).images, cold.images)


def _truncate_npy(npy, manifest):
    data = npy.read_bytes()
    npy.write_bytes(data[: len(data) // 2])


def _flip_pixel(npy, manifest):
    images = np.load(npy)
    images[3, 4, 5, 6] ^= 0xFF
    np.save(npy, images)


def _bad_json(npy, manifest):
    manifest.write_text('{"format_version": 1, "sha2')


def _rename_class(npy, manifest):
    m = json.loads(manifest.read_text())
    m["class_names"][0] = "Bengali/character99"
    manifest.write_text(json.dumps(m))


def _other_pillow(npy, manifest):
    m = json.loads(manifest.read_text())
    m["pillow_version"] = "1.0"
    manifest.write_text(json.dumps(m))


def _wrong_hash(npy, manifest):
    m = json.loads(manifest.read_text())
    m["sha256"] = "0" * 64
    manifest.write_text(json.dumps(m))


def _wrong_shape(npy, manifest):
    np.save(npy, np.zeros((2, 20, 28, 28), np.uint8))


def _drop_manifest(npy, manifest):
    manifest.unlink()


@pytest.mark.parametrize("damage", [_truncate_npy, _flip_pixel, _bad_json, _rename_class,
                                    _other_pillow, _wrong_hash, _wrong_shape, _drop_manifest])
def test_damaged_cache_is_rebuilt_with_a_warning(tmp_path, monkeypatch, caplog, damage):
    root = write_fake_omniglot(tmp_path / "data")
    cache = tmp_path / "cache"
    good = load(root, size=28, cache_dir=cache)
    damage(cache / "omniglot_background_28.npy", cache / "omniglot_background_28.json")
    with caplog.at_level(logging.WARNING, logger=om.__name__):
        rebuilt = load(root, size=28, cache_dir=cache)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "rebuilding" in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage()
    assert np.array_equal(rebuilt.images, good.images)
    fail_decoding(monkeypatch)  # and the rebuilt cache is trusted again
    assert np.array_equal(load(root, size=28, cache_dir=cache).images, good.images)


def test_cache_of_other_data_is_not_trusted(tmp_path, caplog):
    cache = tmp_path / "cache"
    load(write_fake_omniglot(tmp_path / "small"), size=28, cache_dir=cache)
    bigger = write_fake_omniglot(tmp_path / "big", n_alphabets=4)
    with caplog.at_level(logging.WARNING, logger=om.__name__):
        split = load(bigger, size=28, cache_dir=cache)
    assert split.images.shape[0] == 16 and "stale" in caplog.text


def test_each_image_size_has_its_own_cache_file(tmp_path, monkeypatch):
    root = write_fake_omniglot(tmp_path / "data")
    cache = tmp_path / "cache"
    small, large = load(root, size=28, cache_dir=cache), load(root, size=105, cache_dir=cache)
    assert {p.name for p in cache.glob("*.npy")} == {"omniglot_background_28.npy",
                                                     "omniglot_background_105.npy"}
    fail_decoding(monkeypatch)
    assert np.array_equal(load(root, size=28, cache_dir=cache).images, small.images)
    assert np.array_equal(load(root, size=105, cache_dir=cache).images, large.images)


def test_unwritable_cache_dir_still_returns_data_and_warns_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(om, "_warned_unwritable", set())
    root = write_fake_both(tmp_path / "data")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger=om.__name__):
        background, evaluation = load_both(root, 28, cache_dir=blocker / "cache", progress=False)
        load(root, size=28, cache_dir=blocker / "cache")
    assert background.images.shape == evaluation.images.shape == (N_CLASSES, 20, 28, 28)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot write" in warnings[0]


def test_default_cache_dir_comes_from_the_environment(tmp_path, monkeypatch):
    root = write_fake_omniglot(tmp_path / "data")
    monkeypatch.setenv("OML_CACHE_DIR", str(tmp_path / "env_cache"))
    load(root, size=28, cache_dir=None)
    assert (tmp_path / "env_cache" / "omniglot_background_28.json").is_file()


# ---------------------------------------------------------------------------------------------
# Errors: one line, naming the file and what to do


def error_of(*args, **kwargs) -> str:
    with pytest.raises(OmniglotDataError) as info:
        load(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_data_names_the_expected_files(tmp_path):
    message = error_of(tmp_path)
    assert f"'{tmp_path}'" in message
    for expected in ("images_background.zip", "images_evaluation.zip", "images_background/",
                     "images_evaluation/", "--download"):
        assert expected in message
    assert "not the split itself" in error_of(tmp_path / "images_background.zip")


@pytest.mark.parametrize("damage", [lambda png: b"this is not a png",
                                    lambda png: png[: len(png) // 2]])
def test_corrupt_png_names_the_file(tmp_path, damage):
    root = write_fake_omniglot(tmp_path)
    bad = first_file(root)
    bad.write_bytes(damage(bad.read_bytes()))
    message = error_of(root)
    assert str(bad) in message and "PNG" in message


def test_corrupt_png_inside_a_zip_names_the_member(tmp_path):
    root = write_fake_omniglot(tmp_path, as_zip=True)
    member = "images_background/Korean/character02/0010_05.png"
    rewrite_zip(root / "images_background.zip", {member: b"garbage"})
    assert f"images_background.zip:{member}" in error_of(root)


@pytest.mark.parametrize("damage", [lambda data: b"PK\x03\x04 not really a zip",
                                    lambda data: data[: len(data) // 2]])
def test_corrupt_zip_names_the_zip(tmp_path, damage):
    root = write_fake_omniglot(tmp_path, as_zip=True)
    archive = root / "images_background.zip"
    archive.write_bytes(damage(archive.read_bytes()))
    message = error_of(root)
    assert str(archive) in message and "damaged" in message


def test_damaged_bytes_inside_a_zip_name_the_member(tmp_path):
    root = write_fake_omniglot(tmp_path, as_zip=True)
    archive = root / "images_background.zip"
    rewrite_zip(archive, {}, compression=zipfile.ZIP_STORED)  # stored: the PNG bytes are findable
    member = "images_background/Korean/character02/0010_05.png"
    raw = bytearray(archive.read_bytes())
    at = raw.find(fake_png(10, 5)) + 60
    raw[at] ^= 0xFF
    archive.write_bytes(bytes(raw))
    message = error_of(root)
    assert f"images_background.zip:{member}" in message and "CRC" in message


def test_zip_without_the_split_folder(tmp_path):
    archive = tmp_path / "images_background.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("something_else/a.png", b"x")
    assert "has no images_background/ folder inside" in error_of(tmp_path)


@pytest.mark.parametrize("as_zip", [False, True])
def test_character_with_19_drawers_is_named(tmp_path, as_zip):
    root = write_fake_omniglot(tmp_path, drawers=19, as_zip=as_zip)
    message = error_of(root)
    assert "Bengali/character01" in message and "missing drawers 20" in message


def test_missing_middle_drawer_is_named(tmp_path):
    root = write_fake_omniglot(tmp_path)
    first_file(root, "Tifinagh", "character03", drawer=7).unlink()
    message = error_of(root)
    assert str(root / "images_background" / "Tifinagh" / "character03") in message
    assert "missing drawers 07" in message and "19 images" in message


def test_unexpected_names_error_and_clutter_is_ignored(tmp_path):
    root = write_fake_omniglot(tmp_path)
    folder = root / "images_background" / "Bengali" / "character01"
    for clutter in (folder / ".DS_Store", folder / "notes.txt", root / "images_background" /
                    "__MACOSX" / "Bengali" / "character01" / "._0005_01.png"):
        clutter.parent.mkdir(parents=True, exist_ok=True)
        clutter.write_bytes(b"junk")
    assert load(root, size=28).images.shape[0] == N_CLASSES
    (folder / "0005_21.png").write_bytes(fake_png(5, 21))
    assert "drawer 21" in error_of(root)
    (folder / "0005_21.png").unlink()
    (folder / "scan.png").write_bytes(fake_png(5, 1))
    assert str(folder / "scan.png") in error_of(root)
    (folder / "scan.png").unlink()
    (folder / "0005_03.png").rename(folder / "0099_03.png")
    assert "mixes character ids [5, 99]" in error_of(root)


# ---------------------------------------------------------------------------------------------
# Download (no network: the fetcher is replaced)


def test_download_failure_says_what_to_place_where(tmp_path, monkeypatch):
    def offline(url, dest):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(om, "fetch_url", offline)
    message = error_of(tmp_path / "omni", download=True)
    assert "download" in message and "failed" in message and "no network" in message
    assert "images_background.zip" in message and "images_evaluation.zip" in message
    assert f"'{tmp_path / 'omni'}'" in message
    assert list((tmp_path / "omni").iterdir()) == []  # no partial file left behind


def test_download_with_wrong_md5_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setattr(om, "fetch_url", lambda url, dest: Path(dest).write_bytes(b"<html>"))
    message = error_of(tmp_path, download=True)
    assert "md5" in message and om.OFFICIAL_MD5["images_background.zip"] in message
    assert list(tmp_path.iterdir()) == []


def test_download_fetches_only_what_is_missing(tmp_path, monkeypatch):
    served = write_fake_both(tmp_path / "server", as_zip=True)
    md5 = {name: hashlib.md5((served / name).read_bytes()).hexdigest() for name in om.OFFICIAL_MD5}
    monkeypatch.setattr(om, "OFFICIAL_MD5", md5)
    fetched = []

    def fake_fetch(url, dest):
        fetched.append(url)
        Path(dest).write_bytes((served / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(om, "fetch_url", fake_fetch)
    root = tmp_path / "data"
    background, evaluation = load_both(root, 28, cache_dir=False, download=True, progress=False)
    assert fetched == [om.DOWNLOAD_URL.format(name=name) for name in md5]
    assert fetched[0] == ("https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"
                          "images_background.zip")
    assert sorted(p.name for p in root.iterdir()) == sorted(md5)
    assert evaluation.char_ids[0] > max(background.char_ids)
    load_both(root, 28, cache_dir=False, download=True, progress=False)
    assert len(fetched) == 2  # already there: nothing fetched again


# ---------------------------------------------------------------------------------------------
# The real data set (../shared/omniglot); some seconds


def test_real_omniglot_counts_and_order(tmp_path, monkeypatch):
    if not REAL_OMNIGLOT.is_dir():
        pytest.skip(f"no real Omniglot at {REAL_OMNIGLOT}")
    cache = tmp_path / "cache"
    background, evaluation = load_both(REAL_OMNIGLOT, 28, cache_dir=cache, progress=False)
    assert background.images.shape == (964, 20, 28, 28)
    assert evaluation.images.shape == (659, 20, 28, 28)
    for split in (background, evaluation):
        assert list(split.class_names) == sorted(split.class_names)
        assert len(set(split.class_names)) == split.n_classes
        assert split.images.mean() > 200  # white background, not inverted
    assert sorted(background.char_ids) == list(range(1, 965))
    assert sorted(evaluation.char_ids) == list(range(965, 1624))
    assert background.class_names[0] == "Alphabet_of_the_Magi/character01"
    fail_decoding(monkeypatch)
    warm_background, _ = load_both(REAL_OMNIGLOT, 28, cache_dir=cache, progress=False)
    assert np.array_equal(warm_background.images, background.images)
