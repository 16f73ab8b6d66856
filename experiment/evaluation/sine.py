"""The continual-regression evaluation of incremental sine (the paper's Fig. 3), batched over runs.

Per run: `tasks` new functions (from a pool held apart from meta-training) learned one after
another by online SGD of the PLN on the frozen RLN's features, `batches_per_function` mini-batches
of `batch_size` fresh samples each, one pass, the PLN starting from its trained weights (not
reset). After function t, the MSE on held-out samples of functions 1..t gives the curve.

Protocols (`make_protocol`):
- `paper` (default): 40 mini-batches of 32 per function, no clamp, and the online rate searched
  per checkpoint. 40 x 32 is what the 2019 `evaluate_regression.py` does in every version of the
  original repository (`sample_batch(it1, id, 32)`, `--update_step` 40), the code that drew Fig. 3;
  the paper's text says batches of 8.
- `trajectory`: the checkpoint's own meta-training trajectory (e.g. 5 batches of 10 for oml2020)
  at its inner rate and clamp, no search: what OML was meta-trained to do.

Rate search (the paper's App. B: a grid judged on five validation trajectories): `search_runs`
trajectories drawn from their own `lr_search` stream, every rate in LR_GRID from the same start,
each scored by the MSE on the trajectory's own training samples after the whole pass (never the
held-out samples, which the search is not given). Only rates that learned function 1 compete
(`learned_first_function`): a rate that never fits the first function can still score a low final
MSE on a trajectory it barely moved from, and every method is judged by the same rule. Choice rule:
experiment.evaluation.rate_search.choose_lr.

Splits: `test` draws the runs' functions from the evaluation pool (the numbers reported);
`selection` from a pool of the same size drawn from its own stream, for choices about how to
meta-train and which baseline candidate to keep (experiment/evaluation/select.py), so that no such
choice ever sees a function of the test pool.
"""
import copy
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from datasets.sine import SineFamily, sample_trajectory
from experiment.evaluation.rate_search import choose_lr
from experiment.sine_presets import SineConfig
from model import online
from model.networks import features
from utils import bounds
from utils.errors import UserError
from utils.seeding import run_streams, stream
from utils.stats import bootstrap_ci

EVAL_SEED = 103450  # the original evaluate_regression.py's seed
LR_GRID = (0.3, 0.1, 0.03, 0.01, 0.003, 0.001, 3e-4, 1e-4, 3e-5, 1e-5)  # the paper's App. B range
PAPER_BATCHES, PAPER_BATCH_SIZE = 40, 32
# Targets are bounded by the amplitude (|y| <= 5.1), so even predicting 0 scores an MSE below 26;
# anything past this is a blow-up, reported as divergence rather than as a number.
DIVERGED_MSE = 1e4
# A rate has learned function 1 when, right after its batches, the MSE on them is below this
# fraction of their targets' variance (R^2 >= 0.9): a fit, not a trajectory that barely moved.
LEARNED_FRACTION = 0.1
SPLITS = ("test", "selection")


@dataclass(frozen=True)
class SineProtocol:
    name: str = "paper"
    batches_per_function: int = PAPER_BATCHES
    batch_size: int = PAPER_BATCH_SIZE
    lr: float | None = None          # None: searched over LR_GRID
    clip: float | None = None        # element-wise clamp of the online gradients
    reset: bool = False              # start the PLN from a fresh Kaiming init instead of its weights
    iid: bool = False                # shuffle the trajectory (with epochs > 1: the Oracle)
    epochs: int = 1
    runs: int = 50
    search_runs: int = 5
    test_samples: int = 1000
    seed: int = EVAL_SEED
    run_batch: int = 10
    split: str = "test"              # "selection": the meta-validation pool (module docstring)

    def validate(self):
        if self.split not in SPLITS:
            raise UserError(f"unknown evaluation split {self.split!r} (choose {' or '.join(SPLITS)})")
        for name in ("batches_per_function", "batch_size", "epochs", "runs", "search_runs", "test_samples", "run_batch"):
            if getattr(self, name) < 1:
                raise UserError(f"evaluation {name.replace('_', ' ')} must be at least 1, got {getattr(self, name)}")
        bounds.count("--runs", self.runs, bounds.MAX_RUNS)
        bounds.count("--search-runs", self.search_runs, bounds.MAX_SEARCH_RUNS)
        bounds.count("--epochs", self.epochs, bounds.MAX_EPOCHS)
        bounds.seed(self.seed)
        if self.lr is not None and not (np.isfinite(self.lr) and self.lr > 0):
            raise UserError(f"--lr must be a positive finite number, got {self.lr}")
        if self.clip is not None and not (np.isfinite(self.clip) and self.clip > 0):
            raise UserError(f"the evaluation clamp must be positive and finite, got {self.clip}")


