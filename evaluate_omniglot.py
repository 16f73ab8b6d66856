"""Split-Omniglot continual-classification evaluation of a checkpoint (or of a baseline network).

    python evaluate_omniglot.py --model RUN_DIR_or_checkpoint.pt            # 10:50:100:200:600, 50 runs
    python evaluate_omniglot.py --model ckpt.pt --protocol 2019              # the 2019 code (paper's Fig. 4)
    python evaluate_omniglot.py --scratch --preset cpu                       # Scratch: whole fresh network online
    python evaluate_omniglot.py --preset cpu                                 # no --model: frozen random RLN
    python evaluate_omniglot.py --model ckpt.pt --iid --epochs 5             # the Oracle (i.i.d., 5 passes)
    python evaluate_omniglot.py --model ckpt.pt --lr 1e-3 --optimizer sgd    # fixed rate, the paper's SGD
    python evaluate_omniglot.py --rln 6 --model ckpt.pt --name Omni_test_traj --test --runs 50   # seed README
    python evaluate_omniglot.py --model oml.pt --learner online iid er mer ewc           # Table 2, OML column
    python evaluate_omniglot.py --model pretraining.pt --whole-network --learner er      # Table 2, Standard column
    python evaluate_omniglot.py --model oml.pt --learner ncm slda gauss     # exact streaming learners (docs/learners.md)
    python evaluate_omniglot.py --model a.pt b.pt --seed 1 2 --rank 2     # one point of a sweep (experiment/grid.py)
    python evaluate_omniglot.py --model RUN_DIR --selection-classes       # meta-validation: 10:50:97 selection classes

The RLN is frozen and its features of all evaluation images are computed once and cached; the
PLN is reset and trained online (batch 1, one class-sorted pass) per run; accuracy is reported on
the trajectory images and on the held-out images of the same classes. Protocol details and the
learning-rate rule: experiment/evaluation/omniglot.py; the 2019/2020 bundles: experiment/evaluation/omniglot_protocols.py
(`--protocol 2020`, the default, re-initialises the whole PLN; `2019` keeps a 2-layer PLN's
meta-learned hidden layer and re-initialises the output layer; `--pln-reset` (or `--reset`)
overrides either).
`--learner` runs the paper's Table 2 instead (experiment/evaluation/table2.py; docs/table2.md): the
continual-learning methods Online, Approx IID, ER-Reservoir, MER and EWC (model/continual/), SGD,
batch 1, one pass, on --classes-per-task C x --n-tasks T (default the paper's 1 x 50 and 5 x 20),
10 runs, hyperparameters searched per cell on validation trajectories (drawn from the reported
classes, or with --search-classes selection from the meta-validation classes); on the checkpoint's frozen
RLN (the OML or Pre-training column), or with --whole-network on the whole network from the
checkpoint's weights (the Standard column: give it the pretraining checkpoint).
`--learner ncm slda gauss` runs, instead of the SGD PLN, learners that cannot forget: nearest class
mean, shrunk shared-covariance LDA and a Bayesian Gaussian classifier, exact closed forms on the
same runs' streams (experiment/evaluation/streaming.py; docs/learners.md), one run folder each, in
the SGD PLN's results layout; with --scratch, a fresh random network per run gives the features.
The Oracle is the same representation learned i.i.d. with several passes (`--iid --epochs E`;
E = 5 as the paper's Fig. 4c/d "IID, 5 epochs"), with its own learning-rate search under that
regime. Two baselines need no checkpoint:

* `--scratch`: the paper's Scratch (the 2019 `--scratch`): per run a fresh random network of
  --preset (default cpu), or of --model's architecture (its weights unused), ALL of it trained
  online on the images (experiment/evaluation/scratch.py). No features can be cached: it is slow.
* no --model: a random RLN of --preset, seeded by the preset's seed or --network-seed, kept FROZEN;
  only the PLN is trained (what a representation without learning gives; not the paper's Scratch).
  `--network-seed 1 2 3` through the sweep launcher gives the random row several "meta-training
  seeds" (its config records the seed, so the aggregate reads it as one); the runs' classes stay
  those of --seed, the same as every checkpoint's.

`--selection-classes` evaluates on the 97 meta-validation classes (three background alphabets,
datasets/omniglot_selection.py) instead of the 659 evaluation classes, the same protocol and rate
search on them, and never opens an evaluation image: the way to choose how to meta-train. Only a
checkpoint meta-trained without them (oml_omniglot.py --selection-classes) is accepted.
"""
import argparse
import time

