"""Figures drawn from results JSON alone (mean with 95% bootstrap band / error bars)."""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def load_results(paths) -> list[dict]:
    return [json.loads(Path(p).read_text()) for p in paths]


def plot_sine(results: list[dict], labels: list[str], out_path) -> Path:
    """The paper's Fig. 3 layout: (a) MSE over the functions seen so far, after each function;
    (b) MSE of each function after the whole trajectory."""
    fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(1, len(results))
    for i, (res, label) in enumerate(zip(results, labels)):
        curve = res["curve"]
        t = np.arange(1, len(curve["mean"]) + 1)
        line, = ax_a.plot(t, curve["mean"], marker="o", ms=3, label=label)
        ax_a.fill_between(t, curve["ci_low"], curve["ci_high"], color=line.get_color(), alpha=0.2)
        per = res["per_function"]
        mean = np.array(per["mean"])
        err = np.array([mean - per["ci_low"], np.array(per["ci_high"]) - mean])
        ax_b.bar(t + (i - (len(results) - 1) / 2) * width, mean, width, yerr=err, capsize=2,
                 color=line.get_color(), label=label)
    ax_a.set(xlabel="number of functions learned", ylabel="MSE (functions seen so far)",
             title="(a) Continual regression", ylim=(0, None))
    ax_b.set(xlabel="function (in order learned)", ylabel="MSE after all functions",
             title="(b) Error per function", ylim=(0, None))
    ax_a.legend()
    ax_b.set_xticks(np.arange(1, len(results[0]["per_function"]["mean"]) + 1))
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def plot_omniglot(results: list[dict], labels: list[str], out_path) -> Path:
    """The paper's Fig. 4 layout: accuracy against number of classes learned, on the trajectory
    images (left) and the held-out images of the same classes (right)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for res, label in zip(results, labels):
        classes = [int(n) for n in res["schedule"]]
        for ax, key in zip(axes, ("train_accuracy", "test_accuracy")):
            stats = [res["by_classes"][str(n)][key] for n in classes]
            mean = [s["mean"] for s in stats]
            line, = ax.plot(classes, mean, marker="o", ms=3, label=label)
            ax.fill_between(classes, [s["ci_low"] for s in stats], [s["ci_high"] for s in stats],
                            color=line.get_color(), alpha=0.2)
    axes[0].set(xlabel="number of classes", ylabel="accuracy", title="Trajectory images (forgetting)", ylim=(0, 1.02))
    axes[1].set(xlabel="number of classes", title="Held-out images (generalisation)")
    axes[0].legend()
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def plot_files(paths, labels, out_path) -> Path:
    results = load_results(paths)
    labels = labels or [r.get("label", Path(p).parent.name) for r, p in zip(results, paths)]
    kinds = {r.get("benchmark") for r in results}
    if len(kinds) != 1:
        raise ValueError(f"cannot overlay results of different benchmarks: {sorted(map(str, kinds))}")
    draw = plot_sine if kinds == {"sine"} else plot_omniglot
    return draw(results, labels, out_path)
