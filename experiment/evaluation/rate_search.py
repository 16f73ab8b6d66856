"""The rule that turns learning-rate search scores into one rate, shared by both benchmarks."""
from collections import Counter

import numpy as np


def choose_lr(scores, grid) -> tuple[float, list[float]]:
    """scores [search_runs, len(grid)], higher is better -> (chosen rate, best rate per search run).

    Best per run: the first maximum in grid order (the grid lists larger rates first, so ties go to
    the larger rate, like the original's strict `>`). Chosen: the most frequent best; a tie in
    frequency goes to the higher mean score over all search runs, then to the smaller rate.
    Non-finite scores (a diverged trial) count as the worst possible."""
    scores = np.asarray(scores, dtype=np.float64)
    scores = np.where(np.isfinite(scores), scores, -np.inf)
    best = [grid[int(np.argmax(row))] for row in scores]
    counts = Counter(best)
    top = max(counts.values())
    mean = dict(zip(grid, scores.mean(axis=0)))
    chosen = max((lr for lr in counts if counts[lr] == top), key=lambda lr: (mean[lr], -lr))
    return chosen, best