import torch

from datasets.omniglot import load_omniglot
from datasets.omniglot_selection import OFFICIAL_SELECTION_CLASSES, reported_split, selection_split
from experiment import grid, limits
from experiment.checkpoint import load_checkpoint, load_weights, resolve_checkpoint_path
from experiment.config import as_dict, from_dict, resolve, sweep_members
from experiment.evaluation import streaming, table2
from experiment.evaluation.features import feature_bank
from experiment.evaluation.omniglot import (
    DEFAULT_SCHEDULE,
    EVAL_SEED,
    Protocol,
    check_schedule,
    evaluate,
    headline,
    parse_schedule,
    total_steps,
)
from experiment.evaluation.omniglot_protocols import DEFAULT_PROTOCOL, PROTOCOL_NAMES, coincidence_note
from experiment.evaluation.omniglot_protocols import bundle as protocol_bundle
from experiment.evaluation.online_learner import OnlineLearner
from experiment.evaluation.scratch import EvalImages, evaluate_scratch
from experiment.evaluation.scratch import check_protocol as check_scratch_protocol
from experiment.identity import checkpoint_identity
from experiment.omniglot_presets import OMNIGLOT_PRESETS, OmniglotConfig, build_model
from experiment.run import Run
from utils import bounds
from utils.cli import add_common, add_nonstandard_data, one_or_more, run_main
from utils.device import resolve_device
from utils.errors import UserError
from utils.plotting import plot_omniglot

