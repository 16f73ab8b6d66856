"""Learn a representation on the Omniglot background classes with OML, ANML, or a baseline.

    python oml_omniglot.py --preset cpu                 # the 2-core CPU preset (9-21 min)
    python oml_omniglot.py                              # oml2020: the 2020 code's configuration
    python oml_omniglot.py --preset oml2020paper        # the same without the class split
    python oml_omniglot.py --rln 6 --update_lr 0.03 --name mrcl_omniglot --update_step 20 \
        --steps 15000                                   # the seed README's command (selects mrcl2019)
    python oml_omniglot.py --preset cpu --method pretraining   # i.i.d. baseline (srnn: + sparsity)
    python oml_omniglot.py --preset cpu --method maml-rep      # few-shot MAML of the PLN (docs/maml_rep.md)
    python oml_omniglot.py --method anml --preset anml_cpu     # ANML (Beaulieu et al. 2020; docs/anml.md)
    python oml_omniglot.py --preset cpu --selection-classes   # without the meta-validation classes (docs/protocols.md)
    python oml_omniglot.py --resume RUN_DIR             # continue a killed run
    python oml_omniglot.py --update_lr 0.03 --meta_lr 1e-4 --tasks 3 --update_step 5 --steps 700000 \
        --seed 1 2 --rank 1                             # the 2020 README's as a sweep: seed 2 (experiment/grid.py)

Data: --path names a folder holding images_background.zip and images_evaluation.zip (or the
extracted folders, or torchvision's omniglot-py/ nesting); default ../shared/omniglot.
"""
import argparse
import time
from pathlib import Path

import torch

from datasets.omniglot import load_omniglot
from datasets.omniglot_selection import reported_split, selection_split
from experiment import grid, limits, method_fields
from experiment.config import add_flags, as_dict, given_flags, given_settings, resolve, sweep_members, sweepable
from experiment.evaluation import native
from experiment.evaluation.features import feature_bank
from experiment.evaluation.omniglot import Protocol, evaluate
from experiment.omniglot_presets import IID_METHODS, OMNIGLOT_PRESETS, OmniglotConfig, build_model, config_from_checkpoint
from experiment.run import Run, read_metadata
from experiment.training.loop import RESUME_FLAGS, check_resume, fit, intervals, open_resumed, restore_training
from experiment.training.omniglot import iid_default_steps, load_meta_training_images, make_training, sampling_layout
from utils import bounds
from utils.cli import add_common, add_nonstandard_data, refuse_flag, run_main
from utils.device import resolve_device
from utils.errors import UserError

DEFAULT_PATH = "../shared/omniglot"
SEED_README_RLN = 6  # the 2019 README command passes --rln 6 and no preset: that is mrcl2019
# What --resume may be given besides RESUME_FLAGS: where the data are and the check after training.
DATA_FLAGS = {"path", "download", "cache_dir", "nonstandard_data", "quick_eval"}
SWEEP = grid.order("oml_omniglot", sweepable(OmniglotConfig))  # the flags that take several values, as --rank's digits


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_flags(parser, OmniglotConfig)  # the config's fields: only those given reach the namespace
    add_common(parser, training=True)
    refuse_flag(parser, ("--epoch", "--epochs"), "is not a flag of Omniglot meta-training: the original's Omniglot "
                "meta-training took --steps (meta-training steps), its pretraining script --epoch for passes over "
                "the data (here --iid-epochs); give one of those")
    parser.add_argument("--path", "--data-path", dest="path", default=None,
                        help=f"folder holding the Omniglot zips or folders (default {DEFAULT_PATH})")
    parser.add_argument("--download", action="store_true", help="fetch the official archives into --path if missing")
    parser.add_argument("--cache-dir", dest="cache_dir", default=None,
                        help="decoded-image cache (default $OML_CACHE_DIR or ./.oml_cache)")
    add_nonstandard_data(parser)
    parser.add_argument("--rln", type=int, default=None,
                        help="layers in the RLN: only 6 (the six convolutions), the seed README's value")
    parser.add_argument("--rank", type=int, default=0, help=grid.RANK_HELP)
    parser.add_argument("--quick-eval", dest="quick_eval", type=int, default=0, metavar="N",
                        help="after training, a quick meta-test check on N evaluation classes (selection classes "
                             "with --selection-classes), against a random RLN")
    return parser


def sweep_point(args):
    """(args with the --rank-th combination of the values given, {"rank", "grid"} for the metadata)."""
    return grid.select(args, SWEEP)


def _config(args) -> OmniglotConfig:
    """The resolved config of a sweep point (`sweep_point`): one value per flag."""
    if args.rln is not None and args.rln != SEED_README_RLN:
        raise UserError(f"--rln {args.rln} is not supported: the RLN is the six convolutions (--rln 6), "
                        "the PLN the layers after them")
    overrides = given_settings(args, OmniglotConfig)
    preset = overrides.pop("preset", None)
    if preset is None:
        preset = "mrcl2019" if args.rln == SEED_README_RLN else "anml" if overrides.get("method") == "anml" else "oml2020"
    config = resolve(OmniglotConfig, OMNIGLOT_PRESETS, preset, overrides)
    if "steps" not in overrides:  # the baselines' lengths have their own settings
        if config.method in IID_METHODS:
            config.steps = iid_default_steps(config)
        elif config.method == "maml-rep":
            config.steps = config.maml_steps
    return config


