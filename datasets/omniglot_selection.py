"""The meta-validation ("selection") classes of Split-Omniglot: three whole background alphabets.

The rule, the one place it is written: every tenth background alphabet in sorted order, starting
with the fifth (sorted alphabet indices 4, 14, 24). On the official release that is

    Asomtavruli_(Georgian)  40 characters  background class ids 116-155
    Greek                   24 characters  background class ids 424-447
    N_Ko                    33 characters  background class ids 780-812

97 classes, 1,940 images; the ids are the loader's (classes sorted by (alphabet, character)) and
are derived here from the class names, never typed in. Whole alphabets, because the official
background/evaluation split is by alphabet: a selection class shares no alphabet with a class
meta-trained on, as an evaluation class does not.

What it is for (docs/protocols.md, "The meta-validation split"): every choice about how to
meta-train, or which candidate to keep, is made by meta-training without these classes
(`oml_omniglot.py --selection-classes`) and evaluating on them (`evaluate_omniglot.py
--selection-classes`, drawers 1-15 learned, 16-20 held out, as on the evaluation split); the
evaluation classes are then read only to report.
"""
from __future__ import annotations

import numpy as np

from datasets.omniglot import OmniglotDataError, OmniglotSplit

FIRST_ALPHABET = 4  # the fifth alphabet in sorted order ...
EVERY = 10          # ... and every tenth after it
OFFICIAL_SELECTION_CLASSES = 97  # Asomtavruli_(Georgian) 40 + Greek 24 + N_Ko 33
SPLIT_NAME = "selection"


def _alphabet(class_name: str) -> str:
    return class_name.split("/", 1)[0]


def selection_alphabets(class_names) -> tuple[str, ...]:
    """The selection alphabets among the background split's "Alphabet/characterNN" names."""
    return tuple(sorted({_alphabet(name) for name in class_names})[FIRST_ALPHABET::EVERY])


def selection_classes(class_names, standard: bool = False) -> np.ndarray:
    """Sorted background class ids of the selection alphabets' characters. `standard`: the tree is
    the official release, so they must come to 97 (a renamed or missing alphabet would otherwise
    move the split silently)."""
    chosen = set(selection_alphabets(class_names))
    ids = np.array([i for i, name in enumerate(class_names) if _alphabet(name) in chosen], dtype=np.int64)
    if standard and len(ids) != OFFICIAL_SELECTION_CLASSES:
        raise OmniglotDataError(
            f"the selection alphabets {', '.join(sorted(chosen))} have {len(ids)} characters, the official release's "
            f"{OFFICIAL_SELECTION_CLASSES}: restore the official images_background, or pass --nonstandard-data")
    return ids


def kept_classes(class_names, n_classes: int, standard: bool = False) -> np.ndarray:
    """Meta-training classes 0..n_classes-1 less the selection classes, in id order (866 of 963)."""
    return np.setdiff1d(np.arange(n_classes), selection_classes(class_names, standard))


def selection_split(background: OmniglotSplit, standard: bool = False) -> OmniglotSplit:
    """The selection classes of the background split as a split of their own, named "selection";
    within it classes are numbered 0..96 in id order, as an evaluation split's are."""
    if background.name != "background":
        raise ValueError(f"the selection classes come from the background split, got {background.name!r}")
    ids = selection_classes(background.class_names, standard)
    if len(ids) == 0:
        n_alphabets = len({_alphabet(name) for name in background.class_names})
        raise OmniglotDataError(f"the background split has {n_alphabets} alphabets, so no selection classes "
                                f"(the first is the fifth alphabet in sorted order)")
    return OmniglotSplit(SPLIT_NAME, background.images[ids], tuple(background.class_names[i] for i in ids),
                         tuple(background.char_ids[i] for i in ids), background.image_size)


def reported_split(split: OmniglotSplit) -> str:
    """What a results file calls the classes it was measured on: "selection" or "test"."""
    return SPLIT_NAME if split.name == SPLIT_NAME else "test"