DEFAULT_PATH = "../shared/omniglot"
RANDOM_RLN_PRESET = "cpu"
SELECTION_SCHEDULE = (10, 50, OFFICIAL_SELECTION_CLASSES)  # --selection-classes: up to all 97
METHOD_LABELS = {"oml": "OML", "pretraining": "Pretraining", "srnn": "SR-NN", "maml-rep": "MAML-Rep", "anml": "ANML"}
# the flags that take several values (and --seed), as --rank's digits
SWEEP = grid.order("evaluate_omniglot", ("lr", "network_seed"))


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common(parser, training=False, sweep=True)
    parser.add_argument("--model", "--model-path", "--model_path", dest="model", default=None,
                        **one_or_more("checkpoint .pt or run folder; absent: a frozen random RLN of --preset (default cpu); "
                                      "with --scratch only its architecture is used"))
    parser.add_argument("--network-seed", type=int, default=None,
                        **one_or_more("no --model: the seed of the frozen random RLN's weights (default: the "
                                      "preset's seed); the evaluation's own draws stay those of --seed"))
    parser.add_argument("--scratch", action="store_true",
                        help="the paper's Scratch baseline: a fresh random network per run, the whole network "
                             "(RLN convolutions and PLN) trained online (slow: nothing can be cached)")
    parser.add_argument("--protocol", choices=PROTOCOL_NAMES, default=DEFAULT_PROTOCOL,
                        help="2020 (default): re-initialise the whole PLN; 2019 (the code behind the paper's "
                             "Fig. 4): keep a 2-layer PLN's hidden layer, re-initialise the output layer; anml: "
                             "ANML's meta-test rates (14, 1e-3..1e-5; docs/anml.md), the output layer re-initialised. "
                             "All: Adam, batch 1, one class-sorted pass, rate searched on trajectory accuracy")
    parser.add_argument("--path", "--data-path", dest="path", default=DEFAULT_PATH,
                        help=f"folder with the Omniglot zips or folders (default {DEFAULT_PATH})")
    add_nonstandard_data(parser)
    parser.add_argument("--cache-dir", dest="cache_dir", default=None,
                        help="decoded-image and RLN-feature cache (default $OML_CACHE_DIR or ./.oml_cache); the "
                             "native engine's compiled kernel is numba's, beside its source or in $NUMBA_CACHE_DIR, "
                             "which must be a private folder (docs/engines.md)")
    parser.add_argument("--no-feature-cache", dest="feature_cache", action="store_false",
                        help="keep the RLN features in memory only")
    parser.add_argument("--selection-classes", dest="selection_classes", action="store_true",
                        help="evaluate on the 97 meta-validation classes of the background split instead of the "
                             "evaluation classes (rate search included); the checkpoint must have been meta-trained "
                             "with --selection-classes")
    parser.add_argument("--schedule", nargs="+", default=None,
                        help="class counts, colon-separated (default 10:50:100:200:600; 10:50:97 with "
                             "--selection-classes)")
    parser.add_argument("--runs", type=int, default=50, help="reported runs per class count (default 50)")
    parser.add_argument("--search-runs", dest="search_runs", type=int, default=5,
                        help="learning-rate search runs per class count (default 5)")
    parser.add_argument("--lr", type=float, default=None, **one_or_more("fixed online learning rate: skips the search"))
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default="adam",
                        help="online optimiser: adam (the 2020 code, default) or sgd (the paper's text)")
    parser.add_argument("--iid", action="store_true", help="shuffle the trajectory (with --epochs: the Oracle)")
    parser.add_argument("--epochs", "--epoch", dest="epochs", type=int, default=1,
                        help="passes over the trajectory (the original evaluation's --epoch)")
    parser.add_argument("--pln-reset", "--reset", dest="pln_reset", choices=["all", "last", "zero"], default=None,
                        help="override --protocol's PLN reset: all (the 2020 default), last (the 2019 default), "
                             "zero: a zero output layer (a sensitivity check, not an original protocol); "
                             "Table 2 (--learner): all (the default) or zero")
    parser.add_argument("--run-batch", dest="run_batch", type=int, default=1,
                        help="portable/autograd engines: runs trained together (default 1, a loop: faster on CPU "
                             "for a 1000-way head)")
    parser.add_argument("--engine", choices=["auto", "native", "portable", "autograd", "c", "torch"], default="auto",
                        help="online learner: native (numba, linear PLN, CPU), portable (closed form, any device) or "
                             "autograd (per-step autograd: the reference, and the 2-layer PLN's); auto picks native "
                             "when it can (the old c = native, torch = portable); see docs/engines.md")
    group = parser.add_argument_group("Table 2 (continual-learning methods on a representation)")
    group.add_argument("--learner", nargs="+", choices=table2.LEARNER_NAMES + streaming.LEARNER_NAMES, default=None,
                       help="ncm, slda, gauss: the exact streaming learners on the Fig. 4 runs (docs/learners.md); or "
                            "run Table 2 with these learners: online, iid (Approx IID), er (ER-Reservoir), mer, ewc "
                            "(then --runs defaults to 10, the paper's, and --search-runs to 2 validation trajectories "
                            "per cell, 1 with --whole-network)")
    group.add_argument("--whole-network", dest="whole_network", action="store_true",
                       help="Table 2's Standard column: learn the whole network online from the checkpoint's weights "
                            "(give the pretraining checkpoint); without it the RLN is frozen (OML / Pre-training)")
    group.add_argument("--classes-per-task", dest="classes_per_task", nargs="+", default=None,
                       help="classes per task of each setting, colon-separated (default 1:5, the paper's)")
    group.add_argument("--n-tasks", dest="n_tasks", nargs="+", default=None,
                       help="tasks of each setting, one per --classes-per-task (default 50:20, the paper's)")
    group.add_argument("--search-classes", dest="search_classes", choices=("reported", "selection"), default="reported",
                       help="the classes of each cell's hyperparameter search: reported (the default, the paper's "
                            "practice: validation trajectories drawn from the classes reported on) or selection (the "
                            "97 meta-validation classes; the checkpoint must have been meta-trained with "
                            "--selection-classes; 5 x 20 is searched on 5 x 19)")
    group.add_argument("--hyperparameters-from", dest="hyperparameters_from", nargs="+", default=None,
                       metavar="RUN", help="no search: every cell takes the hyperparameters chosen by the one of these "
                                           "Table 2 runs that evaluated a checkpoint of this checkpoint's method, "
                                           "preset and seed in this column (e.g. its twin meta-trained with --selection-classes, "
                                           "searched with --search-classes selection)")
    group.add_argument("--memory", type=int, default=table2.MEMORY_SIZE,
                       help=f"ER and MER buffer size (default {table2.MEMORY_SIZE}, the paper's)")
    group.add_argument("--mer-batches", dest="mer_batches", type=int, default=table2.Table2Protocol.mer_batches,
                       help="MER's s, replay batches per sample (default %(default)s)")
    group.add_argument("--mer-batch-size", dest="mer_batch_size", type=int,
                       default=table2.Table2Protocol.mer_batch_size,
                       help="MER's k, samples per batch, the current one included (default %(default)s)")
    group.add_argument("--mer-gamma", dest="mer_gamma", type=float, default=table2.Table2Protocol.mer_gamma,
                       help="MER's across-batch Reptile rate gamma (default %(default)s; beta is searched)")
    parser.add_argument("--rln", type=int, default=None,
                        help="accepted for the seed README's command; the RLN/PLN split is read from the checkpoint")
    parser.add_argument("--test", action="store_true",
                        help="accepted for the seed README's command; both accuracies are always reported")
    parser.add_argument("--rank", type=int, default=0, help=grid.RANK_HELP)
    return parser


