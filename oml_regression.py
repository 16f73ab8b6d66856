"""Learn a representation for incremental sine waves (OML), or a baseline one, then evaluate it.

    python oml_regression.py                       # the quick start (preset `quick`)
    python oml_regression.py --preset oml2020      # the 2020 code's configuration (300k steps)
    python oml_regression.py --update_step 40 --meta_lr 0.0001 --update_lr 0.003 --tasks 10 \
        --capacity 10 --width 300 --rln 6          # the seed README's command (selects mrcl2019)
    python oml_regression.py --method pretraining  # the i.i.d. baseline (srnn: + sparsity)
    python oml_regression.py --seed 1 2 3 --meta_lr 1e-4 3e-4 --rank 4   # one point of a sweep (experiment/grid.py)
"""
import argparse

import torch

from experiment import grid, limits, method_fields
from experiment.checkpoint import load_checkpoint
from experiment.config import add_flags, as_dict, given_flags, given_settings, resolve, sweep_members, sweepable
from experiment.evaluation.sine import EVAL_SEED, evaluate, headline, make_protocol
from experiment.identity import checkpoint_identity
from experiment.run import Run
from experiment.sine_presets import SINE_PRESETS, SineConfig, build_model, config_from_checkpoint
from experiment.training.loop import RESUME_FLAGS, check_resume, fit, intervals, open_resumed, restore_training
from experiment.training.sine import make_training
from utils import bounds
from utils.cli import add_common, run_main
from utils.device import resolve_device
from utils.errors import UserError
from utils.plotting import plot_sine

SEED_README_FLAGS = {"capacity": 10, "width": 300, "rln": 6}  # the 2019 README command's signature
# What --resume may be given besides RESUME_FLAGS: how the finished run is evaluated, not what it trains.
EVAL_FLAGS = {"eval_runs", "eval_protocol", "eval_steps", "eval_batch", "eval_lr"}
SWEEP = grid.order("oml_regression", sweepable(SineConfig))  # the flags that take several values, as --rank's digits


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_flags(parser, SineConfig)  # the config's fields: only those given reach the namespace
    add_common(parser, training=True)
    parser.add_argument("--rank", type=int, default=0, help=grid.RANK_HELP)
    parser.add_argument("--eval-protocol", dest="eval_protocol", choices=["paper", "trajectory"], default="paper",
                        help="paper: 40 batches of 32 per function, rate searched (default); trajectory: the "
                             "meta-training trajectory at the inner rate")
    parser.add_argument("--eval-steps", dest="eval_steps", type=int, default=None, help="mini-batches per function")
    parser.add_argument("--eval-batch", dest="eval_batch", type=int, default=None, help="samples per mini-batch")
    parser.add_argument("--eval-lr", dest="eval_lr", type=float, default=None, help="fixed online rate: no search")
    return parser


def sweep_point(args):
    """(args with the --rank-th combination of the values given, {"rank", "grid"} for the metadata)."""
    return grid.select(args, SWEEP)


def _config(args) -> SineConfig:
    """The resolved config of a sweep point (`sweep_point`): one value per flag."""
    overrides = given_settings(args, SineConfig)
    preset = overrides.pop("preset", None)
    if preset is None:
        # The seed README's regression command names no preset but is the 2019 configuration.
        signature = all(overrides.get(k) == v for k, v in SEED_README_FLAGS.items())
        preset = "mrcl2019" if signature else "quick"
    return resolve(SineConfig, SINE_PRESETS, preset, overrides)


def _given(args) -> dict:
    """The explicit flags, in the config's terms (--inner-clip 0 is None, shown as typed)."""
    return given_flags(args, get_args_parser(), SineConfig)


def _eval_protocol(args, config):
    """The evaluation after training (None: --eval-runs 0), built and sized before any folder
    exists, so a bad evaluation flag is refused before the training it would follow."""
    runs = bounds.at_least("--eval-runs", getattr(args, "eval_runs", config.eval_runs), 0)  # a resumed run may change it
    if runs == 0:
        return None
    try:
        protocol = make_protocol(args.eval_protocol, config, batches_per_function=args.eval_steps,
                                 batch_size=args.eval_batch, lr=args.eval_lr, runs=runs,
                                 test_samples=config.eval_test_samples, seed=EVAL_SEED)
        limits.sine_evaluation(config, protocol)
    except UserError as err:
        raise UserError(f"the evaluation after training (--eval-* flags): {err}") from None
    return protocol


