"""A small generated tree in the official Omniglot layout, for tests that must not need the data.

    write_fake_omniglot(tmp_path)                -> tmp_path/images_background/<Alphabet>/characterNN/XXXX_YY.png
    write_fake_omniglot(tmp_path, as_zip=True)   -> tmp_path/images_background.zip (same paths inside)
    write_fake_both(tmp_path)                    -> both splits, evaluation ids continuing after background's

Images are one-bit ("1") PNGs, white background with a few black strokes drawn from a generator
seeded by (character id, drawer), so every image is different and every run writes the same bytes.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Written in this order; sorted order differs (Bengali < Futurama < Korean < ... < Tifinagh), so
# a reader that keeps creation or listdir order gets different class ids than one that sorts.
_ALPHABETS = ("Tifinagh", "Bengali", "Korean", "Armenian", "Sanskrit", "Futurama", "Greek", "Ojibwe")


def alphabet_names(n_alphabets: int) -> list[str]:
    """The fixture's alphabet names in creation order."""
    k = len(_ALPHABETS)
    return [_ALPHABETS[i % k] + ("" if i < k else f"_{i // k}") for i in range(n_alphabets)]


def fake_png(char_id: int, drawer: int, size: int = 105) -> bytes:
    """The PNG bytes the fixture writes for (character id, drawer)."""
    rng = np.random.default_rng([char_id, drawer])
    im = Image.new("1", (size, size), 1)  # white background, like the real images
    draw = ImageDraw.Draw(im)
    for _ in range(3):
        points = [tuple(int(v) for v in rng.integers(5, size - 5, 2)) for _ in range(3)]
        draw.line(points, fill=0, width=max(1, size // 30))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def write_fake_omniglot(root: Path, n_alphabets=3, chars_per_alphabet=4, drawers=20, as_zip=False,
                        size=105, start_id=1, split="images_background") -> Path:
    """Write one split under `root` (a folder, or `<split>.zip` when as_zip); returns root.

    Character ids run from start_id in creation order; drawers are 01..`drawers`.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {}
    char_id = start_id
    for alphabet in alphabet_names(n_alphabets):
        for c in range(1, chars_per_alphabet + 1):
            for d in range(1, drawers + 1):
                name = f"{split}/{alphabet}/character{c:02d}/{char_id:04d}_{d:02d}.png"
                files[name] = fake_png(char_id, d, size)
            char_id += 1
    if as_zip:
        with zipfile.ZipFile(root / f"{split}.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            folders = sorted({name.rsplit("/", i)[0] + "/" for name in files for i in (1, 2, 3)})
            for folder in folders:  # the official zips list folders as entries too
                zf.writestr(folder, b"")
            for name, data in files.items():
                zf.writestr(name, data)
    else:
        for name, data in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return root


def write_fake_both(root: Path, as_zip=False, **kw) -> Path:
    """Write images_background and images_evaluation under `root`; returns root."""
    write_fake_omniglot(root, as_zip=as_zip, split="images_background", **kw)
    n_background = kw.get("n_alphabets", 3) * kw.get("chars_per_alphabet", 4)
    start = kw.pop("start_id", 1) + n_background
    write_fake_omniglot(root, as_zip=as_zip, split="images_evaluation", start_id=start, **kw)
    return root


def tiny_network_and_tree(root: Path, overrides: dict):
    """A generated tree (2 alphabets x 4 characters per split) under root/data and a tiny
    `cpu`-preset network with `overrides`, seeded 0 and saved as root/oml.pt:
    (data folder, config, network, checkpoint path)."""
    import torch

    from experiment.checkpoint import save_checkpoint
    from experiment.config import as_dict, resolve
    from experiment.omniglot_presets import OMNIGLOT_PRESETS, OmniglotConfig, build_model

    data = write_fake_both(root / "data", n_alphabets=2, chars_per_alphabet=4, size=24)
    cfg = resolve(OmniglotConfig, OMNIGLOT_PRESETS, "cpu", overrides)
    torch.manual_seed(0)
    net = build_model(cfg)
    ckpt = root / "oml.pt"
    save_checkpoint(ckpt, benchmark="omniglot", config=as_dict(cfg), model=net, step=0)
    return data, cfg, net, ckpt