def sweep_point(args):
    """(args with the --rank-th combination of the values given, {"rank", "grid"} for the metadata)."""
    return grid.select(args, SWEEP)


def _network(args):
    """(net, config, payload): the checkpoint's network, or a seeded random one of --preset.
    (--scratch uses only the architecture: every run initialises its own network.)"""
    if args.model is None:
        preset = args.preset or RANDOM_RLN_PRESET
        overrides = {} if args.network_seed is None else {"seed": args.network_seed}
        config = resolve(OmniglotConfig, OMNIGLOT_PRESETS, preset, overrides)
        torch.manual_seed(config.seed)
        net = build_model(config)
        return net, config, None
    payload = load_checkpoint(args.model, benchmark="omniglot")
    config = from_dict(OmniglotConfig, payload["config"])
    limits.checkpoint_network(config, payload)  # before a network of the config's sizes is built
    if args.preset is not None and args.preset != config.preset:
        print(f"note: --preset {args.preset} ignored; the checkpoint's network is preset {config.preset}")
    net = build_model(config)
    return load_weights(net, payload), config, payload


def _label(payload, config, args) -> str:
    if args.scratch:
        method = "Scratch"
    elif payload is None:
        method = "Frozen random RLN"
    else:
        method = METHOD_LABELS.get(payload["method"], payload["method"])
    extra = [] if args.protocol == DEFAULT_PROTOCOL else [f"protocol {args.protocol}"]
    if args.iid:
        extra.append("iid")
    if args.epochs > 1:
        extra.append(f"x{args.epochs}")
    if args.optimizer != "adam":
        extra.append(args.optimizer)
    if args.selection_classes:
        extra.append("selection classes")
    return f"{method} ({config.preset})" + (f", {' '.join(extra)}" if extra else "")


def _protocol(args) -> Protocol:
    """--protocol's bundle, with the explicit flags on top (--pln-reset overrides the bundle's reset)."""
    if args.scratch and args.pln_reset is not None:
        raise UserError("--pln-reset chooses what a checkpoint's PLN keeps; --scratch keeps nothing "
                        "(every run is a fresh random network)")
    protocol = Protocol(name=args.protocol, optimizer=args.optimizer, iid=args.iid, epochs=args.epochs,
                        reset=args.pln_reset or protocol_bundle(args.protocol).reset, lr=args.lr, runs=args.runs,
                        search_runs=args.search_runs, seed=EVAL_SEED if args.seed is None else args.seed,
                        run_batch=args.run_batch, engine=args.engine)
    protocol.validate()
    if args.scratch:
        check_scratch_protocol(protocol)
    return protocol


