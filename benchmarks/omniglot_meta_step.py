"""Omniglot: meta-step time and peak memory, this repository vs the original's algorithm, plus the
data-sampling share of a step and the decode-and-cache time of the data set. Prints tables; the
speed-ups are from the same run.

    python benchmarks/omniglot_meta_step.py                      # oml2020 (paper network) and cpu
    python benchmarks/omniglot_meta_step.py --presets oml2020 mrcl2019 cpu --steps 5

The reference (model/reference.py) is the original's computation: the whole network re-run for
every one-image inner step, and the meta-set loss recomputed through the whole network (with its
graph kept) after every inner step. Ours runs the RLN once per meta-step on the trajectory and
meta-set images together. Both take the same sampled images, output-row resets and Adam step.
The floor row times what no implementation can skip: the RLN's forward and backward over the
step's K+M images (with the same sampling and Adam step), so ours/floor is the inner loop's
remaining overhead. The autograd column is our step with the inner loop's gradients taken by
autograd (`create_graph=True`) instead of the closed form a linear PLN allows
(model/linear_inner_loop.py); for `mrcl2019` (a hidden PLN layer) both are the autograd loop.
For ANML (`--presets anml_cpu anml`) ours is model.anml.anml_meta_loss and the floor is both
networks' forward and backward over the step's images (the gate, the body and the head, once);
there is no reference or autograd column (its inner loop is the autograd loop).
Each measurement runs in a fresh subprocess, so its peak memory (max RSS on CPU, max allocated on
CUDA) is its own; the first step of each is a warm-up with our step and is not counted.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import torch.nn.functional as F
from isolated import add_flags, answer_child, apply_threads, peak_mb, run_child

from experiment.config import resolve
from experiment.omniglot_presets import OMNIGLOT_PRESETS, OmniglotConfig
from experiment.training.omniglot import OMLTraining, make_training
from model.anml import anml_meta_loss
from model.meta_learner import meta_loss
from model.networks import count_parameters
from model.reference import reference_meta_loss
from utils.device import resolve_device

REPO = Path(__file__).resolve().parents[1]
SHARED_OMNIGLOT = REPO.parent / "shared" / "omniglot"




def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_step(preset: str, impl: str, steps: int, device) -> dict:
    cfg = resolve(OmniglotConfig, OMNIGLOT_PRESETS, preset, {})
    # Synthetic pixels of the real shape: timing does not depend on what the strokes look like.
    images = np.random.default_rng(0).integers(0, 256, (cfg.n_classes, 20, cfg.image_size, cfg.image_size), dtype=np.uint8)
    anml = cfg.method == "anml"
    # the training step itself: its batch(), then either objective
    task = make_training(cfg, device, images) if anml else OMLTraining(cfg, device, images)
    model = task.model

    def one_step(which):
        t0 = time.perf_counter()
        batch = task.batch()
        _sync(device)
        t1 = time.perf_counter()
        if which == "ours" and anml:
            loss = anml_meta_loss(model, *batch, task.rule).loss
        elif which == "floor" and anml:  # the NM network, the body and the head, forward and backward, once
            loss = model(torch.cat([batch.x_traj.flatten(0, 1), batch.x_meta])).sum()
        elif which == "ours":
            loss = meta_loss(model, *batch, task.loss_fn, task.rule).loss
        elif which == "autograd":  # a loss that is not F.cross_entropy itself keeps inner_loop on its autograd path
            loss = meta_loss(model, *batch, lambda out, y: F.cross_entropy(out, y), task.rule).loss
        elif which == "floor":  # the RLN forward and backward over the step's images, nothing else
            images = torch.cat([batch.x_traj.flatten(0, 1), batch.x_meta])
            loss = model.rln(images).sum()
        else:
            loss = reference_meta_loss(model, *batch, task.loss_fn, task.rule)
        task.update(loss)
        _sync(device)
        return t1 - t0, time.perf_counter() - t0

    one_step("ours")  # warm-up (allocator, oneDNN/cuDNN primitives), not counted
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    baseline = peak_mb(device)
    sampled = [one_step(impl) for _ in range(steps)]
    total = sum(t for _, t in sampled)
    return {"ms_per_step": 1000 * total / steps, "sampling_share": sum(s for s, _ in sampled) / total,
            "peak_mb": peak_mb(device), "baseline_mb": baseline,
            "rln_params": count_parameters(model.rln), "pln_params": count_parameters(model.pln),
            "trajectory": cfg.tasks * cfg.update_step,
            "meta_set": cfg.meta_random + cfg.tasks * (cfg.held_out + (cfg.update_step if cfg.meta_repeats_trajectory else 0))}


def measure_decode(path: str, size: int) -> dict:
    from datasets.omniglot import load_both
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        background, evaluation = load_both(path, size, cache_dir=cache, progress=False)
        t1 = time.perf_counter()
        load_both(path, size, cache_dir=cache, progress=False)
        t2 = time.perf_counter()
    return {"decode_and_cache_s": t1 - t0, "warm_load_s": t2 - t1,
            "images": int(background.images.shape[0] * 20 + evaluation.images.shape[0] * 20),
            "mb": (background.images.nbytes + evaluation.images.nbytes) / 2**20}




def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["oml2020", "cpu"], choices=sorted(OMNIGLOT_PRESETS))
    parser.add_argument("--steps", type=int, default=3, help="timed meta-steps of ours (cpu preset: 10x as many)")
    parser.add_argument("--reference-steps", type=int, default=1, help="timed meta-steps of the reference (cpu preset: 10x)")
    parser.add_argument("--path", default=str(SHARED_OMNIGLOT), help="Omniglot data for the decode timing")
    parser.add_argument("--no-decode", dest="decode", action="store_false", help="skip the decode-and-cache timing")
    add_flags(parser)
    args = parser.parse_args()
    apply_threads(args)
    device = resolve_device(args.device)
    if answer_child(args, lambda kind, *rest: measure_step(rest[0], rest[1], int(rest[2]), device) if kind == "step"
                    else measure_decode(rest[0], int(rest[1]))):
        return
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, load average at start {load:.1f}")
    print(f"{'meta-step':<11}{'K+M imgs':>9}{'floor ms':>10}{'ours ms':>10}{'autograd ms':>13}{'reference ms':>14}"
          f"{'speed-up':>10}{'ours/floor':>11}{'ours +MB':>10}{'ref +MB':>10}{'sampling':>10}")
    for preset in args.presets:
        scale = 10 if preset == "cpu" else 1
        ours = run_child(__file__, "step", preset, "ours", args.steps * scale)
        floor = run_child(__file__, "step", preset, "floor", args.steps * scale)
        if OMNIGLOT_PRESETS[preset].get("method") == "anml":  # no reference or autograd variant
            print(f"{preset:<11}{ours['trajectory']:>4}+{ours['meta_set']:<4}{floor['ms_per_step']:>10.0f}"
                  f"{ours['ms_per_step']:>10.0f}{'-':>13}{'-':>14}{'-':>10}{ours['ms_per_step'] / floor['ms_per_step']:>10.1f}x"
                  f"{ours['peak_mb'] - ours['baseline_mb']:>10.0f}{'-':>10}{100 * ours['sampling_share']:>9.2f}%", flush=True)
            continue
        ref = run_child(__file__, "step", preset, "reference", args.reference_steps * scale)
        autograd = run_child(__file__, "step", preset, "autograd", args.steps * scale)
        print(f"{preset:<11}{ours['trajectory']:>4}+{ours['meta_set']:<4}{floor['ms_per_step']:>10.0f}"
              f"{ours['ms_per_step']:>10.0f}{autograd['ms_per_step']:>13.0f}{ref['ms_per_step']:>14.0f}"
              f"{ref['ms_per_step'] / ours['ms_per_step']:>9.1f}x{ours['ms_per_step'] / floor['ms_per_step']:>10.1f}x"
              f"{ours['peak_mb'] - ours['baseline_mb']:>10.0f}{ref['peak_mb'] - ref['baseline_mb']:>10.0f}"
              f"{100 * ours['sampling_share']:>9.2f}%", flush=True)
    print("(floor: the RLN's forward and backward over the step's K+M images, with sampling and the Adam step, "
          "the least any implementation does; autograd: ours with the generic inner loop; "
          "+MB: peak memory of the timed steps above the process's peak before "
          "them; sampling: share of our step spent sampling indices, resetting rows and gathering + converting the images)")
    if args.decode and Path(args.path).exists():
        print(f"\ndecode and cache, both splits, from {args.path}:")
        for size in sorted({84, *(OMNIGLOT_PRESETS[p]["image_size"] for p in args.presets)}):
            d = run_child(__file__, "decode", args.path, size)
            print(f"  {size}px: {d['images']} images decoded and cached in {d['decode_and_cache_s']:.1f} s "
                  f"({d['images'] / d['decode_and_cache_s']:.0f} img/s, {d['mb']:.0f} MB); warm load from the cache "
                  f"{d['warm_load_s']:.2f} s", flush=True)


if __name__ == "__main__":
    main()