def _load_images(config, path, args):
    """((images, their background class ids), seconds)."""
    start = time.perf_counter()
    images = load_meta_training_images(config, path, cache_dir=args.cache_dir, download=args.download,
                                       progress=args.progress is not False, standard=not args.nonstandard_data)
    return images, round(time.perf_counter() - start, 2)


def _given(args) -> dict:
    """The explicit flags, in the config's terms (--class-split none is None, shown as typed)."""
    return given_flags(args, get_args_parser(), OmniglotConfig)


def _quick_eval_split(config, path, args):
    """The split of --quick-eval N (None for 0), loaded and checked before any write: the evaluation
    split, or the selection classes for a run that holds them out (a run meant to choose settings
    never reads an evaluation image)."""
    bounds.at_least("--quick-eval", args.quick_eval, 0, config.n_outputs, "the network's output units")
    if not args.quick_eval:
        return None
    load = dict(cache_dir=args.cache_dir, progress=args.progress is not False, standard=not args.nonstandard_data)
    if config.hold_out_selection:
        evaluation = selection_split(load_omniglot(path, "background", config.image_size, **load), load["standard"])
    else:
        evaluation = load_omniglot(path, "evaluation", config.image_size, **load)
    bounds.at_least("--quick-eval", args.quick_eval, 0, evaluation.n_classes,
                    f"the {evaluation.name} split at '{path}' has {evaluation.n_classes} classes")
    return evaluation


def main(args):
    device = resolve_device(args.device, tf32=args.tf32)
    limits.training_intervals(args)
    if args.resume:
        grid.refuse_sweep(args, SWEEP, "--resume continues one run")
    args, sweep = sweep_point(args)
    if args.resume:
        payload, config = check_resume(args.resume, benchmark="omniglot", config_from_checkpoint=config_from_checkpoint,
                                       given=_given(args), allowed=RESUME_FLAGS | DATA_FLAGS)
        limits.omniglot_training(config)
        folder = Path(payload["path"]).parent
        path = args.path or read_metadata(folder).get("data_path") or DEFAULT_PATH
        images, load_seconds = _load_images(config, path, args)  # before any write: bad data changes nothing
        sampling_layout(config, images[1])
        evaluation = _quick_eval_split(config, path, args)
        run = open_resumed(payload, config, device)
    else:
        config = _config(args)
        limits.method_flags(_given(args), config.method, method_fields.OMNIGLOT_METHOD_FIELDS)
        for member in sweep_members(args, sweep["grid"]):  # every value of a list, not only the one run here
            limits.omniglot_training(_config(member))
        limits.omniglot_training(config)
        limits.run_folder(args, limits.checkpoint_bytes(sum(limits.omniglot_params(config))))
        path = args.path or DEFAULT_PATH
        images, load_seconds = _load_images(config, path, args)  # before the folder: bad data leaves none
        sampling_layout(config, images[1])  # the classes left after a hold-out, counted exactly, before the folder
        evaluation = _quick_eval_split(config, path, args)
        if evaluation is not None:  # the quick check's native kernel: a refused kernel cache stops before the folder
            native.kernel()
        name = args.name or f"{config.method}_{config.preset}"
        run = Run.create(as_dict(config), dataset="omniglot", name=name, results_dir=args.results_dir, device=device,
                         lock=True)
        run.save_metadata(sweep=sweep)  # the rank and the grid it indexes, for grouping a sweep's runs
        payload = None
    with run:  # holds run.lock until the run is complete (or fails)
        if payload is not None:
            task = make_training(config, device, *images)
            start = restore_training(task, payload)
            print(f"resuming {run.dir} at step {start} of {config.steps}")
        else:
            task = make_training(config, device, *images)
            start = 0
            print(f"run folder: {run.dir}")
        run.save_metadata(data_path=str(Path(path).resolve()), data_load_seconds=load_seconds)
        fit(task, run, benchmark="omniglot", config=as_dict(config), start_step=start, total_steps=config.steps,
            progress=args.progress, **intervals(args, payload))
        run.save_metadata(train_finished=True)
        if evaluation is not None:
            result = quick_check(task.model, config, evaluation, args.quick_eval, device, args)
            run.write_json("quick_eval.json", result)
            print(f"quick check on {args.quick_eval} {evaluation.name} classes: test accuracy "
                  f"{result['trained']['held_out_accuracy']:.3f} (random RLN {result['random']['held_out_accuracy']:.3f})")
        run.save_metadata()
    return run.dir


def quick_check(model, config, evaluation, n_classes, device, args) -> dict:
    """The evaluation protocol, shrunk: n classes, 3 runs, 3 learning-rate search runs, a zero
    output layer (so the check does not depend on the scale of the features), against a random
    RLN of the same shape, on `evaluation` (the evaluation split, or the selection classes)."""
    torch.manual_seed(config.seed + 1)
    random = build_model(config)  # the untrained network of the same shape
    protocol = Protocol(reset="zero", runs=3, search_runs=3, seed=config.seed)
    result = {}
    for name, net in (("trained", model), ("random", random)):
        bank = feature_bank(net.rln.eval(), evaluation, cache_dir=False, device=device)
        entry = evaluate(net.pln, bank, (n_classes,), protocol, device=device, cache_dir=args.cache_dir)
        entry = entry["by_classes"][str(n_classes)]
        result[name] = {"held_out_accuracy": entry["held_out_accuracy"]["mean"],
                        "trajectory_accuracy": entry["trajectory_accuracy"]["mean"],
                        "lr": entry["lr"]}
    return {"split": reported_split(evaluation), **result}

if __name__ == "__main__":
    run_main(main, get_args_parser())