def make_protocol(name: str, cfg: SineConfig, **overrides) -> SineProtocol:
    """A named protocol for a checkpoint's config; overrides that are None keep the protocol's value."""
    if name == "paper":
        base = SineProtocol()
    elif name == "trajectory":
        base = SineProtocol(name="trajectory", batches_per_function=cfg.update_step, batch_size=cfg.batch_size,
                            lr=cfg.update_lr, clip=cfg.inner_clip)
    else:
        raise UserError(f"unknown evaluation protocol {name!r} (choose paper or trajectory)")
    protocol = replace(base, **{k: v for k, v in overrides.items() if v is not None})
    protocol.validate()
    return protocol


@dataclass
class RunData:
    """Tensors of a batch of runs: trajectory [R, K, B, in] / [R, K, B, 1], held-out [R, T, N, in] / [R, T, N, 1]."""
    x_traj: torch.Tensor
    y_traj: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def eval_functions(cfg: SineConfig, seed: int, split: str = "test") -> SineFamily:
    return SineFamily.draw(cfg.n_eval_functions, stream(seed, "eval" if split == "test" else "selection", 10**6))


def _run_purpose(split: str) -> str:
    """The stream of the reported runs: the test split keeps the streams it always had."""
    return "eval" if split == "test" else "selection"


def draw_runs(functions, rngs, cfg: SineConfig, p: SineProtocol, device) -> RunData:
    runs = [sample_trajectory(functions, rng, tasks=cfg.tasks, update_step=p.batches_per_function,
                              batch_size=p.batch_size, extra_per_task=p.test_samples,
                              capacity=cfg.capacity, slot_mode=cfg.slot_mode) for rng in rngs]
    stack = lambda key: torch.as_tensor(np.stack([r[key] for r in runs]), device=device)
    return RunData(stack("x_traj"), stack("y_traj"), stack("x_extra"), stack("y_extra"))


def _features(rln, x):
    """Features of samples x [..., D] -> [..., F], the leading dimensions kept."""
    return features(rln, x.reshape(-1, x.shape[-1]), batch_size=8192).reshape(*x.shape[:-1], -1)


def _mse(params, feats, y):
    """[R, G] MSE of each run on each group (function or batch) of samples: feats [R, G, N, F]."""
    with torch.no_grad():
        r, g, n, f = feats.shape
        out = online.forward(params, feats.reshape(r, g * n, f)).reshape(r, g, n, 1)
        return ((out - y) ** 2).mean(dim=(2, 3))


def _train(params, feats, y, order, lr, clip):
    """Online SGD of each run's PLN over its batches feats[r, order[r, k]], k = 0, 1, ..."""
    idx = torch.arange(feats.shape[0], device=feats.device)[:, None]
    for k in range(order.shape[1]):
        step = order[:, k : k + 1]
        params = online.sgd_step_runs(params, feats[idx, step].squeeze(1), y[idx, step].squeeze(1),
                                 online.per_run_mse, lr, clip)
    return params


def _orders(rngs, cfg: SineConfig, p: SineProtocol, device):
    """orders[t]: [R, steps] batch indices for learning functions 1..t+1 (sequential one-pass:
    only function t+1's batches, continuing from the previous state; otherwise the whole prefix,
    shuffled with --iid and repeated `epochs` times, from the start)."""
    per = p.batches_per_function
    orders = []
    for t in range(cfg.tasks):
        if _sequential(p):
            orders.append(np.tile(np.arange(t * per, (t + 1) * per), (len(rngs), 1)))
            continue
        base = np.arange((t + 1) * per)
        orders.append(np.stack([np.concatenate([rng.permutation(base) if p.iid else base for _ in range(p.epochs)])
                                for rng in rngs]))
    return [torch.as_tensor(o, device=device) for o in orders]


