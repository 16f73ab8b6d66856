"""Omniglot reader: official zips or folders -> one uint8 array per split, cached on disk.

Layout read (the official release, github.com/brendenlake/omniglot, python/*.zip):

    <path>/images_background/<Alphabet>/characterNN/XXXX_YY.png     (or images_background.zip)
    <path>/images_evaluation/<Alphabet>/characterNN/XXXX_YY.png     (or images_evaluation.zip)

torchvision's `<path>/omniglot-py/` nesting is accepted too. XXXX is the global character id,
YY the drawer (01-20). A split becomes `uint8 [n_classes, 20, H, W]`:

* classes sorted by (alphabet, character) and drawers by number, so class ids are the same on
  every machine (the original used unsorted `os.listdir`, so they were not);
* background white = 255, strokes 0, no inversion: `to_float` then gives what the original's
  `Resize((84, 84))` + `ToTensor()` gave (background 1.0);
* drawers 1-15 are the within-class training images and 16-20 the held-out ones (the original
  split by listing position instead).

Decoding every PNG takes seconds, so the array is cached as `.npy` next to a JSON manifest.
The cache is used only when all of these hold, else it is rebuilt with a `warning:` line:

* the manifest describes this load (format, split, size, Pillow, class names and ids);
* the pixels hash to the manifest's sha256 (a flipped bit in the .npy is caught);
* the source files are the ones it was built from. Cheap check, on every load: a sha256 over
  each used file's zip CRC-32 and size (zips: the CRC is of the decompressed PNG, so it changes
  with the content), or its size and mtime_ns (folders). When that differs (a copied folder has
  new mtimes), the PNG bytes are read and hashed and compared with the content sha256 stored at
  build time: equal content reuses the cache, anything else rebuilds it. OML_VERIFY_DATA=1
  always does the full content comparison (a folder file rewritten with the same size and a
  restored mtime escapes the cheap check; nothing escapes the full one).

The zip md5 is not checked on load: re-encoded copies (like ../shared/omniglot) carry the
official pixels under different bytes. It is checked only on what `download=True` fetches.

`standard=True` (the scripts' default; their `--nonstandard-data` turns it off) refuses a split
whose class count is not the official one (964 background, 659 evaluation, 20 images each;
the 20 are always required): a missing alphabet would otherwise silently shrink the benchmark.
"""
from __future__ import annotations

import hashlib
import io
import json
import numbers
import os
import re
import tempfile
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image
from tqdm import tqdm

from utils.errors import UserError
from utils.files import atomic_write, file_digest
from utils.messages import quiet_logger, warn

log = quiet_logger(__name__)

TRAIN_DRAWERS = 15  # drawers 1-15 are the within-class training images, 16-20 held out
N_DRAWERS = 20

SPLITS = ("background", "evaluation")
DOWNLOAD_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/{name}"
OFFICIAL_MD5 = {
    "images_background.zip": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation.zip": "6b91aef0f799c5bb55b94e3f2daec811",
}
OFFICIAL_CLASSES = {"background": 964, "evaluation": 659}
VERIFY_ENV = "OML_VERIFY_DATA"  # "1": compare the source's full content with the cache's, every load
# Bump when the array's meaning changes (order, resize, value range), so old caches rebuild.
# 2: the manifest ties the array to the source files' content.
CACHE_FORMAT_VERSION = 2
RESIZE_METHOD = "PIL.Image.BILINEAR"  # what transforms.Resize((84, 84)) does to a PIL image

_FILE_NAME = re.compile(r"(\d{4})_(\d{2})\.png", re.IGNORECASE)
_warned_unwritable: set[str] = set()


class OmniglotDataError(UserError):
    """A problem with the Omniglot files; the message names the file and what to do."""


