"""Incremental sine: meta-step time and peak memory, this repository vs the original's algorithm,
and evaluation with runs batched vs looped. Prints a table; all ratios are from the same run.

The floor column times what no implementation of the step can skip: the network's forward and
backward over the step's K x B + M samples with the same sampling and Adam step, so ours/floor is
what the inner loop still costs on top. The autograd column is our step with the inner loop's
gradients taken by autograd (`create_graph=True`) instead of the closed form a linear PLN allows
(model/linear_inner_loop.py); for `mrcl2019` (a three-layer PLN) both are the autograd loop.

    python benchmarks/sine_speed.py                  # both presets, a few steps each (~3 min on 2 cores)
    python benchmarks/sine_speed.py --steps 20 --threads 2

The reference (model/reference.py) is the original's computation: the whole network re-run for
every inner step and the meta-set loss recomputed (with graph) after every step. Each measurement
runs in a fresh subprocess, so its peak memory (max RSS, or CUDA max allocated) is its own.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from isolated import add_flags, answer_child, apply_threads, peak_mb, run_child

from experiment.config import resolve
from experiment.evaluation.sine import evaluate, make_protocol
from experiment.sine_presets import (
    SINE_PRESETS,
    SineConfig,
    build_model,
)
from experiment.training.sine import OMLTraining
from model.meta_learner import meta_loss
from model.reference import reference_meta_loss
from utils.device import resolve_device


def measure_step(preset: str, impl: str, steps: int, device) -> dict:
    cfg = resolve(SineConfig, SINE_PRESETS, preset, {})
    task = OMLTraining(cfg, device)  # the training step itself: its batch(), then either objective
    sample_seconds, step_seconds = 0.0, []
    baseline = peak_mb(device)
    for i in range(steps + 1):  # the first step warms up and is not counted
        t0 = time.perf_counter()
        batch = task.batch()
        t1 = time.perf_counter()
        if impl == "ours":
            loss = meta_loss(task.model, *batch, task.loss_fn, task.rule).loss
        elif impl == "autograd":  # a loss that is not F.mse_loss itself keeps inner_loop on its autograd path
            loss = meta_loss(task.model, *batch, lambda out, y: F.mse_loss(out, y), task.rule).loss
        elif impl == "floor":
            x = torch.cat([batch.x_traj.flatten(0, 1), batch.x_meta])
            y = torch.cat([batch.y_traj.flatten(0, 1), batch.y_meta])
            loss = F.mse_loss(task.model(x), y)
        else:
            loss = reference_meta_loss(task.model, *batch, task.loss_fn, task.rule)
        task.update(loss)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t2 = time.perf_counter()
        if i:
            sample_seconds += t1 - t0
            step_seconds.append(t2 - t0)
    total = sum(step_seconds)
    return {"ms_per_step": 1000 * total / steps, "sampling_share": sample_seconds / total,
            "peak_mb": peak_mb(device), "baseline_mb": baseline}


def measure_eval(run_batch: int, runs: int, device) -> dict:
    cfg = resolve(SineConfig, SINE_PRESETS, "oml2020", {})
    torch.manual_seed(0)
    model = build_model(cfg)
    t0 = time.perf_counter()
    # the paper protocol at a fixed rate: the timing is of the online learner, not of the search
    result = evaluate(model, cfg, make_protocol("paper", cfg, runs=runs, seed=1, run_batch=run_batch, lr=0.003), device=device)
    return {"seconds": time.perf_counter() - t0, "final": result["final_mse"]["mean"], "peak_mb": peak_mb(device)}




def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed meta-steps per measurement (reference: at most 2)")
    parser.add_argument("--eval-runs", type=int, default=20, help="evaluation runs timed (0: skip the evaluation row)")
    parser.add_argument("--presets", nargs="+", default=["oml2020", "mrcl2019"], choices=["oml2020", "mrcl2019"])
    add_flags(parser)
    args = parser.parse_args()
    apply_threads(args)
    device = resolve_device(args.device)
    if answer_child(args, lambda kind, *rest: measure_step(rest[0], rest[1], int(rest[2]), device) if kind == "step"
                    else measure_eval(int(rest[0]), int(rest[1]), device)):
        return
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{'meta-step':<12}{'floor ms':>10}{'ours ms':>10}{'autograd ms':>13}{'reference ms':>14}{'ours/floor':>12}"
          f"{'ref/ours':>10}{'ours MB':>10}{'ref MB':>10}{'sampling':>10}")
    for preset in args.presets:
        floor = run_child(__file__, "step", preset, "floor", args.steps)
        ours = run_child(__file__, "step", preset, "ours", args.steps)
        autograd = run_child(__file__, "step", preset, "autograd", args.steps)
        ref = run_child(__file__, "step", preset, "reference", min(args.steps, 2))
        print(f"{preset:<12}{floor['ms_per_step']:>10.1f}{ours['ms_per_step']:>10.1f}{autograd['ms_per_step']:>13.1f}"
              f"{ref['ms_per_step']:>14.1f}{ours['ms_per_step'] / floor['ms_per_step']:>11.2f}x"
              f"{ref['ms_per_step'] / ours['ms_per_step']:>9.1f}x"
              f"{ours['peak_mb']:>10.0f}{ref['peak_mb']:>10.0f}{100 * ours['sampling_share']:>9.1f}%")
    if not args.eval_runs:
        return
    looped = run_child(__file__, "eval", 1, args.eval_runs)
    batched = run_child(__file__, "eval", 10, args.eval_runs)
    same = "identical" if looped["final"] == batched["final"] else f"DIFFER {looped['final']} vs {batched['final']}"
    print(f"\nevaluation, oml2020 network, {args.eval_runs} runs: looped {looped['seconds']:.1f} s, "
          f"batched (10 runs at once) {batched['seconds']:.1f} s, {looped['seconds'] / batched['seconds']:.1f}x; "
          f"final MSE {same}")


if __name__ == "__main__":
    main()
