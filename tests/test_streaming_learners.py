"""The exact streaming learners (model/streaming.py) and their evaluation (experiment/evaluation/streaming.py)."""
import math

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from model import streaming


def _stream(seed=0, n_classes=5, per_class=6, n_features=4):
    """A small labelled stream: class-separated Gaussian blobs, class ids not contiguous."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.tensor([3, 11, 7, 40, 2, 19, 5, 8][:n_classes])
    centres = 3 * torch.randn(n_classes, n_features, generator=gen, dtype=torch.float64)
    x = (centres[:, None] + torch.randn(n_classes, per_class, n_features, generator=gen, dtype=torch.float64))
    return x.reshape(-1, n_features), ids.repeat_interleave(per_class)


def _streamed(x, y, order):
    state = streaming.empty(x.shape[1])
    for i in order:
        state = streaming.update(state, x[i], int(y[i]))
    return state


def _scores(state, x):
    return {"ncm": streaming.ncm_scores(state, x), "slda": streaming.slda_scores(state, x, 0.1),
            "gauss": streaming.gauss_scores(state, x)}


def test_stream_update_equals_batch_closed_form():
    x, y = _stream()
    batch = streaming.from_batch(x, y)
    state = _streamed(x, y, range(len(x)))
    assert torch.equal(state.classes, batch.classes) and batch.classes.tolist() == sorted(set(y.tolist()))
    torch.testing.assert_close(state.counts, batch.counts, rtol=0, atol=0)
    torch.testing.assert_close(state.means, batch.means, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state.scatter, batch.scatter, rtol=1e-12, atol=1e-10)
    # the closed form for images grouped by class (class rows in any order)
    grouped = x.reshape(len(batch.classes), -1, x.shape[1])  # _stream's images come class by class
    ids = y.reshape(len(batch.classes), -1)[:, 0]
    rows = torch.randperm(len(ids), generator=torch.Generator().manual_seed(0))
    from_classes = streaming.from_classes(grouped[rows], ids[rows])
    assert torch.equal(from_classes.classes, batch.classes) and torch.equal(from_classes.counts, batch.counts)
    torch.testing.assert_close(from_classes.means, batch.means, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(from_classes.scatter, batch.scatter, rtol=1e-12, atol=1e-10)
    assert float(streaming.from_classes(grouped, ids, scatter=False).scatter.abs().max()) == 0.0
    # the definition, written out: sum over classes of the centred outer products
    by_hand = sum(torch.outer(v - x[y == c].mean(0), v - x[y == c].mean(0)) for c in y.unique() for v in x[y == c])
    torch.testing.assert_close(batch.scatter, by_hand, rtol=1e-12, atol=1e-10)


def test_any_class_or_image_order_gives_the_same_predictions():
    x, y = _stream(seed=1, n_classes=6, per_class=8, n_features=5)
    probe = torch.randn(40, 5, generator=torch.Generator().manual_seed(9), dtype=torch.float64) * 3
    sorted_order = np.argsort(y.numpy(), kind="stable")  # class-sorted, the protocol's stream
    reference = _streamed(x, y, sorted_order)
    expected = {k: streaming.predict(reference, s) for k, s in _scores(reference, probe).items()}
    rng = np.random.default_rng(0)
    classes = y.unique().numpy()
    for trial in range(4):
        if trial % 2:  # another class order, images within a class shuffled
            order = np.concatenate([rng.permutation(np.flatnonzero(y.numpy() == c)) for c in rng.permutation(classes)])
        else:  # images of all classes interleaved
            order = rng.permutation(len(x))
        state = _streamed(x, y, order)
        torch.testing.assert_close(state.scatter, reference.scatter, rtol=1e-12, atol=1e-10)
        for name, scores in _scores(state, probe).items():
            torch.testing.assert_close(scores, _scores(reference, probe)[name], rtol=1e-10, atol=1e-9)
            assert torch.equal(streaming.predict(state, scores), expected[name]), name


def test_ncm_is_the_nearest_mean_and_full_shrinkage_lda_is_ncm():
    x, y = _stream(seed=2)
    state = streaming.from_batch(x, y)
    probe = x + 0.5
    nearest = state.classes[torch.cdist(probe, state.means).argmin(1)]
    assert torch.equal(streaming.predict(state, streaming.ncm_scores(state, probe)), nearest)
    assert torch.equal(streaming.predict(state, streaming.slda_scores(state, probe, 1.0)), nearest)


def test_slda_is_the_textbook_lda_with_the_pooled_covariance():
    x, y = _stream(seed=3, per_class=20)
    state = streaming.from_batch(x, y)
    eps = 0.2
    cov = state.scatter / len(x)
    shrunk = (1 - eps) * cov + eps * torch.trace(cov) / x.shape[1] * torch.eye(x.shape[1], dtype=torch.float64)
    precision = torch.linalg.inv(shrunk)
    probe = x[:7] - 0.3
    # log N(x; m_c, shrunk) up to the same constant for every class
    diff = probe[:, None] - state.means[None]
    by_hand = -0.5 * torch.einsum("mkf,fg,mkg->mk", diff, precision, diff)
    got = streaming.slda_scores(state, probe, eps)
    torch.testing.assert_close(got - got[:, :1], by_hand - by_hand[:, :1], rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError):
        streaming.slda_scores(state, probe, 0.0)


def test_gauss_posterior_of_a_small_case_computed_by_hand():
    # One feature, two classes: a = {0, 1, 2}, b = {4, 6}; N = 5, K = 2, F = 1.
    x = torch.tensor([[0.0], [1.0], [2.0], [4.0], [6.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1])
    state = streaming.from_batch(x, y)
    # scatter: (0-1)^2 + 0 + (2-1)^2 + (4-5)^2 + (6-5)^2 = 4
    assert float(state.scatter) == 4.0 and state.means.flatten().tolist() == [1.0, 5.0]
    prior = streaming.GaussPrior(psi0=2.0, nu0=3.0)
    post = streaming.gauss_posterior(state, prior)
    # IW(psi0 + S_w, nu0 + N - K) = IW(6, 6); predictive dof = 6 - 1 + 1 = 6
    assert float(post.psi) == 6.0 and post.dof == 6.0
    torch.testing.assert_close(post.log_prior, torch.log(torch.tensor([4 / 7, 3 / 7], dtype=torch.float64)))
    probe = torch.tensor([[-1.0], [3.0], [5.5]], dtype=torch.float64)
    got = streaming.gauss_log_predictive(state, post, probe)
    for c, (mean, n) in enumerate(((1.0, 3), (5.0, 2))):
        scale = math.sqrt(6.0 * (n + 1) / n / 6.0)  # shape psi (n+1) / (n dof), as a standard deviation
        want = scipy_stats.t.logpdf(probe.flatten().numpy(), df=6.0, loc=mean, scale=scale)
        np.testing.assert_allclose(got[:, c].numpy(), want, rtol=1e-12)


def test_gauss_predictive_is_the_integral_over_the_posterior():
    """The conjugate algebra checked by brute force: p(x | class a, data) as the ratio of two
    integrals over (mu_a, mu_b, sigma^2) of likelihood x prior (flat means, inverse-Wishart =
    inverse-gamma(nu0/2, psi0/2) in one dimension), on a grid."""
    data = {0: np.array([0.0, 1.0, 2.0]), 1: np.array([4.0, 6.0])}
    psi0, nu0 = 2.0, 3.0
    mu = np.linspace(-6, 12, 361)
    var = np.exp(np.linspace(np.log(0.05), np.log(200.0), 1200))
    dmu, dlogvar = mu[1] - mu[0], np.log(var[1] / var[0])

    def log_normal(v, m, s2):
        return -0.5 * np.log(2 * np.pi * s2) - (v - m) ** 2 / (2 * s2)

    log_prior_var = -(nu0 / 2 + 1) * np.log(var) - psi0 / (2 * var)  # inverse-gamma, unnormalised
    m, s2 = np.meshgrid(mu, var, indexing="ij")
    class_b = np.logaddexp.reduce(sum(log_normal(v, m, s2) for v in data[1]), axis=0) + np.log(dmu)  # mu_b out

    def evidence(points_a):
        log_a = np.logaddexp.reduce(sum(log_normal(v, m, s2) for v in points_a), axis=0) + np.log(dmu)
        return np.logaddexp.reduce(log_a + class_b + log_prior_var + np.log(var)) + dlogvar  # d var = var d log var

    state = streaming.from_batch(torch.tensor([[0.0], [1.0], [2.0], [4.0], [6.0]], dtype=torch.float64),
                                 torch.tensor([0, 0, 0, 1, 1]))
    post = streaming.gauss_posterior(state, streaming.GaussPrior(psi0, nu0))
    base = evidence(data[0])
    for probe in (-1.0, 1.5, 3.0):
        brute = evidence(np.append(data[0], probe)) - base
        exact = float(streaming.gauss_log_predictive(state, post, torch.tensor([[probe]], dtype=torch.float64))[0, 0])
        assert abs(brute - exact) < 2e-3, (probe, brute, exact)


def test_gauss_matches_scipy_multivariate_t_and_its_prior_is_order_free():
    x, y = _stream(seed=4, n_classes=3, per_class=5, n_features=3)
    state = streaming.from_batch(x, y)
    prior = streaming.gauss_prior(state)
    # psi0: the average per-feature variance about the grand mean; nu0 = F + 2
    assert prior.nu0 == 5.0 and prior.psi0 == pytest.approx(float(((x - x.mean(0)) ** 2).mean()), rel=1e-12)
    post = streaming.gauss_posterior(state, prior)
    assert post.dof == 5.0 + 15 - 3 - 3 + 1
    probe = x[:4] + 0.7
    got = streaming.gauss_log_predictive(state, post, probe)
    for c in range(3):
        n = float(state.counts[c])
        shape = (post.psi * (n + 1) / (n * post.dof)).numpy()
        want = scipy_stats.multivariate_t(loc=state.means[c].numpy(), shape=shape, df=post.dof).logpdf(probe.numpy())
        np.testing.assert_allclose(got[:, c].numpy(), want, rtol=1e-10)
    # a posterior the prior keeps proper: one image per class gives a zero scatter
    single = streaming.from_batch(x[::5], y[::5])
    assert float(single.scatter.abs().max()) == 0.0
    assert torch.isfinite(streaming.gauss_scores(single, probe)).all()


# --- the evaluation: evaluate_omniglot.py --learner ncm slda gauss -----------------------------------

TINY = {"image_size": 12, "channels": 4, "strides": (2, 2), "n_outputs": 16, "n_classes": 10, "class_split": 5}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """8 evaluation classes of 12 px images and a tiny checkpoint."""
    from tests.omniglot_fixtures import tiny_network_and_tree

    root = tmp_path_factory.mktemp("omni_streaming")
    data, cfg, net, ckpt = tiny_network_and_tree(root, TINY)
    return {"data": data, "cfg": cfg, "net": net, "ckpt": ckpt, "cache": root / "cache"}


def _cli(tiny, tmp_path, *argv):
    import evaluate_omniglot
    from utils.cli import run_main

    base = ["--path", str(tiny["data"]), "--results-dir", str(tmp_path), "--cache-dir", str(tiny["cache"]),
            "--no-progress", "--nonstandard-data"]
    return run_main(evaluate_omniglot.main, evaluate_omniglot.get_args_parser(), [*argv, *base])


def _folders(tmp_path):
    return sorted(tmp_path.glob("*/omniglot_eval/*"), key=lambda p: p.stat().st_mtime_ns)


def test_cli_writes_one_sgd_layout_results_file_per_learner(tiny, tmp_path):
    import json

    import plot_results
    from datasets.omniglot import load_omniglot
    from experiment import aggregate
    from experiment.evaluation.features import feature_bank
    from experiment.evaluation.omniglot import run_specs
    from utils.cli import run_main
    from utils.results import read_results

    last = _cli(tiny, tmp_path, "--model", str(tiny["ckpt"]), "--learner", "ncm", "slda", "gauss",
                "--schedule", "2:4", "--runs", "3", "--search-runs", "2")
    folders = _folders(tmp_path)
    assert len(folders) == 3 and folders[-1] == last
    results = [read_results(f) for f in folders]  # the SGD PLN's results reader accepts them
    assert [r["protocol"]["learner"] for r in results] == ["ncm", "slda", "gauss"]
    split = load_omniglot(tiny["data"], "evaluation", 12, cache_dir=tiny["cache"], progress=False)
    bank = feature_bank(tiny["net"].rln, split, cache_dir=False)
    for result, folder in zip(results, folders):
        assert result["benchmark"] == "omniglot" and result["schedule"] == [2, 4] and (folder / "fig4.png").is_file()
        assert result["label"].startswith("OML (cpu), ") and result["protocol"]["lr"] is None
        config = json.loads((folder / "config.json").read_text())
        assert config["evaluated"]["learner"] == result["protocol"]["learner"]
        for n in (2, 4):
            entry = result["by_classes"][str(n)]
            assert entry["lr"] is None and entry["lr_search"] is None and len(entry["runs"]["held_out_accuracy"]) == 3
            # run i holds the classes of the SGD PLN's run i
            assert entry["runs"]["classes"] == [s.classes.tolist() for s in run_specs(90, "eval", n, 3, 8, False, 1)]
            if result["protocol"]["learner"] == "slda":
                assert entry["shrinkage"] in streaming.SHRINKAGE_GRID
                search = entry["shrinkage_search"]
                assert search["classes"] == [s.classes.tolist() for s in run_specs(90, "lr_search", n, 2, 8, False, 1)]
            else:
                assert entry["shrinkage"] is None and entry["shrinkage_search"] is None
            # the numbers are those of the one-image-at-a-time learner, fed the run's images shuffled
            for i, spec in enumerate(run_specs(90, "eval", n, 3, 8, False, 1)):
                x = bank.train[torch.as_tensor(spec.classes)].reshape(-1, bank.n_features).double()
                y = torch.as_tensor(np.repeat(spec.classes, 15))
                state = _streamed(x, y, np.random.default_rng(i).permutation(len(x)))
                test_x = bank.test[torch.as_tensor(spec.classes)].reshape(-1, bank.n_features).double()
                test_y = torch.as_tensor(np.repeat(spec.classes, 5))
                learner = result["protocol"]["learner"]
                got = {"ncm": streaming.ncm_scores(state, test_x), "gauss": streaming.gauss_scores(state, test_x),
                       "slda": streaming.slda_scores(state, test_x, entry["shrinkage"] or 1.0)}[learner]
                held_out = float((streaming.predict(state, got) == test_y).double().mean())
                assert entry["runs"]["held_out_accuracy"][i] == pytest.approx(held_out, abs=1e-8)
    out = tmp_path / "learners.png"
    run_main(plot_results.main, plot_results.get_args_parser(), [*map(str, folders), "--out", str(out)])
    assert out.is_file()
    # experiment.aggregate groups them apart (the learner is part of what was evaluated)
    evaluations = []
    for rank, folder in enumerate(folders):
        evaluated = json.loads((folder / "config.json").read_text())["evaluated"]
        settings = {k: v for k, v in evaluated.items() if k != "seed"} | {"method": "oml"}
        evaluations.append({"sweep": "s", "rank": rank, "run_dir": str(folder), "seed": evaluated["seed"],
                            "settings": settings, "result": read_results(folder)})
    groups = aggregate.groups_of(evaluations)
    assert sorted(g["row"] for g in groups) == ["learner=gauss", "learner=ncm", "learner=slda"]
    assert all(aggregate.aggregate_group(g)["schedule"] == [2, 4] for g in groups)


def test_same_seed_same_bytes_and_another_seed_other_runs(tiny, tmp_path):
    argv = ["--model", str(tiny["ckpt"]), "--learner", "slda", "gauss", "--schedule", "3", "--runs", "2",
            "--search-runs", "2"]
    _cli(tiny, tmp_path / "a", *argv)
    _cli(tiny, tmp_path / "b", *argv)
    a, b = _folders(tmp_path / "a"), _folders(tmp_path / "b")
    assert [(f / "results.json").read_bytes() for f in a] == [(f / "results.json").read_bytes() for f in b]
    _cli(tiny, tmp_path / "c", *argv, "--seed", "5")
    assert (_folders(tmp_path / "c")[0] / "results.json").read_bytes() != (a[0] / "results.json").read_bytes()


def test_scratch_gives_each_run_its_own_random_network(tiny, tmp_path):
    import json

    from experiment.evaluation.omniglot import run_specs
    from experiment.evaluation.scratch import fresh_params

    last = _cli(tiny, tmp_path, "--scratch", "--model", str(tiny["ckpt"]), "--learner", "ncm", "--schedule", "3",
                "--runs", "2")
    result = json.loads((last / "results.json").read_text())
    assert result["model"]["method"] == "scratch" and "fresh random network per run" in result["protocol"]["representation"]
    assert result["label"].startswith("Random network per run")
    # the networks are the runs' Scratch initialisations: run 0 and run 1 differ
    specs = run_specs(90, "eval", 3, 2, 8, False, 1)
    first, second = (fresh_params(tiny["net"], s.init_seed)[0] for s in specs)
    assert not torch.equal(first, second)
    frozen = _cli(tiny, tmp_path / "frozen", "--model", str(tiny["ckpt"]), "--learner", "ncm", "--schedule", "3",
                  "--runs", "2")
    assert json.loads((frozen / "results.json").read_text())["by_classes"] != result["by_classes"]


def test_selection_classes(tmp_path):
    import json

    from experiment.checkpoint import save_checkpoint
    from experiment.config import as_dict, resolve
    from experiment.omniglot_presets import OMNIGLOT_PRESETS, OmniglotConfig, build_model
    from tests.omniglot_fixtures import write_fake_both

    data = write_fake_both(tmp_path / "data", n_alphabets=6, chars_per_alphabet=3, size=24)  # selection: Sanskrit
    cfg = resolve(OmniglotConfig, OMNIGLOT_PRESETS, "cpu", {**TINY, "n_outputs": 32, "n_classes": 18, "class_split": 14,
                                                            "hold_out_selection": True})
    torch.manual_seed(0)
    ckpt = tmp_path / "held_out.pt"
    save_checkpoint(ckpt, benchmark="omniglot", config=as_dict(cfg), model=build_model(cfg), step=0)
    tiny = {"data": data, "cache": tmp_path / "cache"}
    last = _cli(tiny, tmp_path / "out", "--model", str(ckpt), "--learner", "slda", "--selection-classes",
                "--schedule", "2:3", "--runs", "2", "--search-runs", "1")
    result = json.loads((last / "results.json").read_text())
    assert result["split"] == "selection" and result["protocol"]["classes_from"] == 3
    assert result["by_classes"]["3"]["shrinkage_search"]["classes"] == [[0, 1, 2]]


@pytest.mark.parametrize("argv, message", [
    (["--learner", "ncm", "online"], "separate commands"),
    (["--learner", "ncm", "ncm"], "twice"),
    (["--learner", "slda", "--lr", "0.01"], "--lr does not apply"),
    (["--learner", "gauss", "--iid"], "--iid does not apply"),
    (["--learner", "ncm", "--engine", "native", "--protocol", "2019"], "--engine, --protocol do not apply"),
    (["--learner", "ncm", "--whole-network"], "--whole-network does not apply"),
    (["--learner", "ncm", "--runs", "0"], "--runs must be at least 1"),
    (["--learner", "ncm", "--schedule", "9"], "only 8"),
    (["--learner", "lda"], "invalid choice"),
])
def test_bad_input_is_one_line_and_writes_nothing(tiny, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        _cli(tiny, tmp_path, "--model", str(tiny["ckpt"]), *argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") or "invalid choice" in err, err
    assert message in err, err
    assert not _folders(tmp_path)


def test_wrong_shapes_are_refused():
    x, y = _stream()
    state = streaming.from_batch(x, y)
    for bad in (lambda: streaming.from_batch(x, y[:-1]), lambda: streaming.from_batch(x[0], y[:1]),
                lambda: streaming.from_batch(x[:0], y[:0]), lambda: streaming.ncm_scores(state, x[:, :2]),
                lambda: streaming.slda_scores(state, x[0], 0.1), lambda: streaming.gauss_scores(state, x[:, 1:]),
                lambda: streaming.ncm_scores(streaming.empty(4), x),
                lambda: streaming.from_classes(x.reshape(5, 6, 4), torch.tensor([1, 2, 3, 4])),
                lambda: streaming.from_classes(x.reshape(5, 6, 4), torch.tensor([1, 2, 3, 4, 4]))):
        with pytest.raises(ValueError):
            bad()


def test_network_seed_draws_another_frozen_random_rln_on_the_same_runs(tiny, tmp_path, capsys):
    import json

    import evaluate_omniglot
    from tests.conftest import one_line_error

    common = ("--preset", "cpu", "--learner", "ncm", "--schedule", "3", "--runs", "2")
    results = {}
    for name, extra in (("default", ()), ("preset_seed", ("--network-seed", "90")),
                        ("seed3", ("--network-seed", "1", "3", "--rank", "1"))):
        folder = _cli(tiny, tmp_path, *common, *extra, "--name", name)
        results[name] = (folder / "results.json").read_bytes()
        assert json.loads((folder / "config.json").read_text())["evaluated"]["seed"] == (3 if name == "seed3" else 90)
    assert results["preset_seed"] == results["default"]  # the preset's seed is the default network
    other, default = (json.loads(results[n])["by_classes"]["3"]["runs"] for n in ("seed3", "default"))
    assert other["classes"] == default["classes"]  # the runs stay those of --seed
    assert other["held_out_accuracy"] != default["held_out_accuracy"] or \
        other["trajectory_accuracy"] != default["trajectory_accuracy"]
    before = _folders(tmp_path)
    base = ["--path", str(tiny["data"]), "--results-dir", str(tmp_path), "--no-progress", "--nonstandard-data"]
    for argv, says in ((["--model", str(tiny["ckpt"]), "--network-seed", "2"], "frozen random RLN"),
                       (["--scratch", "--network-seed", "2"], "frozen random RLN"),
                       (["--network-seed", "-1"], "--network-seed")):
        err = one_line_error(capsys, evaluate_omniglot.main, evaluate_omniglot.get_args_parser(), [*argv, *base])
        assert says in err
    assert _folders(tmp_path) == before