@dataclass(frozen=True, eq=False)  # eq=False: comparing numpy arrays with == is ambiguous
class OmniglotSplit:
    name: str  # "background" or "evaluation"
    images: np.ndarray = field(repr=False)  # uint8 [n_classes, 20, H, W], drawers 01..20
    class_names: tuple[str, ...]  # "Alphabet/characterNN", sorted (alphabet, character)
    char_ids: tuple[int, ...]  # global character id XXXX from the file names
    image_size: int

    @property
    def n_classes(self) -> int:
        return self.images.shape[0]

    def train_images(self) -> np.ndarray:
        return split_drawers(self.images)[0]

    def test_images(self) -> np.ndarray:
        return split_drawers(self.images)[1]


def split_drawers(per_drawer):
    """(training part, held-out part) of anything indexed [class, drawer, ...] over the 20 drawers
    (images, their features): drawers 1-15 and 16-20. The within-class split's one definition;
    every consumer (features, Scratch's images, the splits' own accessors) slices through here."""
    if per_drawer.shape[1] != N_DRAWERS:
        raise ValueError(f"expected {N_DRAWERS} drawers on axis 1, got shape {tuple(per_drawer.shape)}")
    return per_drawer[:, :TRAIN_DRAWERS], per_drawer[:, TRAIN_DRAWERS:]


def load_both(path, image_size=84, cache_dir=None, download=False, progress=True, standard=False):
    """(background, evaluation) splits; see `load_omniglot`."""
    return tuple(
        load_omniglot(path, split, image_size, cache_dir, download, progress, standard) for split in SPLITS
    )


def load_omniglot(
    path, split: str, image_size: int = 84, cache_dir=None, download: bool = False,
    progress: bool = True, standard: bool = False,
) -> OmniglotSplit:
    """One split as `OmniglotSplit`, from the cache when it is valid, else decoded and cached.

    cache_dir=None means $OML_CACHE_DIR or ./.oml_cache; cache_dir=False turns the cache off.
    standard=True: the split must have the official class count (scripts; generated test trees
    pass False).
    """
    split = _split_name(split)
    if isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral) \
            or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    image_size = int(image_size)  # numpy ints would otherwise leak into names and the manifest
    root = Path(path).expanduser()
    source = _find_source(root, split)
    if source is None and download:
        _download(root, split)
        source = _find_source(root, split)
    if source is None:
        raise OmniglotDataError(_missing_message(root))

    # Listing is cheap (the zip's directory or a walk of names), and it is what a cached
    # array must still agree with, so it runs on every load.
    characters = _list_characters(source, split)
    if standard:
        _check_standard(source, split, len(characters))
    class_names = tuple(f"{alphabet}/{character}" for alphabet, character, _, _ in characters)
    char_ids = tuple(char_id for _, _, char_id, _ in characters)

    if cache_dir is None:
        cache_dir = os.environ.get("OML_CACHE_DIR", ".oml_cache")
    stem = f"omniglot_{split}_{image_size}"
    expected = {
        "format_version": CACHE_FORMAT_VERSION,
        "split": split,
        "n_classes": len(class_names),
        "images_per_class": N_DRAWERS,
        "image_size": image_size,
        "resize_method": RESIZE_METHOD,
        "pillow_version": PIL.__version__,  # another Pillow may resize to other pixels
        "class_names": list(class_names),
        "char_ids": list(char_ids),
    }
    images = None
    if cache_dir is not False:
        verify = os.environ.get(VERIFY_ENV, "") not in ("", "0")
        images = _read_cache(Path(cache_dir), stem, expected, source, characters, verify)
    if images is None:
        images, content = _decode_all(source, characters, split, image_size, progress)
        if cache_dir is not False:
            _write_cache(Path(cache_dir), stem, expected, source, images,
                         {"source_stat": _source_stat(source, characters), "source_sha256": content})
    return OmniglotSplit(split, images, class_names, char_ids, image_size)


