"""The representation study behind visualize_representations.py: which models (checkpoints, or
a random network of the same shape), which inputs (Omniglot background images or sine samples),
and each model's representations, maps and sparsity statistics."""
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from analysis import representation_stats as rs
from datasets.omniglot import N_DRAWERS, load_omniglot, to_float
from datasets.sine import sample_trajectory
from experiment import limits
from experiment.checkpoint import CHECKPOINT_NAME, load_checkpoint, load_weights
from experiment.config import from_dict
from experiment.omniglot_presets import OmniglotConfig
from experiment.omniglot_presets import build_model as build_omniglot_model
from experiment.sine_presets import build_model as build_sine_model
from experiment.sine_presets import config_from_checkpoint as sine_config
from experiment.sine_presets import training_functions
from model.networks import features
from utils.errors import UserError
from utils.seeding import stream

ORIGINAL_CLASSES = 900    # background classes 0-899, as the original
DEFAULT_SINE_INPUTS = 5000
DEFAULT_PROJECTION_CLASSES = 10  # --classes unset: this many, or all when the inputs have fewer
DEFAULT_SEED = 222        # the original visualize_representations.py's seed
SIDE_BY_SIDE_ROWS = 6     # sample inputs in the comparison figure (visualize_representations.py)


# --- the models -------------------------------------------------------------------------------

@dataclass
class Subject:
    label: str
    benchmark: str
    net: torch.nn.Module
    config: object
    payload: dict | None


def _load_subject(path) -> Subject:
    payload = load_checkpoint(path)
    if payload["benchmark"] == "sine":
        config = sine_config(payload)
        limits.checkpoint_network(config, payload)  # before a network of the config's sizes is built
        net = build_sine_model(config)
    elif payload["benchmark"] == "omniglot":
        config = from_dict(OmniglotConfig, payload["config"])
        limits.checkpoint_network(config, payload)
        net = _omniglot_net(config)
    else:
        raise UserError(f"'{payload['path']}' is a {payload['benchmark']!r} checkpoint; this script reads omniglot and sine ones")
    load_weights(net, payload)
    return Subject(payload["method"], payload["benchmark"], net.eval(), config, payload)


def _omniglot_net(cfg):
    return build_omniglot_model(cfg)


def _random_subject(first: Subject, seed: int) -> Subject:
    torch.manual_seed(seed)
    net = build_sine_model(first.config) if first.benchmark == "sine" else _omniglot_net(first.config)
    return Subject("random init", first.benchmark, net.eval(), first.config, None)


def load_subjects(args) -> list[Subject]:
    if not args.model:
        raise UserError("give --model: one or several checkpoints or run folders (e.g. --model RUN_DIR)")
    if args.preset is not None:
        raise UserError("--preset does not apply here: each checkpoint carries its own config")
    if args.labels is not None and len(args.labels) != len(args.model):
        raise UserError(f"{len(args.labels)} --labels for {len(args.model)} --model entries")
    subjects = [_load_subject(path) for path in args.model]
    kinds = {s.benchmark for s in subjects}
    if len(kinds) > 1:
        raise UserError(f"cannot compare {' and '.join(sorted(kinds))} checkpoints in one study; run one call per benchmark")
    if args.labels:
        for subject, label in zip(subjects, args.labels):
            subject.label = label
    else:
        _default_labels(subjects)
    if args.add_random:
        subjects.append(_random_subject(subjects[0], args.seed))
    return subjects


def _default_labels(subjects) -> None:
    """'method (preset)'; the run folder (or file) name is added where two models would share one."""
    for subject in subjects:
        preset = getattr(subject.config, "preset", None)
        subject.label = f"{subject.label} ({preset})" if preset else subject.label
    counts = Counter(s.label for s in subjects)
    for subject in subjects:
        if counts[subject.label] > 1:
            path = Path(subject.payload["path"])
            subject.label += f" {path.parent.name if path.name == CHECKPOINT_NAME else path.stem}"
    seen = Counter()
    for subject in subjects:  # still equal (the same checkpoint twice): number them
        seen[subject.label] += 1
        if seen[subject.label] > 1:
            subject.label += f" #{seen[subject.label]}"


# --- the inputs -------------------------------------------------------------------------------

@dataclass
class Inputs:
    stats: np.ndarray          # what the statistics are computed on
    maps: np.ndarray           # sample inputs drawn as heat maps
    map_titles: list
    map_images: list | None    # the sample inputs as pictures (Omniglot), or None
    projection: np.ndarray     # inputs of the 2-D projection
    projection_classes: np.ndarray
    class_names: dict
    convert: object            # numpy batch -> float tensor for the network
    description: dict


