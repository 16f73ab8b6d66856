"""Cost of the full Split-Omniglot protocol: cached features + the online engines vs the original's way.

    OMP_NUM_THREADS=1 python benchmarks/omniglot_eval.py          # cpu preset and paper network, 1 thread
    OMP_NUM_THREADS=1 python benchmarks/omniglot_eval.py --networks cpu --ours-steps 1500

The protocol timed: schedule 10:50:100:200:600, 50 reported runs, learning-rate search (5 search
runs x 8 rates) per class count: 1,296,000 online steps of batch 1, plus the accuracy passes
(search runs score their 15n trajectory images, reported runs 15n + 5n images: 1,536,000 images).

* ours: the RLN runs once over the 13,180 evaluation images (timed in full for the cpu network,
  on a slice for the paper network), then every step trains only the 1000-way linear PLN on cached
  features, with each engine (docs/engines.md): native (numba), portable (closed form; what runs
  without numba, e.g. on Windows), and the autograd engine (per-step autograd + torch.optim.Adam,
  the original's way of training the head, on cached features).
* reference: what the original evaluate_omniglot.py does per step: the whole network forward on the
  image with autograd on (RLN gradients computed and thrown away), cross-entropy over 1000 outputs,
  backward, torch.optim.Adam (default implementation) on the PLN; and its accuracy passes re-run
  the network (batch 32, autograd on). It is timed on a slice and extrapolated (it would take days).

Both sides are measured in the same process, on the same random network, one thread, in wall time:
every component is the fastest of `--rounds` rounds that alternate ours and the reference, so on a
shared machine both sides see the same load.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import torch.nn.functional as F

from experiment.evaluation import native
from experiment.evaluation.omniglot import DEFAULT_SCHEDULE, LR_GRID, SEARCH_RUNS, Protocol
from experiment.evaluation.online_learner import OnlineLearner, _accuracy, train_autograd, train_native, train_portable
from experiment.omniglot_presets import OMNIGLOT_PRESETS
from model.networks import build_omniglot_net, features

N_EVAL_IMAGES = 659 * 20
RUNS = 50


def protocol_counts(schedule=DEFAULT_SCHEDULE, runs=RUNS, search_runs=SEARCH_RUNS):
    steps = sum((runs + search_runs * len(LR_GRID)) * 15 * n for n in schedule)
    images = sum(search_runs * len(LR_GRID) * 15 * n + runs * 20 * n for n in schedule)
    return steps, images


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _images(path, image_size, count, seed=0):
    """Real evaluation images when the data is there, else binary noise of the same size."""
    try:
        from datasets.omniglot import load_omniglot, to_float
        split = load_omniglot(path, "evaluation", image_size, progress=False)
        flat = split.images.reshape(-1, image_size, image_size)
        idx = np.random.default_rng(seed).choice(len(flat), size=min(count, len(flat)), replace=False)
        return to_float(flat[np.sort(idx)]), "real"
    except Exception:  # no data: the cost does not depend on the pixels
        gen = torch.Generator().manual_seed(seed)
        return (torch.rand(count, 1, image_size, image_size, generator=gen) > 0.1).float(), "synthetic"


def bench_network(name, args):
    """Seconds per unit of work for every component, each the minimum over `rounds` rounds that
    alternate ours and the reference, so both sides see the same load on a shared machine."""
    cfg = OMNIGLOT_PRESETS[name if name != "paper" else "oml2020"]
    torch.manual_seed(0)
    net = build_omniglot_net(cfg["channels"], cfg["image_size"], cfg["strides"], 0, 1000).eval()
    images, kind = _images(args.path, cfg["image_size"], args.feature_images[name])
    feats = features(net.rln, images, batch_size=128)
    steps = args.ours_steps
    order = np.arange(steps) % len(feats)
    labels = torch.as_tensor(np.arange(len(feats)) // 15 % 600)
    learner = OnlineLearner(net.pln, Protocol())
    init = learner.init(1)
    fn = native.kernel()
    t_steps = max(100, steps // 10)
    acc_idx = torch.as_tensor(np.arange(2000) % len(feats))
    xs, ys = feats[acc_idx], labels[acc_idx]
    ref_net = build_omniglot_net(cfg["channels"], cfg["image_size"], cfg["strides"], 0, 1000)
    opt = torch.optim.Adam(ref_net.pln.parameters(), lr=1e-3)
    n_ref = args.ref_steps[name]

    def ref_steps():
        for i in range(n_ref):
            out = ref_net(images[i % len(images)][None])
            loss = F.cross_entropy(out, labels[i % len(labels)][None])
            opt.zero_grad()
            loss.backward()
            opt.step()

    work = {  # name: (callable, units of work it does)
        "features (ours, once)": (lambda: features(net.rln, images, batch_size=128), len(images)),
        "ours: native engine (numba)": ((lambda: train_native(fn, init, feats, labels, order, 1e-3, "adam"))
                                        if fn else None, steps),
        "ours: portable engine, loop": (lambda: train_portable([init], feats[None], labels[None], order[None, :t_steps],
                                                               1e-3, "adam"), t_steps),
        f"ours: portable engine, {args.batch} runs batched": ((lambda: train_portable(
            [init] * args.batch, feats[None].expand(args.batch, -1, -1), labels[None].expand(args.batch, -1),
            np.tile(order[:t_steps], (args.batch, 1)), 1e-3, "adam")) if args.batch > 1 else None, t_steps * args.batch),
        "ours: autograd engine (per-step autograd + torch.optim.Adam)": (lambda: train_autograd(
            [init], feats[None], labels[None], order[None, :t_steps], 1e-3, "adam"), t_steps),
        "ours: accuracy pass": (lambda: _accuracy(init, xs, ys), len(xs)),
        "reference: online step": (ref_steps, n_ref),
        "reference: accuracy pass": (lambda: ref_net(images[:32]).argmax(1), min(32, len(images))),
    }
    work = {k: v for k, v in work.items() if v[0] is not None}
    ref_steps()  # warm-up
    best = {k: float("inf") for k in work}
    for _ in range(args.rounds):
        for key, (call, units) in work.items():
            best[key] = min(best[key], _timed(call)[0] / units)
    step_rows = {k: v for k, v in best.items() if k.startswith("ours:") and "accuracy" not in k}
    ours_name, t_ours_step = min(step_rows.items(), key=lambda kv: kv[1])
    n_steps, n_images = protocol_counts()
    t_feat_all = best["features (ours, once)"] * N_EVAL_IMAGES
    ours = t_feat_all + n_steps * t_ours_step + n_images * best["ours: accuracy pass"]
    ref = n_steps * best["reference: online step"] + n_images * best["reference: accuracy pass"]
    engines = {k: t_feat_all + n_steps * v + n_images * best["ours: accuracy pass"] for k, v in step_rows.items()}
    return {"network": name, "images": kind, "per_unit": best, "features_s": t_feat_all, "ours_engine": ours_name,
            "ours_total_s": ours, "ref_total_s": ref, "ratio": ref / ours, "ref_steps_timed": n_ref,
            "engines_total_s": engines, "zeros": float((feats == 0).float().mean())}


def native_compile_seconds() -> tuple[float, float]:
    """(first call in a fresh process with an empty numba cache, a later process's load): seconds
    spent in native.kernel(), which compiles or loads the kernel and runs its self-test."""
    import os
    import subprocess
    import tempfile
    child = ("import time, sys; t = time.perf_counter(); from experiment.evaluation import native; "
             "ok = native.kernel() is not None; print(ok, time.perf_counter() - t)")
    out = []
    with tempfile.TemporaryDirectory() as cache:
        for _ in range(2):
            done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                                  cwd=Path(__file__).resolve().parents[1], env={**os.environ, "NUMBA_CACHE_DIR": cache})
            ok, sec = done.stdout.split()
            out.append(float(sec) if ok == "True" else float("nan"))
    return out[0], out[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=["cpu", "paper"], choices=["cpu", "paper"])
    parser.add_argument("--path", default="../shared/omniglot")
    parser.add_argument("--ours-steps", dest="ours_steps", type=int, default=2000)
    parser.add_argument("--ref-steps-cpu", dest="ref_steps_cpu", type=int, default=50)
    parser.add_argument("--ref-steps-paper", dest="ref_steps_paper", type=int, default=4)
    parser.add_argument("--feature-images-cpu", dest="feature_images_cpu", type=int, default=1024)
    parser.add_argument("--feature-images-paper", dest="feature_images_paper", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4, help="runs in the batched torch-engine row (1: skip)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; each component keeps its fastest")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    args.ref_steps = {"cpu": args.ref_steps_cpu, "paper": args.ref_steps_paper}
    args.feature_images = {"cpu": args.feature_images_cpu, "paper": args.feature_images_paper}
    torch.set_num_threads(args.threads)
    n_steps, n_images = protocol_counts()
    print(f"protocol: schedule {':'.join(map(str, DEFAULT_SCHEDULE))}, {RUNS} runs + {SEARCH_RUNS}x{len(LR_GRID)} "
          f"search trials per n: {n_steps:,} online steps, {n_images:,} accuracy images; torch {torch.__version__}, "
          f"{args.threads} thread(s), wall time, best of {args.rounds} alternating rounds")
    table = []
    for name in args.networks:
        r = bench_network(name, args)
        table.append(r)
        print(f"\n== {name} network ({r['images']} images) ==")
        for key, sec in r["per_unit"].items():
            unit = "image" if ("features" in key or "accuracy" in key) else "step"
            print(f"  {key:<40s} {sec * 1e3:9.3f} ms/{unit}")
    if native.kernel() is not None:
        cold, warm = native_compile_seconds()
        print(f"\nnative engine: first use compiles in {cold:.1f} s (numba, empty cache); "
              f"later processes load it in {warm:.2f} s")
    for r in table:
        print(f"\n{r['network']} network, full protocol per engine (features + steps + accuracy passes; "
              f"{r['zeros']:.1%} of feature values are exact zeros):")
        print("| engine | ms/step | full protocol | vs autograd engine |")
        print("|---|---|---|---|")
        auto = r["engines_total_s"]["ours: autograd engine (per-step autograd + torch.optim.Adam)"]
        for key, total in r["engines_total_s"].items():
            print(f"| {key[6:]} | {r['per_unit'][key] * 1e3:.3f} | {total / 60:.1f} min | {auto / total:.1f}x |")
    print("\n| network | ours: full protocol | reference (slice, extrapolated) | ratio |")
    print("|---|---|---|---|")
    for r in table:
        print(f"| {r['network']} | {r['ours_total_s'] / 60:.1f} min (features {r['features_s']:.0f} s; {r['ours_engine']}) "
              f"| {r['ref_total_s'] / 3600:.1f} h ({r['ref_steps_timed']} steps timed) | {r['ratio']:.1f}x |")


if __name__ == "__main__":
    main()