def _check_standard(source: _Source, split: str, n_classes: int) -> None:
    official = OFFICIAL_CLASSES[split]
    if n_classes != official:
        raise OmniglotDataError(
            f"the {split} split at '{source.location}' has {n_classes} classes of {N_DRAWERS} images "
            f"({n_classes * N_DRAWERS} images); the official release has {official} ({official * N_DRAWERS}): "
            "restore the missing (or remove the extra) alphabets or characters, or pass --nonstandard-data "
            "to use this tree as it is"
        )


def _split_name(split: str) -> str:
    name = str(split).removeprefix("images_")
    if name not in SPLITS:
        raise ValueError(f"split must be 'background' or 'evaluation', got {split!r}")
    return name


# ---------------------------------------------------------------------------------------------
# Where the files are, and fetching them


@dataclass(frozen=True)
class _Source:
    kind: str  # "folder" or "zip"
    location: Path  # the images_<split>/ folder or the images_<split>.zip file

    def describe(self, member: str = "") -> str:
        """How messages name a file: a path, or 'archive.zip:member/in/archive'."""
        if not member:
            return str(self.location)
        if self.kind == "zip":
            return f"{self.location}:{self.zip_name(member)}"
        return str(self.location / member)

    def zip_name(self, member: str) -> str:
        """Members are relative to images_<split>/; inside the zip that folder is the top."""
        return f"{self.location.stem}/{member}"


def _find_source(root: Path, split: str) -> _Source | None:
    name = f"images_{split}"
    for base in (root, root / "omniglot-py"):
        if (base / name).is_dir():
            return _Source("folder", base / name)
        if (base / f"{name}.zip").is_file():
            return _Source("zip", base / f"{name}.zip")
    return None


def _missing_message(root: Path) -> str:
    hint = ""
    if root.name.startswith(("images_background", "images_evaluation")):
        hint = " (pass the folder that contains it, not the split itself)"
    return (
        f"no Omniglot data at '{root}'{hint}: put images_background.zip and "
        "images_evaluation.zip (the official release, github.com/brendenlake/omniglot/python) "
        "there, or the extracted images_background/ and images_evaluation/ folders, "
        "or pass --download"
    )


def fetch_url(url: str, dest: Path) -> None:
    """Save `url` to `dest`. Module-level so tests can replace it (there is no network there)."""
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as f:
        while chunk := response.read(1 << 20):
            f.write(chunk)


def _download(root: Path, split: str) -> None:
    name = f"images_{split}.zip"
    url = DOWNLOAD_URL.format(name=name)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OmniglotDataError(f"cannot create '{root}' for the download ({e})") from e
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{name}.", suffix=".part")
    os.close(fd)
    try:
        try:
            fetch_url(url, Path(tmp))
        except Exception as e:  # urllib raises URLError, HTTPError, timeouts, ssl errors...
            raise OmniglotDataError(
                f"download of {url} failed ({type(e).__name__}: {e}): fetch images_background.zip "
                f"and images_evaluation.zip from github.com/brendenlake/omniglot/tree/master/python "
                f"by hand and put them in '{root}'"
            ) from e
        md5 = file_digest(Path(tmp), "md5")
        if md5 != OFFICIAL_MD5[name]:
            raise OmniglotDataError(
                f"downloaded {url} has md5 {md5}, expected {OFFICIAL_MD5[name]}: the file is "
                f"damaged or not the official release; put the official {name} in '{root}' by hand"
            )
        os.replace(tmp, root / name)  # atomic: a half-written zip is never seen under its name
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ---------------------------------------------------------------------------------------------
# Listing: which file is which (class, drawer); checked before anything is decoded