def omniglot_inputs(path, image_size, seed, n_images, n_maps, n_classes_projection, progress,
                    standard=False) -> Inputs:
    split = load_omniglot(path, "background", image_size, progress=progress, standard=standard)
    n_classes = min(ORIGINAL_CLASSES, split.n_classes)
    images = split.images[:n_classes]
    rng = stream(seed, "data")
    total = n_classes * N_DRAWERS
    chosen = np.arange(total) if not n_images or n_images >= total else np.sort(rng.choice(total, n_images, replace=False))
    stats = images.reshape(total, *images.shape[2:])[chosen]
    map_classes = rng.choice(n_classes, n_maps, replace=n_maps > n_classes)
    map_drawers = rng.integers(0, N_DRAWERS, size=n_maps)
    maps = images[map_classes, map_drawers]
    wanted = DEFAULT_PROJECTION_CLASSES if n_classes_projection is None else n_classes_projection
    proj_classes = np.sort(rng.choice(n_classes, min(wanted, n_classes), replace=False))
    projection = images[proj_classes].reshape(-1, *images.shape[2:])
    return Inputs(
        stats=stats, maps=maps,
        map_titles=[f"class {c}" for c in map_classes], map_images=[m / 255.0 for m in maps],
        projection=projection, projection_classes=np.repeat(proj_classes, N_DRAWERS),
        class_names={int(c): split.class_names[c] for c in proj_classes},
        convert=to_float,
        description={"data": f"Omniglot background classes 0-{n_classes - 1}, "
                             + ("all 20 images" if len(chosen) == total else f"a seeded subset of {len(chosen)} images"),
                     "path": str(path), "image_size": image_size, "n_classes": n_classes, "n_inputs": len(chosen),
                     "projection_classes": [int(c) for c in proj_classes]})


def sine_inputs(cfg, seed, n_inputs, n_maps, n_classes_projection) -> Inputs:
    """Samples of the checkpoint's training function family, laid out as its trajectories are:
    each function with its slot (position or random, as trained) and x ~ U[-5, 5]."""
    family, rng = training_functions(cfg), stream(seed, "data")
    n_inputs = n_inputs or DEFAULT_SINE_INPUTS
    per_function = cfg.update_step * cfg.batch_size
    xs, slots, total = [], [], 0
    while total < n_inputs:
        batch = sample_trajectory(family, rng, tasks=cfg.tasks, update_step=1, batch_size=1, extra_per_task=per_function,
                                  capacity=cfg.capacity, slot_mode=cfg.slot_mode)
        xs.append(batch["x_extra"].reshape(-1, cfg.capacity + 1))
        slots.append(np.repeat(batch["slots"], per_function))
        total += len(xs[-1])
    x, slot = np.concatenate(xs)[:n_inputs], np.concatenate(slots)[:n_inputs]
    pick = rng.choice(n_inputs, n_maps, replace=n_maps > n_inputs)
    shown = np.sort(np.unique(slot))[:DEFAULT_PROJECTION_CLASSES if n_classes_projection is None else n_classes_projection]
    in_projection = np.isin(slot, shown)
    return Inputs(
        stats=x, maps=x[pick], map_titles=[f"slot {slot[i]}, x={x[i, -1]:+.2f}" for i in pick], map_images=None,
        projection=x[in_projection], projection_classes=slot[in_projection],
        class_names={int(s): f"slot {s}" for s in shown},
        convert=lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)),
        description={"data": f"{n_inputs} samples of the checkpoint's {len(family)} training functions "
                             f"(seed {cfg.seed}), slot mode {cfg.slot_mode!r}, x ~ U[-5, 5]",
                     "n_inputs": int(n_inputs), "function_seed": cfg.seed, "capacity": cfg.capacity})


def inputs_for(subject: Subject, args, cache: dict) -> Inputs:
    cfg = subject.config
    if subject.benchmark == "omniglot":
        key = ("omniglot", cfg.image_size)
        if key not in cache:
            cache[key] = omniglot_inputs(args.path, cfg.image_size, args.seed, args.images, args.maps, args.classes,
                                         args.progress is not False,
                                         standard=not getattr(args, "nonstandard_data", False))
    else:
        key = ("sine", cfg.seed, cfg.n_train_functions, cfg.capacity, cfg.tasks, cfg.slot_mode,
               cfg.update_step, cfg.batch_size)
        if key not in cache:
            cache[key] = sine_inputs(cfg, args.seed, args.images, args.maps, args.classes)
    return cache[key]


# --- the study --------------------------------------------------------------------------------

def study(subject: Subject, inputs: Inputs, args, device) -> dict:
    rln = subject.net.rln.to(device)
    def reps(array, binary=False):  # on the CPU, chunk by chunk: 18,000 images fit in memory
        return features(rln, array, batch_size=args.batch_size, convert=inputs.convert, device=device,
                        binary=binary, out_device="cpu").numpy()
    active, sample, projected = reps(inputs.stats, binary=True), reps(inputs.maps), reps(inputs.projection)
    shape = rs.map_shape(active.shape[1])
    shown = rs.binarise(sample).astype(np.float64) if args.binary else sample
    return {
        "summary": rs.summarise(active),
        "histogram": rs.activity_histogram(active),
        "average_map": rs.to_map(rs.lifetime_activity(active), shape),
        "maps": [rs.to_map(row, shape) for row in shown],
        "points": rs.project_2d(projected, args.projection, seed=args.seed),
        "map_shape": list(shape),
    }