def main(args):
    device = resolve_device(args.device, tf32=args.tf32)
    limits.training_intervals(args)
    if args.resume:
        grid.refuse_sweep(args, SWEEP, "--resume continues one run")
    args, sweep = sweep_point(args)
    if args.resume:
        payload, config = check_resume(args.resume, benchmark="sine", config_from_checkpoint=config_from_checkpoint,
                                       given=_given(args), allowed=RESUME_FLAGS | EVAL_FLAGS)
        limits.sine_training(config)
        protocol = _eval_protocol(args, config)
        run = open_resumed(payload, config, device)
    else:
        config = _config(args)
        limits.method_flags(_given(args), config.method, method_fields.SINE_METHOD_FIELDS,
                            also=("trajectory evaluation",) if args.eval_protocol == "trajectory" else ())
        for member in sweep_members(args, sweep["grid"]):  # every value of a list, not only the one run here
            member_config = _config(member)
            limits.sine_training(member_config)
            _eval_protocol(member, member_config)
        limits.sine_training(config)
        limits.run_folder(args, limits.checkpoint_bytes(limits.sine_params(config)))
        protocol = _eval_protocol(args, config)
        torch.manual_seed(config.seed)
        name = args.name or f"{config.method}_{config.preset}"
        run = Run.create(as_dict(config), dataset="sine", name=name, results_dir=args.results_dir, device=device,
                         lock=True)
        run.save_metadata(sweep=sweep)  # the rank and the grid it indexes, for grouping a sweep's runs
        payload = None
    with run:  # holds run.lock until the run is complete (or fails)
        task = make_training(config, device)
        if payload is not None:
            start = restore_training(task, payload)
            print(f"resuming {run.dir} at step {start} of {config.steps}")
        else:
            start = 0
            print(f"run folder: {run.dir}")
        fit(task, run, benchmark="sine", config=as_dict(config), start_step=start, total_steps=config.steps,
            progress=args.progress, **intervals(args, payload))
        run.save_metadata(train_finished=True)
        if protocol is not None:
            _evaluate_run(run, task, config, protocol, device)
        run.save_metadata()
    return run.dir


def _evaluate_run(run, task, config, protocol, device):
    payload = load_checkpoint(run.dir, benchmark="sine")
    model = task.export() if hasattr(task, "export") else task.model
    try:
        result = _evaluate(model, config, protocol, device, checkpoint_identity(payload, as_dict(config)),
                           f"{config.method.upper()} ({config.preset})")
    except UserError as err:
        raise UserError(f"{err}; the trained checkpoint is kept in {run.dir} "
                        f"(evaluate it with evaluate_regression.py --model {run.dir} --lr ...)") from None
    run.write_json("results.json", result)
    torch.manual_seed(config.seed + 1)
    scratch = build_model(config)  # the untrained network of the same shape: the scratch reference
    shown = [result]
    try:
        reference = _evaluate(scratch, config, protocol, device, checkpoint_identity(None, as_dict(config)),
                              "untrained network")
        shown.append(reference)
    except UserError as err:
        # A reference that cannot learn at this rate is a finding, not a reason to fail the run.
        reference = {"benchmark": "sine", "label": "untrained network", "diverged": True, "error": str(err)}
    run.write_json("results_untrained.json", reference)
    figure = plot_sine(shown, [r["label"] for r in shown], run.dir / "mse.png")
    print("\n".join(headline(r) for r in shown))
    if reference.get("diverged"):
        print(f"untrained network: {reference['error']}")
    print(f"results: {run.dir / 'results.json'}\nfigure: {figure}")


def _evaluate(model, config, protocol, device, identity, label):
    result = evaluate(model, config, protocol, device=device)
    return {"benchmark": "sine", "label": label, "model": identity, **result}


if __name__ == "__main__":
    run_main(main, get_args_parser())