def _check_selection(payload, config, args, schedule=()) -> None:
    """With --selection-classes: refuse a checkpoint meta-trained on the selection classes (its
    scores there would not be validation scores), and, on the official data, a schedule beyond
    them; before any image is read. A random RLN and Scratch have no meta-training to refuse."""
    searched = getattr(args, "search_classes", "reported") == "selection"
    if args.selection_classes and searched:
        raise UserError("--search-classes selection searches on the selection classes, which --selection-classes "
                        "already reports on: drop one")
    if not (args.selection_classes or searched):
        return
    flag = "--selection-classes" if args.selection_classes else "--search-classes selection"
    if payload is not None and not args.scratch and not config.hold_out_selection:
        raise UserError(f"'{args.model}' was meta-trained on the selection classes (its config has no "
                        "hold_out_selection), so its scores on them are no validation scores: meta-train with "
                        f"--selection-classes, or evaluate without {flag}")
    too_many = [n for n in schedule if n > OFFICIAL_SELECTION_CLASSES]
    if too_many and not args.nonstandard_data:
        raise UserError(f"--schedule asks for {max(too_many)} classes, but there are only "
                        f"{OFFICIAL_SELECTION_CLASSES} selection classes")


def _split(args, image_size: int, progress: bool, selection: bool | None = None):
    """The classes evaluated: the evaluation split, or the selection classes of the background
    split (--selection-classes, or `selection`; no evaluation image is opened then)."""
    load = dict(cache_dir=args.cache_dir, progress=progress, standard=not args.nonstandard_data)
    if args.selection_classes if selection is None else selection:
        return selection_split(load_omniglot(args.path, "background", image_size, **load), load["standard"])
    return load_omniglot(args.path, "evaluation", image_size, **load)


def _identity(payload, config, args) -> dict:
    identity = checkpoint_identity(payload, as_dict(config))
    if not args.scratch:
        return identity
    return {"checkpoint": None, "method": "scratch", "preset": config.preset, "step": 0,
            "architecture_from": identity if payload else f"preset {config.preset}"}


def _table2_flags(args):
    """(settings, protocol) of a Table 2 run; the Fig. 4 protocol's flags it does not use are refused."""
    defaults = get_args_parser()
    given = {dest for dest, value in vars(args).items() if value != defaults.get_default(dest)}
    unused = sorted(given & {"scratch", "protocol", "lr", "optimizer", "iid", "epochs", "run_batch",
                             "engine", "schedule"})
    if args.hyperparameters_from and given & {"search_classes", "search_runs"}:
        raise UserError("--hyperparameters-from takes every cell's hyperparameters from earlier runs: there is no "
                        "search for --search-classes or --search-runs")
    if unused:
        flags = ", ".join("--" + name.replace("_", "-") for name in unused)
        raise UserError(f"{flags} belong to the Fig. 4 protocol; Table 2 (--learner) is SGD, batch 1, one pass, "
                        "with its own search (use --whole-network for the Standard column)")
    if args.pln_reset is not None:
        table2.head_start(args.pln_reset)  # all or zero: checked before any feature is computed
    readers = {"memory": ("er", "mer"), "mer_batches": ("mer",), "mer_batch_size": ("mer",), "mer_gamma": ("mer",)}
    for name, learners in readers.items():
        if name in given and not set(learners) & set(args.learner):
            raise UserError(f"--{name.replace('_', '-')} is read by --learner {' or '.join(learners)} only; with "
                            f"--learner {' '.join(args.learner)} it would be silently ignored: drop it")
    per_task = parse_schedule(args.classes_per_task) if args.classes_per_task else tuple(c for c, _ in table2.SETTINGS)
    default_tasks = dict(table2.SETTINGS)
    if args.n_tasks:
        tasks = parse_schedule(args.n_tasks)
    elif all(c in default_tasks for c in per_task):
        tasks = tuple(default_tasks[c] for c in per_task)
    else:
        raise UserError("--n-tasks is needed for classes per task other than the paper's 1 and 5")
    if len(tasks) != len(per_task):
        raise UserError(f"--n-tasks gives {len(tasks)} values for {len(per_task)} --classes-per-task values")
    protocol = table2.Table2Protocol(runs=args.runs if "runs" in given else 10,
                                     search_runs=args.search_runs if "search_runs" in given else None,
                                     seed=EVAL_SEED if args.seed is None else args.seed, memory=args.memory,
                                     mer_batches=args.mer_batches, mer_batch_size=args.mer_batch_size,
                                     mer_gamma=args.mer_gamma)
    protocol.validate()
    return tuple(zip(per_task, tasks)), protocol


