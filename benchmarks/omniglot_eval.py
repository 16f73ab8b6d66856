"""Cost of the full Split-Omniglot protocol: cached features + fused online learner vs the original's way.

    python benchmarks/omniglot_eval.py                       # cpu preset and paper network, 1 thread
    python benchmarks/omniglot_eval.py --networks cpu --ours-steps 5000

The protocol timed: schedule 10:50:100:200:600, 50 reported runs, learning-rate search (5 search
runs x 8 rates) per class count: 1,296,000 online steps of batch 1, plus the accuracy passes
(search runs score their 15n trajectory images, reported runs 15n + 5n images: 1,536,000 images).

* ours: the RLN runs once over the 13,180 evaluation images (timed in full for the cpu network,
  on a slice for the paper network), then every step trains only the 1000-way linear PLN on cached
  features: the fused C loop (and, for comparison, the torch engine looped and batched over runs).
* reference: what the original evaluate_omniglot.py does per step: the whole network forward on the
  image with autograd on (RLN gradients computed and thrown away), cross-entropy over 1000 outputs,
  backward, torch.optim.Adam (default implementation) on the PLN; and its accuracy passes re-run
  the network (batch 32, autograd on). It is timed on a slice and extrapolated (it would take days).

Both sides are measured in the same process, on the same random network, one thread by default,
in CPU seconds of this process (`--clock wall` for wall time): on a shared machine the wall time
of either side depends on the other jobs, its CPU time much less.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from model.networks import build_omniglot_net, features  # noqa: E402
from model.omniglot_eval import (DEFAULT_SCHEDULE, LR_GRID, SEARCH_RUNS, OnlineLearner, Protocol,  # noqa: E402
                                 _accuracy, c_engine, train_c, train_torch)
from model.omniglot_presets import OMNIGLOT_PRESETS  # noqa: E402

N_EVAL_IMAGES = 659 * 20
RUNS = 50


def protocol_counts(schedule=DEFAULT_SCHEDULE, runs=RUNS, search_runs=SEARCH_RUNS):
    steps = sum((runs + search_runs * len(LR_GRID)) * 15 * n for n in schedule)
    images = sum(search_runs * len(LR_GRID) * 15 * n + runs * 20 * n for n in schedule)
    return steps, images


CLOCK = time.process_time  # CPU seconds of this process: fair on a shared machine (single thread)


def _timed(fn):
    start = CLOCK()
    out = fn()
    return CLOCK() - start, out


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
    cfg = OMNIGLOT_PRESETS[name if name != "paper" else "oml2020"]
    torch.manual_seed(0)
    net = build_omniglot_net(cfg["channels"], cfg["image_size"], cfg["strides"], 0, 1000)
    slice_images = N_EVAL_IMAGES if name == "cpu" else args.paper_feature_images
    images, kind = _images(args.path, cfg["image_size"], slice_images)
    # ours 1: features of every evaluation image, once (or a slice, extrapolated)
    t_feat, feats = _timed(lambda: features(net.rln.eval(), images, batch_size=128))
    t_feat_all = t_feat * N_EVAL_IMAGES / len(images)
    # ours 2: online steps on cached features (a trajectory of real features, looped to length)
    steps = args.ours_steps
    order = np.arange(steps) % len(feats)
    labels = torch.as_tensor(np.arange(len(feats)) // 15 % 600)
    learner = OnlineLearner(net.pln, Protocol())
    init = learner.init(1)
    fn = c_engine()
    rows = {}
    if fn is not None:
        train_c(fn, init, feats, labels, order[:50], 1e-3, "adam")  # warm-up
        rows["ours: fused C loop"] = _timed(lambda: train_c(fn, init, feats, labels, order, 1e-3, "adam"))[0] / steps
    t_steps = max(200, steps // 10)
    rows["ours: torch engine, loop"] = _timed(lambda: train_torch(
        [init], feats[None], labels[None], order[None, :t_steps], 1e-3, "adam"))[0] / t_steps
    if args.batch > 1:
        rows[f"ours: torch engine, {args.batch} runs batched"] = _timed(lambda: train_torch(
            [init] * args.batch, feats[None].expand(args.batch, -1, -1), labels[None].expand(args.batch, -1),
            np.tile(order[:t_steps // 2], (args.batch, 1)), 1e-3, "adam"))[0] / (t_steps // 2 * args.batch)
    ours_name, t_ours_step = min(rows.items(), key=lambda kv: kv[1])
    # ours 3: accuracy passes are matrix products on cached features
    w = [p for p in init]
    xs = feats[torch.as_tensor(order[:2000] % len(feats))]
    t_ours_img = _timed(lambda: _accuracy(w, xs, labels[:1][None].expand(1, len(xs))[0]))[0] / len(xs)
    # reference: the whole network per online step, RLN gradients included, default Adam on the PLN
    ref_net = build_omniglot_net(cfg["channels"], cfg["image_size"], cfg["strides"], 0, 1000)
    opt = torch.optim.Adam(ref_net.pln.parameters(), lr=1e-3)

    def ref_step(i):
        out = ref_net(images[i % len(images)][None])
        loss = F.cross_entropy(out, labels[i % len(labels)][None])
        opt.zero_grad()
        loss.backward()
        opt.step()

    ref_step(0)
    n_ref = args.ref_steps_cpu if name == "cpu" else args.ref_steps_paper
    t_ref_step = _timed(lambda: [ref_step(i) for i in range(n_ref)])[0] / n_ref
    batch = images[:32]
    t_ref_img = _timed(lambda: ref_net(batch).argmax(1))[0] / len(batch)
    n_steps, n_images = protocol_counts()
    ours = t_feat_all + n_steps * t_ours_step + n_images * t_ours_img
    ref = n_steps * t_ref_step + n_images * t_ref_img
    return {"network": name, "images": kind, "features_s": t_feat_all, "feature_images_timed": len(images),
            "rows_ms": {k: v * 1e3 for k, v in rows.items()}, "ours_engine": ours_name,
            "ours_step_ms": t_ours_step * 1e3, "ours_img_us": t_ours_img * 1e6,
            "ref_step_ms": t_ref_step * 1e3, "ref_img_ms": t_ref_img * 1e3, "ref_steps_timed": n_ref,
            "ours_total_s": ours, "ref_total_s": ref, "ratio": ref / ours, "steps": n_steps, "eval_images": n_images}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=["cpu", "paper"], choices=["cpu", "paper"])
    parser.add_argument("--path", default="../shared/omniglot")
    parser.add_argument("--ours-steps", dest="ours_steps", type=int, default=3000)
    parser.add_argument("--ref-steps-cpu", dest="ref_steps_cpu", type=int, default=100)
    parser.add_argument("--ref-steps-paper", dest="ref_steps_paper", type=int, default=5)
    parser.add_argument("--paper-feature-images", dest="paper_feature_images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4, help="runs in the batched torch-engine row (1: skip)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    args = parser.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    n_steps, n_images = protocol_counts()
    print(f"protocol: schedule {':'.join(map(str, DEFAULT_SCHEDULE))}, {RUNS} runs + {SEARCH_RUNS}x{len(LR_GRID)} "
          f"search trials per n: {n_steps:,} online steps, {n_images:,} accuracy images; torch {torch.__version__}, "
          f"{args.threads} thread(s), {args.clock} time")
    for name in args.networks:
        r = bench_network(name, args)
        print(f"\n== {name} network ({r['images']} images) ==")
        print(f"  per online step: " + "; ".join(f"{k} {v:.2f} ms" for k, v in r["rows_ms"].items()))
        print(f"  reference step (network re-run, RLN grads, default Adam; {r['ref_steps_timed']} timed): "
              f"{r['ref_step_ms']:.1f} ms; reference accuracy pass {r['ref_img_ms']:.2f} ms/image")
        print(f"  features once: {r['features_s']:.1f} s ({r['feature_images_timed']} images timed); "
              f"our accuracy pass {r['ours_img_us']:.1f} us/image")
        print(f"  | network | ours (full protocol) | reference (extrapolated) | ratio |")
        print(f"  | {name} | {r['ours_total_s'] / 60:.1f} min ({r['ours_engine']}) | "
              f"{r['ref_total_s'] / 3600:.1f} h | {r['ratio']:.1f}x |")


if __name__ == "__main__":
    main()
