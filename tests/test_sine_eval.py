"""The incremental-sine evaluation protocol: paper defaults, the rate search and its data."""
import numpy as np
import pytest
import torch

import evaluate_regression
from experiment.evaluation.rate_search import choose_lr
from experiment.evaluation.sine import LR_GRID, draw_runs, eval_functions, evaluate, make_protocol, search_on
from experiment.sine_presets import SINE_PRESETS, SineConfig, build_model
from utils.seeding import run_streams


def tiny_config(**overrides):
    return SineConfig(**{**SINE_PRESETS["oml2020"], "preset": "oml2020", "width": 16, **overrides})


def tiny_model(cfg):
    torch.manual_seed(0)
    return build_model(cfg)


def test_the_default_evaluation_is_the_papers_protocol():
    args = evaluate_regression.get_args_parser().parse_args(["--preset", "oml2020"])
    _, cfg, _ = evaluate_regression._model_and_config(args)
    p = evaluate_regression.protocol_from_args(args, cfg)
    assert (p.name, p.batches_per_function, p.batch_size, p.lr, p.clip, p.reset, p.iid, p.epochs, p.runs) == \
        ("paper", 40, 32, None, None, False, False, 1, 50)
    data = draw_runs(eval_functions(cfg, p.seed), run_streams(p.seed, "eval", 2), cfg, p, "cpu")
    assert data.x_traj.shape == (2, 10 * 40, 32, cfg.capacity + 1)  # 400 online SGD steps per run


def test_trajectory_protocol_is_the_checkpoints_meta_training_trajectory():
    cfg = tiny_config()
    p = make_protocol("trajectory", cfg)
    assert (p.batches_per_function, p.batch_size, p.lr, p.clip) == (cfg.update_step, cfg.batch_size, cfg.update_lr, cfg.inner_clip)


def test_results_record_the_protocol_and_the_search():
    cfg = tiny_config()
    result = evaluate(tiny_model(cfg), cfg, make_protocol("paper", cfg, runs=2, search_runs=2, batches_per_function=3,
                                                          test_samples=20))
    p = result["protocol"]
    assert (p["batches_per_function"], p["batch_size"], p["lr_searched"]) == (3, 32, True)
    search = p["lr_search"]
    assert search["grid"] == list(LR_GRID) and p["lr"] == search["lr"] and len(search["scores"]) == 2
    scores = np.array([[np.inf if v is None else v for v in row] for row in search["scores"]])
    assert p["lr"] in search["best_per_search_run"]
    assert scores[:, LR_GRID.index(p["lr"])].max() <= scores.max()  # finite (not a diverged rate)
    assert len(result["runs"]["curve"][0]) == cfg.tasks and result["first_mse"]["mean"] == pytest.approx(
        np.mean([c[0] for c in result["runs"]["curve"]]))


@pytest.mark.parametrize("regime", [{}, {"iid": True, "epochs": 2}, {"reset": True}])
def test_the_rate_search_never_reads_held_out_samples(regime):
    cfg = tiny_config()
    model = tiny_model(cfg)
    p = make_protocol("paper", cfg, search_runs=3, batches_per_function=3, test_samples=25, **regime)
    functions = eval_functions(cfg, p.seed)
    clean = draw_runs(functions, run_streams(p.seed, "lr_search", 3), cfg, p, "cpu")
    poisoned = draw_runs(functions, run_streams(p.seed, "lr_search", 3), cfg, p, "cpu")
    poisoned.x_test.fill_(float("nan"))
    poisoned.y_test.normal_(0, 1e6)
    a = search_on(model, cfg, p, clean, run_streams(p.seed, "lr_search", 3), "cpu")
    b = search_on(model, cfg, p, poisoned, run_streams(p.seed, "lr_search", 3), "cpu")
    assert a == b
    assert all(v is not None and np.isfinite(v) for v in a["scores"][0][-3:])  # small rates are scored, not NaN


def test_choose_lr_rule():
    grid = (0.1, 0.01, 0.001)
    # per run: first maximum in grid order; then the most frequent best
    assert choose_lr([[1, 2, 2], [1, 2, 0], [3, 1, 0]], grid) == (0.01, [0.01, 0.01, 0.1])
    # tie in frequency -> higher mean score
    assert choose_lr([[5, 0, 0], [0, 6, 0]], grid)[0] == 0.01
    # tie in frequency and mean -> the smaller rate
    assert choose_lr([[5, 0, 0], [0, 5, 0]], grid)[0] == 0.01
    # a diverged trial (non-finite) is never best
    assert choose_lr([[np.nan, 1, 0], [-np.inf, 0, 1]], grid) == (0.001, [0.01, 0.001])
    chosen, best = choose_lr([[np.nan, 1, 0], [np.nan, 1, 0]], grid)
    assert (chosen, best) == (0.01, [0.01, 0.01])


def test_run_i_does_not_depend_on_runs_or_on_the_search():
    cfg = tiny_config()
    model = tiny_model(cfg)
    few = evaluate(model, cfg, make_protocol("paper", cfg, runs=2, lr=0.003, batches_per_function=3, test_samples=20))
    many = evaluate(model, cfg, make_protocol("paper", cfg, runs=5, lr=0.003, batches_per_function=3, test_samples=20))
    assert many["runs"]["curve"][:2] == few["runs"]["curve"] and many["runs"]["per_function"][:2] == few["runs"]["per_function"]
    assert many["runs"]["curve"][2] != many["runs"]["curve"][0]  # the runs are different draws


@pytest.mark.parametrize("bad, message", [
    ({"runs": 0}, "runs must be at least 1"), ({"lr": 0.0}, "--lr must be a positive"),
    ({"lr": float("inf")}, "--lr must be a positive"), ({"batches_per_function": 0}, "at least 1"),
])
def test_bad_protocol_values_are_errors(bad, message):
    from utils.errors import UserError
    with pytest.raises(UserError, match=message):
        make_protocol("paper", tiny_config(), **bad)