def _table2_column(payload, args) -> str:
    if args.whole_network:
        if payload is not None and payload["method"] != "pretraining":
            print(f"note: the paper's Standard column starts from the i.i.d.-pretrained network; this is a "
                  f"{payload['method']} checkpoint")
        return "Standard"
    if payload is None:
        return "Frozen random RLN"
    return {**METHOD_LABELS, "pretraining": "Pre-training"}.get(payload["method"], payload["method"])  # the paper's column


def table2_main(args, sweep):
    """Table 2 cells of one column (one representation) for every learner and setting given."""
    settings, protocol = _table2_flags(args)
    device = resolve_device(args.device, tf32=args.tf32)
    if device.type != "cpu":
        print("note: Table 2 learners run on the CPU (batch-1 steps)")
    net, config, payload = _network(args)
    _check_selection(payload, config, args)
    column = _table2_column(payload, args)
    split = _split(args, config.image_size, args.progress is not False)
    table2.check_settings(settings, split.n_classes, config.n_outputs)
    chosen = None if not args.hyperparameters_from else table2.chosen_from(
        args.hyperparameters_from, (config.method, config.preset, config.seed), column, settings, args.learner)
    search_split = _split(args, config.image_size, args.progress is not False, True) \
        if args.search_classes == "selection" else None
    if search_split is not None:  # a setting the search split cannot hold is refused before a folder is written
        for setting in settings:
            table2.search_setting(setting, search_split.n_classes)

    def inputs(of_split):  # the images the whole network learns, or the frozen RLN's features
        if args.whole_network:
            return EvalImages.from_split(of_split)
        return feature_bank(net.rln, of_split, cache_dir=False if not args.feature_cache else args.cache_dir,
                            progress=args.progress is not False)
    bank = inputs(split)
    search_bank = None if search_split is None else inputs(search_split)
    rep = (table2.WholeNetwork(net, args.pln_reset or "all") if args.whole_network
           else table2.FrozenRLN(net.pln, column, args.pln_reset or "all"))
    label = f"Table 2, {column} ({config.preset})"
    run = Run.create({"evaluated": as_dict(config), "args": vars(args), "table2": [list(s) for s in settings],
                      "split": reported_split(split)},
                     dataset="omniglot_table2", name=args.name or "table2", results_dir=args.results_dir,
                     device="cpu")
    run.save_metadata(sweep=sweep)  # the rank and the grid it indexes, for grouping a sweep's runs
    print(f"{label}: {', '.join(args.learner)} on {', '.join(table2.setting_name(*s) for s in settings)}; "
          f"{protocol.runs} runs per cell")
    seconds = {}

    def report(setting, learner, entry, spent):
        print(table2.headline(setting, learner, entry, spent), flush=True)
        seconds[f"{setting}/{learner}"] = round(spent, 1)

    start, cpu = time.perf_counter(), time.process_time()
    searched = "the reported classes" if search_split is None else f"the {reported_split(search_split)} classes"
    result = table2.evaluate_table2(rep, bank, tuple(args.learner), settings, protocol, report=report,
                                    search_bank=search_bank, search_split=searched, chosen=chosen)
    result = {"benchmark": "omniglot_table2", "label": label, "split": reported_split(split),
              "model": checkpoint_identity(payload, as_dict(config)), **result}
    run.write_json("results.json", result)
    run.save_metadata(cell_seconds=seconds, evaluation_seconds=round(time.perf_counter() - start, 2),
                      evaluation_cpu_seconds=round(time.process_time() - cpu, 2))
    print(f"results: {run.dir / 'results.json'}\ntable: python plot_results.py --table2 {run.dir} ...")
    return run.dir


