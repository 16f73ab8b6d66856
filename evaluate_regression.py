"""Continual-regression evaluation of a sine checkpoint (or of an untrained network).

    python evaluate_regression.py --model RUN_DIR_or_checkpoint.pt --runs 50   # the paper's protocol, rate searched
    python evaluate_regression.py --model ckpt.pt --iid --epochs 10     # the Oracle
    python evaluate_regression.py --model ckpt.pt --eval-protocol trajectory   # the meta-training trajectory
    python evaluate_regression.py --preset oml2020                      # no --model: untrained network
    python evaluate_regression.py --model ckpt.pt --name sine_test_set --rln 6 --tasks 10 --capacity 10 --runs 50
    python evaluate_regression.py --model ckpt.pt --seed 1 2 --lr 1e-3 3e-3 --rank 3    # one point of a sweep
    python evaluate_regression.py --model ckpt.pt --selection-functions   # the meta-validation pool, for choices

The protocol (experiment/evaluation/sine.py): 40 mini-batches of 32 per function, 10 functions in sequence,
one pass, the PLN not reset, the online rate chosen per checkpoint on validation trajectories'
training MSE among the rates that learned function 1 (`--lr` fixes it). A baseline checkpoint
exported with a chosen RLN/PLN split (`python -m experiment.export RUN OUT.pt --rln K`) is evaluated
at that split unless `--rln` says otherwise.
"""
import argparse

import torch

from experiment import grid, limits
from experiment.checkpoint import load_checkpoint, load_weights
from experiment.config import as_dict, resolve, sweep_members
from experiment.evaluation.sine import EVAL_SEED, evaluate, headline, make_protocol
from experiment.identity import checkpoint_identity
from experiment.run import Run
from experiment.sine_presets import SINE_PRESETS, SineConfig, build_model, config_from_checkpoint
from model.networks import resplit_sine_net
from utils.cli import add_common, one_or_more, run_main
from utils.device import resolve_device
from utils.errors import UserError
from utils.messages import note
from utils.plotting import plot_sine

# Flags that describe the network: with --model they must agree with the checkpoint (--rln may
# move the RLN/PLN boundary of an i.i.d. baseline, whose split is an evaluation choice).
SHAPE_FLAGS = ("capacity", "width", "rln")
SWEEP = grid.order("evaluate_regression", ("lr",))  # the flags that take several values (and --seed), as --rank's digits


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common(parser, training=False, sweep=True)
    parser.add_argument("--model", default=None, help="checkpoint .pt or run folder; absent: an untrained network")
    parser.add_argument("--runs", type=int, default=None, help="independent runs (default 50)")
    parser.add_argument("--eval-protocol", "--protocol", dest="eval_protocol", choices=["paper", "trajectory"],
                        default="paper", help="paper: 40 batches of 32 per function, rate searched (default); "
                                              "trajectory: the checkpoint's meta-training trajectory and inner rate")
    parser.add_argument("--fresh-pln", "--reset", dest="fresh_pln", action="store_true",
                        help="start the PLN from a fresh random init, not the learned one (the original's --reset)")
    parser.add_argument("--iid", action="store_true", help="shuffle the trajectory (with --epochs: the Oracle)")
    parser.add_argument("--epochs", type=int, default=1, help="passes over the trajectory")
    parser.add_argument("--lr", "--update_lr", "--update-lr", dest="lr", type=float, default=None,
                        **one_or_more("fixed online SGD step: skips the rate search"))
    parser.add_argument("--clip", type=float, default=None,
                        help="element-wise clamp of the online gradients (default: none in the paper protocol)")
    parser.add_argument("--tasks", type=int, default=None, help="functions per run (default: as trained)")
    parser.add_argument("--update_step", "--update-step", "--eval-steps", dest="update_step", type=int, default=None,
                        help="mini-batches per function (default: the protocol's, 40 in the paper's)")
    parser.add_argument("--batch-size", "--eval-batch", dest="batch_size", type=int, default=None,
                        help="samples per mini-batch (default: the protocol's, 32 in the paper's)")
    parser.add_argument("--search-runs", dest="search_runs", type=int, default=None,
                        help="validation trajectories of the rate search (default 5)")
    parser.add_argument("--test-samples", dest="test_samples", type=int, default=None, help="held-out samples per function")
    parser.add_argument("--run-batch", dest="run_batch", type=int, default=None, help="runs trained together (1: a plain loop)")
    for flag in SHAPE_FLAGS:
        parser.add_argument(f"--{flag}", type=int, default=None,
                            help="must match the checkpoint (accepted for the original's command)")
    parser.add_argument("--selection-functions", dest="selection", action="store_true",
                        help="evaluate on the meta-validation pool of functions (drawn apart from the test pool), "
                             "for choosing how to meta-train or which baseline candidate to keep")
    parser.add_argument("--rank", type=int, default=0, help=grid.RANK_HELP)
    return parser