def _list_members(source: _Source, split: str) -> list[str]:
    """Paths of all files below images_<split>/, relative to it, with '/' separators."""
    if source.kind == "folder":
        members = []
        for dirpath, _, filenames in os.walk(source.location):
            rel = Path(dirpath).relative_to(source.location).as_posix()
            members += [f"{rel}/{f}" if rel != "." else f for f in filenames]
        return members
    prefix = f"images_{split}/"
    try:
        with zipfile.ZipFile(source.location) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise OmniglotDataError(_bad_zip_message(source, e)) from e
    # The official zips hold images_<split>/...; directory entries end with '/'.
    members = [n[len(prefix):] for n in names if n.startswith(prefix) and not n.endswith("/")]
    if not members:
        raise OmniglotDataError(
            f"'{source.location}' has no {prefix} folder inside: it is not the official "
            f"images_{split}.zip; replace it with the official file"
        )
    return members


def _bad_zip_message(source: _Source, e: BaseException, member: str = "") -> str:
    return (
        f"'{source.describe(member)}' cannot be read ({type(e).__name__}: {e}): the zip is "
        f"damaged; replace {source.location.name} with a fresh copy of the official file"
    )


def _list_characters(source: _Source, split: str) -> list[tuple[str, str, int, list[str]]]:
    """Sorted (alphabet, character, char_id, [member of drawer 1..20]) for every character."""
    found: dict[tuple[str, str], dict[int, tuple[int, str]]] = {}
    for member in _list_members(source, split):
        parts = member.split("/")
        # Skip what archivers and file browsers leave behind (__MACOSX/, .DS_Store, Thumbs.db).
        if any(p.startswith(".") or p == "__MACOSX" for p in parts):
            continue
        if not parts[-1].lower().endswith(".png"):
            continue
        match = _FILE_NAME.fullmatch(parts[-1])
        if len(parts) != 3 or match is None:
            raise OmniglotDataError(
                f"unexpected file '{source.describe(member)}': expected "
                f"images_{split}/<Alphabet>/<characterNN>/XXXX_YY.png as in the official release"
            )
        char_id, drawer = int(match[1]), int(match[2])
        drawers = found.setdefault((parts[0], parts[1]), {})
        if not 1 <= drawer <= N_DRAWERS or drawer in drawers:
            raise OmniglotDataError(
                f"'{source.describe(member)}' has drawer {drawer:02d}, which is out of range "
                f"01-{N_DRAWERS} or repeated: remove it or restore the official files"
            )
        drawers[drawer] = (char_id, member)
    if not found:
        raise OmniglotDataError(
            f"no character images in '{source.location}': expected "
            f"<Alphabet>/<characterNN>/XXXX_YY.png inside; restore the official images_{split}"
        )

    characters = []
    for (alphabet, character), drawers in sorted(found.items()):
        folder = source.describe(f"{alphabet}/{character}")
        missing = sorted(set(range(1, N_DRAWERS + 1)) - drawers.keys())
        if missing:
            raise OmniglotDataError(
                f"character folder '{folder}' has {len(drawers)} images, missing drawers "
                f"{', '.join(f'{d:02d}' for d in missing)}: every character needs XXXX_01.png to "
                f"XXXX_{N_DRAWERS}.png; restore the official files"
            )
        ids = {char_id for char_id, _ in drawers.values()}
        if len(ids) != 1:
            raise OmniglotDataError(
                f"character folder '{folder}' mixes character ids {sorted(ids)} in its file "
                "names: restore the official files"
            )
        members = [drawers[d][1] for d in range(1, N_DRAWERS + 1)]
        characters.append((alphabet, character, ids.pop(), members))
    return characters


# ---------------------------------------------------------------------------------------------
# Decoding


