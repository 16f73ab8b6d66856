"""One seed drives everything: torch, and numpy Generators spawned from it (nothing draws from
python's `random`).

Per-run and per-purpose streams come from `numpy.random.SeedSequence`, so adding a run or a
consumer never shifts the numbers another stream produces.
"""
import numpy as np
import torch

# Fixed tags keep streams for different purposes apart while staying reproducible from one seed.
STREAM_TAGS = {
    "data": 1,
    "functions": 2,
    "eval": 3,
    "lr_search": 4,
    "init": 5,
    "selection": 6,  # the sine meta-validation pool and its runs, apart from the test pool's
}


def stream(seed: int, purpose: str, *extra: int) -> np.random.Generator:
    """A Generator for one purpose (and optionally one run), independent of all others."""
    return np.random.default_rng(np.random.SeedSequence([seed, STREAM_TAGS[purpose], *extra]))


def run_streams(seed: int, purpose: str, n_runs: int) -> list[np.random.Generator]:
    """Independent per-run Generators: run i gets the same stream whatever n_runs is."""
    return [stream(seed, purpose, i) for i in range(n_runs)]


def capture_rng_state(np_rng: np.random.Generator) -> dict:
    # No Python `random` state: training never draws from it, and its state is seeded from the
    # OS at import, so storing it made two runs of the same seed write different checkpoints.
    return {
        "torch": torch.get_rng_state(),
        "numpy": np_rng.bit_generator.state,
    }


def restore_rng_state(state: dict, np_rng: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"])  # a "python" entry of older checkpoints is ignored: unused
    np_rng.bit_generator.state = state["numpy"]