def sweep_point(args):
    """(args with the --rank-th combination of the values given, {"rank", "grid"} for the metadata)."""
    return grid.select(args, SWEEP)


def _model_and_config(args):
    if args.model is None:
        # evaluation flags are not config fields: only those given shape the untrained network
        shape = {k: getattr(args, k) for k in (*SHAPE_FLAGS, "tasks") if getattr(args, k) is not None}
        config = resolve(SineConfig, SINE_PRESETS, args.preset or "quick", shape)
        torch.manual_seed(config.seed)
        return build_model(config), config, None
    payload = load_checkpoint(args.model, benchmark="sine")
    config = config_from_checkpoint(payload)
    limits.checkpoint_network(config, payload)  # before a network of the config's sizes is built
    if args.preset is not None and args.preset != config.preset:
        raise UserError(f"--preset {args.preset} contradicts the checkpoint, which is preset {config.preset}: "
                        "drop --preset (a checkpoint carries its own config; --preset names the untrained network)")
    if args.preset is not None:
        note(f"--preset {args.preset} is the checkpoint's own; the network is read from the checkpoint")
    chosen_rln = payload.get("evaluation_defaults", {}).get("rln")
    if args.rln is None and chosen_rln is not None and chosen_rln != config.rln:
        note(f"the checkpoint's chosen RLN/PLN split: rln {chosen_rln} (trained as {config.rln}; --rln overrides)")
        args.rln = chosen_rln
    resplit = args.rln is not None and args.rln != config.rln and payload["method"] in ("pretraining", "srnn")
    for flag in SHAPE_FLAGS:
        given = getattr(args, flag)
        if given is not None and given != getattr(config, flag) and not (flag == "rln" and resplit):
            raise UserError(f"--{flag} {given} does not match the checkpoint, which has {flag} {getattr(config, flag)}")
    model = load_weights(build_model(config), payload)
    if resplit:
        model = resplit_sine_net(model, config.arch, config.width, config.capacity, args.rln)
        config.rln = args.rln
    if args.tasks is not None:
        config.tasks = args.tasks
    config.validate()
    return model, config, payload


def protocol_from_args(args, config):
    return make_protocol(args.eval_protocol, config, batches_per_function=args.update_step, batch_size=args.batch_size,
                         lr=args.lr, clip=args.clip, reset=args.fresh_pln or None, iid=args.iid or None, epochs=args.epochs,
                         runs=args.runs, search_runs=args.search_runs,
                         test_samples=args.test_samples, seed=EVAL_SEED if args.seed is None else args.seed,
                         run_batch=args.run_batch, split="selection" if args.selection else None)


def main(args):
    args, sweep = sweep_point(args)
    limits.run_folder(args)  # before the evaluation, which would otherwise run and then fail to write
    device = resolve_device(args.device, tf32=args.tf32)
    model, config, payload = _model_and_config(args)
    for member in sweep_members(args, sweep["grid"]):  # every value of a list, not only the one run here
        protocol_from_args(member, config)
    protocol = protocol_from_args(args, config)
    limits.sine_evaluation(config, protocol)
    result = evaluate(model, config, protocol, device=device)
    method = payload["method"] if payload else "untrained"
    label = f"{method} ({config.preset})" + (f", iid x{args.epochs}" if args.iid or args.epochs > 1 else "")
    result = {"benchmark": "sine", "label": label, "model": checkpoint_identity(payload, as_dict(config)), **result}
    run = Run.create({"evaluated": as_dict(config), "args": {k: v for k, v in vars(args).items()}},
                     dataset="sine_eval", name=args.name or "evaluation", results_dir=args.results_dir, device=device)
    run.save_metadata(sweep=sweep)  # the rank and the grid it indexes, for grouping a sweep's runs
    run.write_json("results.json", result)
    figure = plot_sine([result], [label], run.dir / "mse.png")
    run.save_metadata()
    print(headline(result))
    print(f"results: {run.dir / 'results.json'}\nfigure: {figure}")
    return run.dir


if __name__ == "__main__":
    run_main(main, get_args_parser())