def streaming_main(args, sweep):
    """The exact streaming learners (--learner ncm slda gauss), one run folder per learner."""
    streaming.check_flags(args, get_args_parser())
    schedule = parse_schedule(args.schedule) if args.schedule else (
        SELECTION_SCHEDULE if args.selection_classes else DEFAULT_SCHEDULE)
    protocol = streaming.StreamingProtocol(runs=args.runs, search_runs=args.search_runs,
                                           seed=EVAL_SEED if args.seed is None else args.seed)
    protocol.validate()
    device = resolve_device(args.device, tf32=args.tf32)
    net, config, payload = _network(args)
    _check_selection(payload, config, args, schedule)
    progress = args.progress is not False
    split = _split(args, config.image_size, progress)
    streaming.check_schedule(schedule, split.n_classes, f"the {split.name} split at '{args.path}'")
    if args.scratch:
        source = streaming.RandomNetworks(net, EvalImages.from_split(split, device), device)
        label, inputs = f"Random network per run ({config.preset})", {"feature_source": "a fresh network per run"}
    else:
        bank = feature_bank(net.rln, split, cache_dir=False if not args.feature_cache else args.cache_dir,
                            device=device, progress=progress)
        source = streaming.FrozenFeatures(bank)
        label, inputs = _label(payload, config, args), {"feature_seconds": bank.seconds, "feature_source": bank.source}
        print(f"{label}: features {tuple(bank.train.shape)} + {tuple(bank.test.shape)} ({bank.source}, "
              f"{bank.seconds:.1f} s)")
    config_record = {"evaluated": as_dict(config), "args": vars(args), "schedule": list(schedule),
                     "split": reported_split(split)}
    folders = streaming.write_evaluations(args.learner, source, schedule, protocol, config=config_record, label=label,
                                          model=_identity(payload, config, args), split=reported_split(split),
                                          name=args.name, results_dir=args.results_dir, device=device, sweep=sweep,
                                          inputs=inputs)
    if len(folders) > 1:
        print(f"figure: python plot_results.py {' '.join(str(f) for f in folders)} --out fig4.png")
    return folders[-1]


def _check_members(args, sweep) -> None:
    """Every value of a list-valued flag (a sweep) checked as a single value is, whichever --rank runs."""
    for member in [args, *sweep_members(args, sweep["grid"])]:
        if member.network_seed is not None:
            if member.model is not None or args.scratch:
                raise UserError("--network-seed seeds the frozen random RLN (no --model, no --scratch); "
                                "a checkpoint has its own weights and --scratch draws a network per run")
            bounds.seed(member.network_seed, "--network-seed")
    for member in sweep_members(args, sweep["grid"]):
        if args.learner:
            bounds.seed(EVAL_SEED if member.seed is None else member.seed)
        else:
            _protocol(member)
        if member.model is not None:
            resolve_checkpoint_path(member.model)