def _sequential(p: SineProtocol) -> bool:
    return not p.iid and p.epochs == 1


def _start_params(pln, rngs, p: SineProtocol, device):
    generators = [torch.Generator().manual_seed(int(rng.integers(2**62))) for rng in rngs] if p.reset else None
    return [w.detach().to(device).requires_grad_() for w in online.stacked_params(pln, len(rngs), generators)]


def _learn(pln, cfg, p, feats, y_traj, rngs, lr, device, on_function=None):
    """Train a batch of runs on their trajectory features through all functions;
    on_function(t, params) after each one."""
    start = _start_params(pln, rngs, p, device)
    orders = _orders(rngs, cfg, p, device)
    params = start
    for t in range(cfg.tasks):
        params = _train(params if _sequential(p) else start, feats, y_traj, orders[t], lr, p.clip)
        if on_function is not None:
            on_function(t, params)
    return params


def _diverged(mse) -> bool:
    mse = torch.as_tensor(mse)
    return bool(~torch.isfinite(mse).all() or (mse > DIVERGED_MSE).any())


def learned_first_function(first_mse: np.ndarray, first_variance: np.ndarray) -> np.ndarray:
    """[runs, rates] bool: the rate fitted function 1 (MSE on its batches right after them below
    LEARNED_FRACTION of their targets' variance, [runs, 1])."""
    return np.isfinite(first_mse) & (first_mse <= LEARNED_FRACTION * first_variance)


def eligible_scores(scores: np.ndarray, learned: np.ndarray) -> np.ndarray:
    """Final MSEs with two kinds of rate ruled out (inf) in each search run: a rate that did not
    learn function 1 there, and a rate that diverged (inf) in any search run, because the most
    frequent winner could otherwise be a rate seen to blow up. A search run where no rate is left
    keeps every rate that learned function 1 there, or failing that every rate, so the rule never
    leaves a run empty."""
    stable = np.isfinite(scores).all(axis=0, keepdims=True)
    keep = learned & stable
    keep = np.where(keep.any(axis=1, keepdims=True), keep, learned)
    keep = keep | ~keep.any(axis=1, keepdims=True)
    return np.where(keep, scores, np.inf)


def search_on(model, cfg: SineConfig, p: SineProtocol, data: RunData, rngs, device) -> dict:
    """Score every rate of LR_GRID on the search runs' trajectories: the final training MSE, among
    the rates that learned function 1. Only data.x_traj / y_traj are read: the held-out part of
    `data` never influences the choice."""
    scores = np.zeros((len(rngs), len(LR_GRID)))
    first = np.zeros_like(scores)
    states = [rng.bit_generator.state for rng in rngs]
    feats = _features(model.rln, data.x_traj)  # the RLN is frozen: once for every rate
    per = p.batches_per_function
    first_feats, first_y = feats[:, :per], data.y_traj[:, :per]
    first_variance = first_y.reshape(len(rngs), -1).double().var(dim=1, unbiased=False).cpu().numpy()[:, None]

    def after(t, params):
        if t == 0:
            first[:, j] = _mse(params, first_feats, first_y).mean(1).double().cpu().numpy()

    for j, lr in enumerate(LR_GRID):
        for rng, state in zip(rngs, states):  # every rate starts from the same draws (reset, shuffles)
            rng.bit_generator.state = state
        params = _learn(model.pln, cfg, p, feats, data.y_traj, rngs, lr, device, on_function=after)
        mse = _mse(params, feats, data.y_traj).mean(1).double().cpu().numpy()
        mse[~np.isfinite(mse) | (mse > DIVERGED_MSE)] = np.inf
        scores[:, j] = mse
    learned = learned_first_function(first, first_variance)
    chosen, best = choose_lr(-eligible_scores(scores, learned), LR_GRID)
    return {"lr": chosen, "grid": list(LR_GRID), "best_per_search_run": best,
            "diverged_in_search": [lr for lr, ok in zip(LR_GRID, np.isfinite(scores).all(axis=0)) if not ok],
            "criterion": f"trajectory training MSE among the rates that learned function 1 "
                         f"(MSE after it <= {LEARNED_FRACTION:g} x its targets' variance) "
                         "and diverged in no search run",
            "scores": [[_num(v) for v in row] for row in scores],
            "mean_scores": [_num(v) for v in scores.mean(axis=0)],
            "first_function_mse": [[_num(v) for v in row] for row in first],
            "learned_first_function": learned.tolist()}


