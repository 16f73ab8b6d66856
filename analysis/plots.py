"""Figures of the representation study (visualize_representations.py): one column per model.

* `plot_instance_grid`: representation maps of sample inputs, 9 x 4 for one model (the
  original's instance_<n>.pdf grid), or rows = inputs, columns = [input] + models.
* `plot_average_activation`: per-unit fraction of inputs that activate it, as a map.
* `plot_activity_histograms`: histogram of per-unit activity, dead units marked.
* `plot_projection`: 2-D PCA / t-SNE of the representations, coloured by class.
"""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

COLUMN_WIDTH = 3.4  # inches per model column (histograms, projections)
MAP_HEIGHT = 1.3    # inches per representation map; the width follows the map's aspect
DPI = 110


def _map_width(image, height: float = MAP_HEIGHT) -> float:
    rows, cols = np.shape(image)
    return float(np.clip(height * cols / rows, 0.6 * height, 3.0 * height))


def _save(fig, out_path) -> Path:
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=DPI)
    plt.close(fig)
    return out_path


def _map_axes(ax, image, vmin, vmax, cmap):
    shown = ax.imshow(np.ma.masked_invalid(image), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    return shown


def plot_model_grid(maps: list[np.ndarray], out_path, title: str, binary: bool = False, cols: int = 9) -> Path:
    """One model: the maps of up to cols x 4 sample inputs (the original's 9 x 4 grid)."""
    n = len(maps)
    rows = max(1, -(-n // cols))
    height = 1.0
    width = _map_width(maps[0], height) if maps else height
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols + 0.3, height * rows + 0.5), squeeze=False,
                             layout="constrained")
    vmax = 1.0 if binary else max(1e-12, float(np.nanmax([np.nanmax(m) for m in maps]))) if maps else 1.0
    for i, ax in enumerate(axes.flat):
        if i < n:
            _map_axes(ax, maps[i], 0.0, vmax, "gray_r" if binary else "viridis")
        else:
            ax.axis("off")
    fig.suptitle(title + (" (binarised: > 0)" if binary else ""), fontsize=10)
    return _save(fig, out_path)


def plot_instance_grid(inputs: list | None, maps: list[list[np.ndarray]], labels: list[str], out_path,
                       row_titles: list[str] | None = None, binary: bool = False) -> Path:
    """Rows = sample inputs, columns = [the input image] + one column per model.

    maps[m][i] is model m's map for input i; inputs[i] an image (or None to leave the column out).
    Each model column has its own colour scale (models differ in activation magnitude).
    """
    n_models, n_rows = len(maps), len(maps[0])
    show_inputs = inputs is not None
    n_cols = n_models + int(show_inputs)
    widths = [MAP_HEIGHT] * show_inputs + [_map_width(model_maps[0]) for model_maps in maps]
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(sum(widths) + 1.2, MAP_HEIGHT * n_rows + 0.6), squeeze=False,
                             gridspec_kw={"width_ratios": widths}, layout="constrained")
    for i in range(n_rows):
        if show_inputs:
            axes[i, 0].imshow(np.asarray(inputs[i]), cmap="gray", vmin=0, vmax=1)
            axes[i, 0].set_xticks([])
            axes[i, 0].set_yticks([])
        if row_titles:
            axes[i, 0].set_ylabel(row_titles[i], fontsize=7, rotation=0, ha="right", va="center")
    for m in range(n_models):
        vmax = 1.0 if binary else max(1e-12, float(np.nanmax([np.nanmax(x) for x in maps[m]])))
        for i in range(n_rows):
            _map_axes(axes[i, m + show_inputs], maps[m][i], 0.0, vmax, "gray_r" if binary else "viridis")
        axes[0, m + show_inputs].set_title(labels[m], fontsize=9)
    if show_inputs:
        axes[0, 0].set_title("input", fontsize=9)
    fig.suptitle("Representations of sample inputs" + (" (binarised: > 0)" if binary else ""), fontsize=10)
    return _save(fig, out_path)


def plot_average_activation(maps: list[np.ndarray], labels: list[str], out_path) -> Path:
    """Per-unit fraction of inputs activating the unit, one panel per model, shared scale 0-1."""
    height = 2.4
    fig, axes = plt.subplots(1, len(maps), figsize=(sum(_map_width(m, height) for m in maps) + 1.5, height + 0.7),
                             squeeze=False, layout="constrained")
    for ax, image, label in zip(axes[0], maps, labels):
        shown = _map_axes(ax, image, 0.0, 1.0, "viridis")
        ax.set_title(label, fontsize=9)
    fig.colorbar(shown, ax=list(axes[0]), label="fraction of inputs active", shrink=0.9)
    fig.suptitle("Average activation (lifetime activity of each unit)", fontsize=10)
    return _save(fig, out_path)


def plot_activity_histograms(histograms: list[dict], stats: list[dict], labels: list[str], out_path) -> Path:
    """Histogram of per-unit lifetime activity (from representation_stats.activity_histogram)."""
    fig, axes = plt.subplots(1, len(histograms), figsize=(COLUMN_WIDTH * len(histograms), 3.0), squeeze=False,
                             sharex=True, layout="constrained")
    for ax, hist, stat, label in zip(axes[0], histograms, stats, labels):
        edges = np.asarray(hist["edges"])
        ax.bar(edges[:-1], hist["counts"], width=np.diff(edges), align="edge", color="tab:blue", edgecolor="white")
        if hist["n_dead"]:
            ax.bar([-0.03], [hist["n_dead"]], width=0.025, align="edge", color="tab:red", label="dead")
            ax.legend(fontsize=7, loc="upper right")
        ax.set_xlim(-0.04, 1.0)
        ax.set_title(f"{label}\ninstance {100 * stat['instance_sparsity']:.1f}%, dead {100 * stat['dead_units']:.1f}%",
                     fontsize=9)
        ax.set_xlabel("fraction of inputs activating a unit")
    axes[0, 0].set_ylabel("units")
    return _save(fig, out_path)


def plot_projection(points: list[np.ndarray], classes: np.ndarray, class_names: dict, labels: list[str],
                    out_path, method: str = "pca", coloured_by: str = "class") -> Path:
    """Scatter of each model's 2-D projection, coloured by class (same colours in every panel)."""
    classes = np.asarray(classes)
    order = sorted(set(classes.tolist()))
    colours = plt.get_cmap("tab10" if len(order) <= 10 else "tab20")
    fig, axes = plt.subplots(1, len(points), figsize=(COLUMN_WIDTH * len(points) + 2.2, 3.4), squeeze=False,
                             layout="constrained")
    for ax, xy, label in zip(axes[0], points, labels):
        for k, c in enumerate(order):
            sel = classes == c
            ax.scatter(xy[sel, 0], xy[sel, 1], s=9, color=colours(k % colours.N), label=class_names.get(c, str(c)))
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, -1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle(f"2-D {method.upper() if method == 'pca' else 't-SNE'} of the representations, coloured by {coloured_by}",
                 fontsize=10)
    return _save(fig, out_path)