def main(args):
    args, sweep = sweep_point(args)
    _check_members(args, sweep)
    if args.rln is not None:  # accepted for the seed README's command (and then only noted)
        bounds.at_least("--rln", args.rln)
    limits.run_folder(args)  # before the features and the runs, which would otherwise fail to be written
    if args.learner and streaming.split_learners(args.learner):
        return streaming_main(args, sweep)
    if args.learner:
        return table2_main(args, sweep)
    defaults = get_args_parser()
    for flag in table2.FLAGS:
        if getattr(args, flag) != defaults.get_default(flag):
            raise UserError(f"--{flag.replace('_', '-')} is a Table 2 flag: give --learner too")
    if args.schedule:
        schedule = parse_schedule(args.schedule)
    else:
        schedule = SELECTION_SCHEDULE if args.selection_classes else DEFAULT_SCHEDULE
    protocol = _protocol(args)
    device = resolve_device(args.device, tf32=args.tf32)
    net, config, payload = _network(args)
    _check_selection(payload, config, args, schedule)
    if not args.scratch:  # the engine picked now: a refused one (or its kernel cache) stops before anything is written
        OnlineLearner(net.pln, protocol, device)
    n_convs = len(config.strides)
    if args.rln is not None and args.rln != n_convs:
        print(f"note: --rln {args.rln} ignored; this network's RLN is its {n_convs} convolutions (from the checkpoint)")
    if args.test:
        print("note: --test accepted; trajectory and held-out accuracy are both always reported")
    if args.scratch and payload is not None:
        print(f"note: --scratch uses only the architecture of '{args.model}' (preset {config.preset}); "
              "every run starts from fresh random weights")
    note = coincidence_note(args.protocol, scratch=args.scratch, linear_pln=config.pln_hidden == 0)
    if note:
        print(note)
    progress = args.progress is not False
    split = _split(args, config.image_size, progress)
    check_schedule(schedule, split.n_classes, config.n_outputs, f"the {split.name} split at '{args.path}'")
    limits.omniglot_evaluation(config, protocol, split.n_classes, scratch=args.scratch)
    label = _label(payload, config, args)
    run = Run.create({"evaluated": as_dict(config), "args": vars(args), "schedule": list(schedule),
                      "split": reported_split(split)},
                     dataset="omniglot_eval", name=args.name or "evaluation", results_dir=args.results_dir, device=device)
    run.save_metadata(sweep=sweep)  # the rank and the grid it indexes, for grouping a sweep's runs
    start = time.perf_counter()
    steps = total_steps(schedule, protocol)
    if args.scratch:  # the network changes at every step: it runs on the images, nothing is cached
        bank = EvalImages.from_split(split, device)
        inputs = {"feature_source": "none: Scratch trains the whole network on the images"}
        print(f"{label}: images {tuple(bank.train.shape)} + {tuple(bank.test.shape)}; {steps:,} online steps, "
              "each a forward and backward pass of the whole network")
    else:
        bank = feature_bank(net.rln, split, cache_dir=False if not args.feature_cache else args.cache_dir,
                            device=device, progress=progress)
        inputs = {"feature_seconds": bank.seconds, "feature_source": bank.source}
        print(f"{label}: features {tuple(bank.train.shape)} + {tuple(bank.test.shape)} ({bank.source}, "
              f"{bank.seconds:.1f} s); {steps:,} online steps")
    done = {}

    def report(n, entry):  # a line per class count, and the numbers so far on disk
        print(headline(n, entry), flush=True)
        done[str(n)] = entry
        run.write_json("results.partial.json", {"benchmark": "omniglot", "label": label, "split": reported_split(split),
                                                "schedule": [int(k) for k in done], "by_classes": done})

    if args.scratch:
        result = evaluate_scratch(net, bank, schedule, protocol, device=device, progress=progress, report=report)
    else:
        result = evaluate(net.pln, bank, schedule, protocol, device=device, cache_dir=args.cache_dir,
                          progress=progress, report=report)
    result = {"benchmark": "omniglot", "label": label, "split": reported_split(split),
              "model": _identity(payload, config, args), **result}
    run.write_json("results.json", result)
    (run.dir / "results.partial.json").unlink(missing_ok=True)
    figure = plot_omniglot([result], [label], run.dir / "fig4.png")
    run.save_metadata(**inputs, evaluation_seconds=round(time.perf_counter() - start, 2),
                      engine=result["protocol"]["engine"], learner=result["protocol"]["learner"])
    print(f"results: {run.dir / 'results.json'}\nfigure: {figure}")
    return run.dir


if __name__ == "__main__":
    run_main(main, get_args_parser())
