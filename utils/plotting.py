"""Figures drawn from results JSON alone (mean with 95% bootstrap band / error bars)."""
import json
from pathlib import Path

import numpy as np

from utils.results import renamed_keys


def _pyplot():
    """matplotlib.pyplot on the Agg backend, imported at the first figure, not with this module: every
    script imports it, and a run that draws nothing (a refused command, a killed or unevaluated run)
    would pay about a second for it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_formats() -> frozenset:
    """The file extensions savefig can write."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    return frozenset(FigureCanvasAgg.get_supported_filetypes())


def load_results(paths) -> list[dict]:
    return [renamed_keys(json.loads(Path(p).read_text())) for p in paths]


def plot_sine(results: list[dict], labels: list[str], out_path) -> Path:
    """The paper's Fig. 3 layout: (a) MSE over the functions seen so far, after each function;
    (b) MSE of each function after the whole trajectory."""
    plt = _pyplot()
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


def plot_omniglot(results: list[dict], labels: list[str], out_path, title: str | None = None) -> Path:
    """The paper's Fig. 4 layout: mean accuracy (95% bootstrap band over runs) against the number
    of classes learned, on the trajectory images (left: forgetting) and on the held-out images of
    the same classes (right: generalisation); one line per results file (representation)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    ticks = set()
    for res, label in zip(results, labels):
        classes = [int(n) for n in res["schedule"] if str(n) in res["by_classes"]]
        ticks.update(classes)
        for ax, key in zip(axes, ("trajectory_accuracy", "held_out_accuracy")):
            stats = [res["by_classes"][str(n)][key] for n in classes]
            line, = ax.plot(classes, [s["mean"] for s in stats], marker="o", ms=3, label=label)
            ax.fill_between(classes, [s["ci_low"] for s in stats], [s["ci_high"] for s in stats],
                            color=line.get_color(), alpha=0.2, linewidth=0)
    for ax, name in zip(axes, ("(a) Trajectory images (forgetting)", "(b) Held-out images (generalisation)")):
        ax.set(xlabel="number of classes learned", title=name, ylim=(0, 1.02))
        ax.set_xticks(sorted(ticks))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (mean, 95% CI)")
    axes[1].legend(loc="upper right", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def plot_loaded(results: list[dict], labels: list[str], out_path, title: str | None = None) -> Path:
    """Fig. 3 or Fig. 4 of results already read (results files, or a summary's rows)."""
    kinds = {r.get("benchmark") for r in results}
    if len(kinds) != 1:
        raise ValueError(f"cannot overlay results of different benchmarks: {sorted(map(str, kinds))}")
    if kinds == {"sine"}:
        return plot_sine(results, labels, out_path)
    if kinds == {"omniglot"}:
        return plot_omniglot(results, labels, out_path, title)
    raise ValueError(f"unknown benchmark {sorted(map(str, kinds))[0]!r} in the results files")


def cost_accuracy_points(results: list[dict], names: list[str], step_seconds: dict[int, float], counts=(200, 600),
                         series: list[str] | None = None) -> list[dict]:
    """One point per Omniglot results file: its name (e.g. the evaluation's folder), its series (a
    label given per file, e.g. a width and its rates; default its width), its network's width
    (features), meta-training steps, meta-training minutes (steps x the measured seconds per step
    of that width), and per class count the held-out accuracy (mean, 95% CI) and the validation
    score (the rate search's mean trajectory accuracy at the chosen rate: what a preset may be
    chosen on)."""
    points = []
    for i, res in enumerate(results):
        features, steps = res["features"]["n_features"], res["model"]["step"]
        if features not in step_seconds:
            raise ValueError(f"no seconds per step given for the {features}-feature network (--step-seconds {features}=S)")
        point = {"series": series[i] if series else f"{features} features", "features": features, "steps": steps,
                 "train_minutes": steps * step_seconds[features] / 60,
                 "name": names[i]}
        for n in counts:
            entry = res["by_classes"].get(str(n))
            if entry is None:
                raise ValueError(f"a results file has no {n}-class entry")
            search = entry["lr_search"]
            point[n] = {"held_out": entry["held_out_accuracy"], "trajectory": entry["trajectory_accuracy"],
                        "validation": search["mean_scores"][search["grid"].index(entry["lr"])]}
        points.append(point)
    return sorted(points, key=lambda p: (p["features"], p["series"], p["steps"], p["name"]))


def plot_cost_accuracy(points: list[dict], out_path, counts=(200, 600)) -> Path:
    """Held-out accuracy (95% CI bars) against meta-training minutes, one panel per class count and
    one colour per series; each point labelled with its steps, the line through the mean of the
    points of a series that share a length (seeds)."""
    plt = _pyplot()
    from matplotlib.ticker import ScalarFormatter
    fig, axes = plt.subplots(1, len(counts), figsize=(5.5 * len(counts), 4.2))
    for ax, n in zip(np.atleast_1d(axes), counts):
        for name in dict.fromkeys(p["series"] for p in points):
            line = [p for p in points if p["series"] == name]
            x = [p["train_minutes"] for p in line]
            y = [p[n]["held_out"]["mean"] for p in line]
            err = [[p[n]["held_out"]["mean"] - p[n]["held_out"]["ci_low"] for p in line],
                   [p[n]["held_out"]["ci_high"] - p[n]["held_out"]["mean"] for p in line]]
            bars = ax.errorbar(x, y, yerr=err, marker="o", ms=4, capsize=3, linestyle="none", label=name)
            steps = sorted({p["steps"] for p in line})
            means = [np.mean([p[n]["held_out"]["mean"] for p in line if p["steps"] == s]) for s in steps]
            minutes = [next(p["train_minutes"] for p in line if p["steps"] == s) for s in steps]
            ax.plot(minutes, means, color=bars.lines[0].get_color(), alpha=0.6)
            for p in line:
                ax.annotate(f"{p['steps'] // 1000}k", (p["train_minutes"], p[n]["held_out"]["mean"]),
                            textcoords="offset points", xytext=(4, -10), fontsize=7)
        ax.set(xscale="log", xlabel="meta-training minutes (given seconds per step x steps)",
               ylabel=f"held-out accuracy after {n} classes", title=f"{n} classes")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(ScalarFormatter())
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path