def _decode_png(data: bytes, image_size: int) -> np.ndarray:
    """PNG bytes -> uint8 [image_size, image_size], the original's transform minus ToTensor."""
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("L")  # one-bit 0/1 -> 0/255
    if im.size != (image_size, image_size):
        im = im.resize((image_size, image_size), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def _content_update(digest, member: str, data: bytes) -> None:
    """One file into the source's content sha256: its name, its length, its bytes."""
    digest.update(f"{member}\0{len(data)}\0".encode())
    digest.update(data)


def _decode_all(source, characters, split, image_size, progress) -> tuple[np.ndarray, str]:
    """(uint8 images, sha256 of the source files' content) in class and drawer order; the hash is
    taken from the bytes being decoded, so it costs no extra read."""
    images = np.empty((len(characters), N_DRAWERS, image_size, image_size), dtype=np.uint8)
    content = hashlib.sha256()
    bar = tqdm(
        total=images.shape[0] * N_DRAWERS, unit="img", desc=f"omniglot {split} {image_size}px",
        disable=None if progress else True,  # None: on only in a terminal
    )
    zf = None
    try:
        if source.kind == "zip":
            try:
                zf = zipfile.ZipFile(source.location)
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                raise OmniglotDataError(_bad_zip_message(source, e)) from e
        for c, (_, _, _, members) in enumerate(characters):
            for d, member in enumerate(members):
                data = _read_member(source, zf, member)
                _content_update(content, member, data)
                try:
                    images[c, d] = _decode_png(data, image_size)
                except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, ...
                    raise OmniglotDataError(
                        f"'{source.describe(member)}' is not a readable PNG "
                        f"({type(e).__name__}: {e}): restore it from the official release"
                    ) from e
                bar.update()
    finally:
        bar.close()
        if zf is not None:
            zf.close()
    return images, content.hexdigest()


def _members(characters):
    return [member for _, _, _, members in characters for member in members]


def _source_stat(source: _Source, characters) -> str:
    """The cheap fingerprint: sha256 over each used file's zip CRC-32 and size, or its size and
    mtime_ns in a folder, in class and drawer order."""
    digest = hashlib.sha256(source.kind.encode())
    if source.kind == "zip":
        try:
            with zipfile.ZipFile(source.location) as zf:
                infos = {info.filename: info for info in zf.infolist()}
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise OmniglotDataError(_bad_zip_message(source, e)) from e
        for member in _members(characters):
            info = infos[source.zip_name(member)]
            digest.update(f"{member}\0{info.CRC:08x}\0{info.file_size}\n".encode())
    else:
        for member in _members(characters):
            try:
                st = (source.location / member).stat()
            except OSError as e:
                raise OmniglotDataError(f"cannot read '{source.describe(member)}' ({e}): check the file") from e
            digest.update(f"{member}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _source_content(source: _Source, characters) -> str:
    """The full fingerprint: sha256 of every used file's bytes (no decoding)."""
    digest = hashlib.sha256()
    zf = zipfile.ZipFile(source.location) if source.kind == "zip" else None
    try:
        for member in _members(characters):
            _content_update(digest, member, _read_member(source, zf, member))
    finally:
        if zf is not None:
            zf.close()
    return digest.hexdigest()


def _read_member(source: _Source, zf: zipfile.ZipFile | None, member: str) -> bytes:
    if zf is None:
        try:
            return (source.location / member).read_bytes()
        except OSError as e:
            raise OmniglotDataError(
                f"cannot read '{source.describe(member)}' ({e}): check the file and permissions"
            ) from e
    try:
        return zf.read(source.zip_name(member))
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as e:  # bad CRC, truncated data
        raise OmniglotDataError(_bad_zip_message(source, e, member)) from e


# ---------------------------------------------------------------------------------------------
# Cache: <cache_dir>/omniglot_<split>_<H>.npy plus a .json manifest


def _sha256(images: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images).data).hexdigest()


def _read_cache(cache_dir: Path, stem: str, expected: dict, source: _Source, characters, verify: bool):
    """The cached array if it is complete, matches `expected` and was built from these source
    files (see the module docstring), else None (after a warning)."""
    npy, manifest_path = cache_dir / f"{stem}.npy", cache_dir / f"{stem}.json"
    if not npy.exists() and not manifest_path.exists():
        log.info("no Omniglot cache at %s; decoding %s once", npy, source.location)
        return None
    problem = None
    try:
        manifest = json.loads(manifest_path.read_text())
        if not isinstance(manifest, dict):
            raise ValueError("the manifest is not a JSON object")
        stale = [k for k, v in expected.items() if manifest.get(k) != v]
        if stale:
            problem = f"stale (manifest differs in {', '.join(stale)})"
        else:
            images = np.load(npy, allow_pickle=False)
            shape = (expected["n_classes"], N_DRAWERS, expected["image_size"], expected["image_size"])
            if images.dtype != np.uint8 or images.shape != shape:
                problem = f"malformed ({images.dtype} {images.shape}, expected uint8 {shape})"
            elif _sha256(images) != manifest.get("sha256"):
                problem = "corrupt (pixel sha256 differs from the manifest)"
            else:
                problem = _source_problem(cache_dir, stem, manifest, source, characters, verify)
                if problem is None:
                    return images
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # missing half, bad JSON, truncated .npy
        problem = f"unreadable ({type(e).__name__}: {e})"
    warn(f"Omniglot cache {npy} is {problem}; rebuilding it from {source.location}", log)
    return None


def _source_problem(cache_dir: Path, stem: str, manifest: dict, source: _Source, characters, verify: bool):
    """None when the source files are those the cache was built from, else why not."""
    stat = _source_stat(source, characters)
    if stat == manifest.get("source_stat") and not verify:
        return None
    if _source_content(source, characters) != manifest.get("source_sha256"):
        return "stale (the source files' content differs from what it was built from)"
    if stat != manifest.get("source_stat"):  # same bytes, new mtimes (a copy): remember them
        manifest = {**manifest, "source_stat": stat, "source": str(source.location.resolve())}
        try:
            text = json.dumps(manifest, indent=1).encode()
            atomic_write(cache_dir / f"{stem}.json", lambda f: f.write(text))
        except OSError:
            pass  # read-only cache: the next load compares the content again
    return None


def _write_cache(cache_dir: Path, stem: str, expected: dict, source: _Source, images, fingerprint: dict) -> None:
    manifest = {
        **expected,
        "source": str(source.location.resolve()),
        "source_kind": source.kind,
        **fingerprint,
        "dtype": "uint8",
        "shape": list(images.shape),
        "sha256": _sha256(images),
    }
    for key in ("class_names", "char_ids"):  # the long lists last, so the head reads easily
        manifest[key] = manifest.pop(key)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        # The .npy goes first: the manifest's hash pairs the two, so a reader that catches the
        # new array with the old manifest just rebuilds.
        atomic_write(cache_dir / f"{stem}.npy", lambda f: np.save(f, images, allow_pickle=False))
        text = json.dumps(manifest, indent=1).encode()
        atomic_write(cache_dir / f"{stem}.json", lambda f: f.write(text))
    except OSError as e:
        if str(cache_dir) not in _warned_unwritable:  # once per folder, not once per split
            _warned_unwritable.add(str(cache_dir))
            warn(f"cannot write the Omniglot cache to {cache_dir} ({e}); going on without it", log)


# ---------------------------------------------------------------------------------------------


def to_float(images_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [..., H, W] -> float32 [..., 1, H, W] in [0, 1] (what ToTensor gave the original)."""
    if isinstance(images_uint8, np.ndarray):
        if images_uint8.dtype != np.uint8:
            raise TypeError(f"to_float expects uint8 images, got {images_uint8.dtype}")
        x = torch.from_numpy(images_uint8.astype(np.float32))  # a copy: works on read-only arrays
    elif isinstance(images_uint8, torch.Tensor):
        if images_uint8.dtype != torch.uint8:
            raise TypeError(f"to_float expects uint8 images, got {images_uint8.dtype}")
        x = images_uint8.to(torch.float32)
    else:
        raise TypeError(f"to_float expects a numpy array or tensor, got {type(images_uint8)}")
    if x.ndim < 2:
        raise ValueError(f"to_float expects [..., H, W] images, got shape {tuple(x.shape)}")
    return x.div_(255.0).unsqueeze(-3)
