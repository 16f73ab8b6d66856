"""Incremental sine: meta-step time and peak memory, this repository vs the original's algorithm,
and evaluation with runs batched vs looped. Prints a table; all ratios are from the same run.

The floor column times what no implementation of the step can skip: the network's forward and
backward over the step's K x B + M samples with the same sampling and Adam step, so ours/floor is
what the inner loop still costs on top. The autograd column is our step with the inner loop's
gradients taken by autograd (`create_graph=True`) instead of the closed form a linear PLN allows
(model/linear_inner_loop.py); for `mrcl2019` (a three-layer PLN) both are the autograd loop.

    python benchmarks/sine_speed.py                  # both presets, a few steps each (~4 min on 2 cores)
    python benchmarks/sine_speed.py --steps 20 --reference-steps 3 --threads 2

Two references, both re-running the whole network for every inner step (model/reference.py):
`original` is the original sine code's own step for the preset (`original_meta_loss`: the 2020
code for `oml2020`, the meta-loss once after the inner loop; the 2019 code for `mrcl2019`, a
meta-loss on a growing prefix of the meta set after every step and inner gradients for the RLN's
weights too), so orig/ours is the speed-up over the original. `reference` recomputes the meta-set
loss on the whole meta set after every step (`reference_meta_loss`, the tests' brute force and what
the original classification code did), which the original sine code never did. Each measurement
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
from model.reference import original_meta_loss, reference_meta_loss
from utils.device import resolve_device

ORIGINAL_VERSION = {"oml2020": "2020", "mrcl2019": "2019"}  # the original code each preset follows


def measure_step(preset: str, impl: str, steps: int, device, clock: str = "wall") -> dict:
    """`clock` "cpu": this process's CPU time (one thread on a shared CPU: others' load changes it far
    less than wall time); "wall": elapsed time."""
    now = time.process_time if clock == "cpu" else time.perf_counter
    cfg = resolve(SineConfig, SINE_PRESETS, preset, {})
    task = OMLTraining(cfg, device)  # the training step itself: its batch(), then either objective
    sample_seconds, step_seconds = 0.0, []
    baseline = peak_mb(device)
    for i in range(steps + 1):  # the first step warms up and is not counted
        t0 = now()
        batch = task.batch()
        t1 = now()
        if impl == "ours":
            loss = meta_loss(task.model, *batch, task.loss_fn, task.rule).loss
        elif impl == "autograd":  # a loss that is not F.mse_loss itself keeps inner_loop on its autograd path
            loss = meta_loss(task.model, *batch, lambda out, y: F.mse_loss(out, y), task.rule).loss
        elif impl == "floor":
            x = torch.cat([batch.x_traj.flatten(0, 1), batch.x_meta])
            y = torch.cat([batch.y_traj.flatten(0, 1), batch.y_meta])
            loss = F.mse_loss(task.model(x), y)
        elif impl == "original":
            loss = original_meta_loss(task.model, *batch, task.loss_fn, task.rule, ORIGINAL_VERSION[preset])
        else:
            loss = reference_meta_loss(task.model, *batch, task.loss_fn, task.rule)
        task.update(loss)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t2 = now()
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
    parser.add_argument("--steps", type=int, default=5, help="timed meta-steps of floor, ours and autograd")
    parser.add_argument("--reference-steps", dest="reference_steps", type=int, default=2,
                        help="timed meta-steps of the original and the reference (default 2)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="meta-step time: wall (default) or the process's CPU time (with --threads 1 on a "
                             "shared machine, far less disturbed by other jobs)")
    parser.add_argument("--eval-runs", type=int, default=20, help="evaluation runs timed (0: skip the evaluation row)")
    parser.add_argument("--presets", nargs="+", default=["oml2020", "mrcl2019"], choices=["oml2020", "mrcl2019"])
    add_flags(parser)
    args = parser.parse_args()
    apply_threads(args)
    device = resolve_device(args.device)
    if answer_child(args, lambda kind, *rest: measure_step(rest[0], rest[1], int(rest[2]), device, rest[3]) if kind == "step"
                    else measure_eval(int(rest[0]), int(rest[1]), device)):
        return
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"meta-step times: {'CPU time' if args.clock == 'cpu' else 'wall time'}")
    print(f"{'meta-step':<12}{'floor ms':>10}{'ours ms':>10}{'autograd ms':>13}{'original ms':>13}{'reference ms':>14}"
          f"{'ours/floor':>12}{'orig/ours':>11}{'ref/ours':>10}{'ref/orig':>10}{'ours MB':>9}{'orig MB':>9}{'ref MB':>9}"
          f"{'sampling':>10}")
    for preset in args.presets:
        floor = run_child(__file__, "step", preset, "floor", args.steps, args.clock)
        ours = run_child(__file__, "step", preset, "ours", args.steps, args.clock)
        autograd = run_child(__file__, "step", preset, "autograd", args.steps, args.clock)
        orig = run_child(__file__, "step", preset, "original", args.reference_steps, args.clock)
        ref = run_child(__file__, "step", preset, "reference", args.reference_steps, args.clock)
        ms = {name: m["ms_per_step"] for name, m in
              (("floor", floor), ("ours", ours), ("autograd", autograd), ("orig", orig), ("ref", ref))}
        print(f"{preset:<12}{ms['floor']:>10.1f}{ms['ours']:>10.1f}{ms['autograd']:>13.1f}{ms['orig']:>13.1f}"
              f"{ms['ref']:>14.1f}{ms['ours'] / ms['floor']:>11.2f}x{ms['orig'] / ms['ours']:>10.2f}x"
              f"{ms['ref'] / ms['ours']:>9.2f}x{ms['ref'] / ms['orig']:>9.2f}x"
              f"{ours['peak_mb']:>9.0f}{orig['peak_mb']:>9.0f}{ref['peak_mb']:>9.0f}{100 * ours['sampling_share']:>9.1f}%")
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
