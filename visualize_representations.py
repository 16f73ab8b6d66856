"""Representation heat maps and sparsity statistics (paper Table 1) of one or several checkpoints.

    python visualize_representations.py --name MRCL_rep_study --model RUN_DIR_or_checkpoint.pt
    python visualize_representations.py --model OML_RUN PRETRAIN_RUN SRNN_RUN --add-random \\
        --labels OML Pretraining SR-NN --name rep_study            # side by side, one column each
    python visualize_representations.py --model SINE_RUN --projection tsne

Inputs, as the original at HEAD: Omniglot background classes 0-899, all 20 images each (or a
seeded subset with --images); sine: samples of the checkpoint's own training function family.
A unit is active when its RLN output is > 0. Writes PNGs and statistics.json to
<results-dir>/<date>/<omniglot|sine>/<name>_<n>/ and prints the statistics table.
"""
import argparse
import re

from analysis import representation_stats as rs
from analysis.plots import plot_activity_histograms, plot_average_activation, plot_instance_grid, plot_model_grid, plot_projection
from analysis.representation_study import (
    DEFAULT_PROJECTION_CLASSES,
    DEFAULT_SEED,
    DEFAULT_SINE_INPUTS,
    ORIGINAL_CLASSES,
    SIDE_BY_SIDE_ROWS,
    inputs_for,
    load_subjects,
    study,
)
from experiment import limits
from experiment.config import as_dict
from experiment.identity import checkpoint_identity
from experiment.run import Run
from utils.cli import add_common, add_nonstandard_data, run_main
from utils.device import resolve_device


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common(parser, training=False)
    parser.set_defaults(seed=DEFAULT_SEED)
    parser.add_argument("--model", nargs="+", default=None, metavar="CKPT",
                        help="one or several checkpoints (.pt) or run folders, all Omniglot or all sine")
    parser.add_argument("--labels", nargs="+", default=None, help="one label per --model (default: the method)")
    parser.add_argument("--add-random", "--add_random", dest="add_random", action="store_true",
                        help="also measure an untrained network with the first model's config (seeded by --seed)")
    parser.add_argument("--path", "--data-path", "--data_path", dest="path", default="../shared/omniglot",
                        help="Omniglot folder with images_background(.zip) (default: ../shared/omniglot)")
    add_nonstandard_data(parser)
    parser.add_argument("--images", type=int, default=None,
                        help="inputs for the statistics: a seeded subset of this many (default: all 20 images "
                             f"of classes 0-{ORIGINAL_CLASSES - 1} for Omniglot, {DEFAULT_SINE_INPUTS} samples for sine)")
    parser.add_argument("--maps", type=int, default=36,
                        help="sample inputs in each model's heat-map grid (9 x 4 as the original)")
    parser.add_argument("--classes", type=int, default=None,
                        help="classes (Omniglot) or task slots (sine) in the 2-D projection "
                             f"(default {DEFAULT_PROJECTION_CLASSES}, or all when the inputs have fewer)")
    parser.add_argument("--projection", choices=("pca", "tsne"), default="pca",
                        help="2-D projection (default pca; tsne is slower)")
    parser.add_argument("--binary", action="store_true", help="draw the heat maps binarised (active = output > 0)")
    parser.add_argument("--batch-size", dest="batch_size", type=int, default=256, help="inputs per forward pass")
    return parser


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "model"


def _inputs(subjects, args) -> list:
    """Each subject's inputs, every size checked (against the data, and the memory it needs)
    before any representation is computed."""
    cache, chosen = {}, []
    for subject in subjects:
        if subject.benchmark == "sine":
            limits.sine_study(subject.config, args, args.images or DEFAULT_SINE_INPUTS)
        inputs = inputs_for(subject, args, cache)
        if subject.benchmark == "omniglot":
            limits.omniglot_study(subject.config, args, inputs.description["n_classes"])
        chosen.append(inputs)
    return chosen


def main(args):
    limits.study_flags(args)
    limits.run_folder(args)  # before the study, which would otherwise run and then fail to be written
    subjects = load_subjects(args)
    benchmark = subjects[0].benchmark
    device = resolve_device(args.device, tf32=args.tf32)
    results = [(subject, inputs, study(subject, inputs, args, device))
               for subject, inputs in zip(subjects, _inputs(subjects, args))]

    run = Run.create({"seed": args.seed, "benchmark": benchmark, "models": list(args.model),
                      "labels": [s.label for s in subjects], "add_random": args.add_random, "images": args.images,
                      "maps": args.maps, "classes": args.classes, "projection": args.projection, "binary": args.binary,
                      "path": args.path if benchmark == "omniglot" else None},
                     dataset=benchmark, name=args.name or "representations", results_dir=args.results_dir, device=device)
    labels = [s.label for s in subjects]
    figures = []
    for subject, _, res in results:
        figures.append(plot_model_grid(res["maps"], run.dir / f"instances_{_slug(subject.label)}.png",
                                       f"{subject.label}: representations of {len(res['maps'])} sample inputs "
                                       f"({res['map_shape'][0]} x {res['map_shape'][1]} map)", binary=args.binary))
    colour = "class" if benchmark == "omniglot" else "task slot"
    same_inputs = len({id(inputs) for _, inputs, _ in results}) == 1
    first = results[0][1]
    rows = min(SIDE_BY_SIDE_ROWS, args.maps)
    figures.append(plot_instance_grid(first.map_images[:rows] if same_inputs and first.map_images else None,
                                      [res["maps"][:rows] for _, _, res in results], labels, run.dir / "instances.png",
                                      row_titles=first.map_titles[:rows] if same_inputs else None, binary=args.binary))
    figures.append(plot_average_activation([res["average_map"] for _, _, res in results], labels,
                                           run.dir / "average_activation.png"))
    figures.append(plot_activity_histograms([res["histogram"] for _, _, res in results],
                                            [res["summary"] for _, _, res in results], labels, run.dir / "histogram.png"))
    if same_inputs:
        figures.append(plot_projection([res["points"] for _, _, res in results], first.projection_classes,
                                       first.class_names, labels, run.dir / "projection.png", args.projection, colour))
    else:  # models that see different inputs (other image sizes or sine layouts): one projection each
        for subject, inputs, res in results:
            figures.append(plot_projection([res["points"]], inputs.projection_classes, inputs.class_names,
                                           [subject.label], run.dir / f"projection_{_slug(subject.label)}.png",
                                           args.projection, colour))

    statistics = {
        "benchmark": benchmark,
        "active": "RLN output > 0",
        "seed": args.seed,
        "models": [{"label": subject.label, "model": checkpoint_identity(subject.payload, as_dict(subject.config)),
                    "inputs": inputs.description, **res["summary"], "map_shape": res["map_shape"],
                    "histogram": res["histogram"]}
                   for subject, inputs, res in results],
    }
    run.write_json("statistics.json", statistics)
    run.save_metadata()
    table = rs.format_table([{"label": m["label"], **m} for m in statistics["models"]])
    print(f"{benchmark} representations, {results[0][1].description['data']}:\n{table}")
    print(f"statistics: {run.dir / 'statistics.json'}\nfigures: {', '.join(f.name for f in figures)} in {run.dir}")
    return run.dir


if __name__ == "__main__":
    run_main(main, get_args_parser())