def _num(v):
    return None if not np.isfinite(v) else round(float(v), 8)  # None: diverged


def search_lr(model, cfg: SineConfig, p: SineProtocol, functions, device) -> dict:
    rngs = run_streams(p.seed, "lr_search", p.search_runs) if p.split == "test" else \
        [stream(p.seed, "selection", 2 * 10**6 + i) for i in range(p.search_runs)]
    data = draw_runs(functions, rngs, cfg, p, device)
    return search_on(model, cfg, p, data, rngs, device)


def evaluate(model, cfg: SineConfig, p: SineProtocol, *, device="cpu", progress=None) -> dict:
    """curve[t-1]: mean MSE over functions 1..t after learning functions 1..t (one sequential pass
    gives every t; with iid or epochs > 1 the PLN is retrained from its start for each t).
    per_function[j]: MSE of function j after learning all of them."""
    p.validate()
    model = model.to(device).eval()
    functions = eval_functions(cfg, p.seed, p.split)
    search = None if p.lr is not None else search_lr(model, cfg, p, functions, device)
    lr = p.lr if search is None else search["lr"]
    all_rngs = run_streams(p.seed, _run_purpose(p.split), p.runs)
    curves, finals = [], []
    for start in range(0, p.runs, p.run_batch):
        rngs = all_rngs[start : start + p.run_batch]
        kept = len(rngs)
        if kept == 1:
            # A batch of one run takes another float32 matmul path than a batch of several (its MSEs
            # differed in the 7th digit), so --runs or --run-batch would change a run's numbers: a
            # lone run is computed beside a copy of itself (same stream, same draws) and kept alone.
            rngs = [rngs[0], copy.deepcopy(rngs[0])]
        data = draw_runs(functions, rngs, cfg, p, device)
        feats_test = _features(model.rln, data.x_test)
        curve = torch.zeros(len(rngs), cfg.tasks, device=device)

        def after(t, params, curve=curve, feats=feats_test, y=data.y_test):
            curve[:, t] = _mse(params, feats[:, : t + 1], y[:, : t + 1]).mean(1)

        params = _learn(model.pln, cfg, p, _features(model.rln, data.x_traj), data.y_traj, rngs, lr, device,
                        on_function=after)
        curves.append(curve[:kept].cpu())
        finals.append(_mse(params, feats_test, data.y_test)[:kept].cpu())
        if _diverged(curves[-1]) or _diverged(finals[-1]):
            break  # stop early; the check below reports it
        if progress is not None:
            progress.update(kept)
    curve, final = torch.cat(curves).double().numpy(), torch.cat(finals).double().numpy()
    if _diverged(curve) or _diverged(final):
        raise UserError(f"online learning diverged (MSE non-finite or above {DIVERGED_MSE:g}) at learning rate {lr}; "
                        "try a smaller --lr, or let the search choose (no --lr)")
    return {
        "split": p.split, "curve": bootstrap_ci(curve), "per_function": bootstrap_ci(final),
        "final_mse": bootstrap_ci(curve[:, -1]), "first_mse": bootstrap_ci(curve[:, 0]),
        "runs": {"curve": np.round(curve, 8).tolist(), "per_function": np.round(final, 8).tolist()},
        "protocol": {**asdict(p), "lr": lr, "lr_searched": search is not None, "lr_search": search,
                     "tasks": cfg.tasks, "slot_mode": cfg.slot_mode, "capacity": cfg.capacity,
                     "eval_functions": cfg.n_eval_functions},
    }


def headline(result) -> str:
    final, first, p = result["final_mse"], result["first_mse"], result["protocol"]
    rate = f"lr {p['lr']:g}" + (" (searched)" if p["lr_searched"] else "")
    return (f"{result['label']}: MSE after {len(result['curve']['mean'])} functions {final['mean']:.3f} "
            f"(95% CI {final['ci_low']:.3f}-{final['ci_high']:.3f}), after function 1 {first['mean']:.3f}; "
            f"{p['runs']} runs, {p['name']} protocol ({p['batches_per_function']} x {p['batch_size']} per function), {rate}")
