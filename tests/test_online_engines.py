"""The online learner's engines (docs/engines.md): native (numba), portable (closed form), autograd.

They agree at full scale (1000 outputs x 576 sparse features, 1,500 Adam steps) within a stated
tolerance, give the shipped `cpu` model identical accuracies, and the fallback without numba runs
(with its `warning:` line). Tests that need numba skip with a reason where it is absent.
"""
import contextlib
import platform
import sys

import numpy as np
import pytest
import torch

import experiment.evaluation as evaluation_package
from experiment.evaluation import native
from experiment.evaluation import omniglot as oe
from experiment.evaluation import online_learner as ol
from experiment.evaluation.features import FeatureBank
from model import online
from tests.conftest import REPO, SHARED_OMNIGLOT
from utils.errors import UserError

# Full scale: the official head (1000 outputs), the cpu network's 576 features, 100 classes x 15 images.
N_OUT, N_FEAT, N_CLASSES = 1000, 576, 100
# Engines differ only in float rounding (summation order, sqrt(v)/c vs sqrt(v)*(1/c)): measured
# max |dW| <= 6e-7 after 1,500 steps (weights ~0.1-0.7); stated tolerance, 20x that:
FULL_SCALE_ATOL = 1e-5


def _needs_native():
    if native.kernel() is None:
        pytest.skip("no native fast path (numba missing or not compiling here): only the portable engine runs")


@pytest.fixture(scope="module")
def sparse_features():
    """ReLU(N(0,1) - 1.3): ~10% non-zero, like the cpu RLN's features (91.6% exact zeros)."""
    gen = torch.Generator().manual_seed(0)
    train = torch.relu(torch.randn(N_CLASSES, 15, N_FEAT, generator=gen) - 1.3) * 3
    test = torch.relu(torch.randn(N_CLASSES, 5, N_FEAT, generator=gen) - 1.3) * 3
    return FeatureBank(train, test, "synthetic-sparse")


def _full_scale(bank, engine, lr=1e-3, optimizer="adam"):
    pln = torch.nn.Sequential(torch.nn.Linear(N_FEAT, N_OUT))
    learner = ol.OnlineLearner(pln, oe.Protocol(engine=engine, optimizer=optimizer))
    assert learner.engine == engine
    specs = oe.run_specs(7, "eval", N_CLASSES, 1, N_CLASSES, False, 1)
    assert len(specs[0].order) == 1500
    finals = learner.train(bank.train, specs, lr)
    x, _ = ol._run_data(bank.train, specs[0])
    predicted = online.forward([p.unsqueeze(0) for p in finals[0]], x.unsqueeze(0))[0].argmax(1)
    return finals[0], predicted, learner.held_out_accuracy(bank.test, specs, finals)


def test_closed_form_step_is_autograd_and_torch_adam():
    """One closed-form step: the gradient is autograd's and the update is torch.optim.Adam's
    single-tensor update, bit for bit, over three steps."""
    gen = torch.Generator().manual_seed(3)
    w, b = torch.randn(2, 7, 5, generator=gen), torch.randn(2, 7, generator=gen)
    x, y = torch.rand(2, 5, generator=gen), torch.tensor([3, 6])
    wg, bg = w.clone().requires_grad_(), b.clone().requires_grad_()
    loss = torch.nn.functional.cross_entropy(online.linear_logits(wg, bg, x), y, reduction="sum")
    loss.backward()
    e = online.cross_entropy_logit_grad(online.linear_logits(w, b, x), y)
    assert torch.allclose(e, bg.grad, atol=1e-7) and torch.allclose(e[:, :, None] * x[:, None], wg.grad, atol=1e-7)
    p, m, v = w.clone(), torch.zeros_like(w), torch.zeros_like(w)
    ref = w.clone().requires_grad_()
    opt = torch.optim.Adam([ref], lr=0.01, betas=ol.ADAM_BETAS, eps=ol.ADAM_EPS, foreach=False)
    for step in (1, 2, 3):
        g = torch.randn(w.shape, generator=gen)
        ref.grad = g.clone()
        opt.step()
        online.adam_update_(p, g.clone(), m, v, step, 0.01, ol.ADAM_BETAS, ol.ADAM_EPS)
        assert torch.equal(p, ref.detach())


@pytest.mark.parametrize("optimizer, lr", [("adam", 1e-3), ("sgd", 0.01)])
def test_engines_agree_at_full_scale(sparse_features, optimizer, lr):
    """1000 outputs x 576 features with ~90% exact zeros, 1,500 steps: portable and native against
    the autograd reference, weights within FULL_SCALE_ATOL, and the same predictions."""
    ref_w, ref_pred, ref_acc = _full_scale(sparse_features, "autograd", lr, optimizer)
    engines = ["portable"] + (["native"] if native.kernel() is not None else [])
    for engine in engines:
        (w, b), pred, acc = _full_scale(sparse_features, engine, lr, optimizer)
        assert (w - ref_w[0]).abs().max() < FULL_SCALE_ATOL and (b - ref_w[1]).abs().max() < FULL_SCALE_ATOL, engine
        assert torch.equal(pred, ref_pred) and acc == ref_acc, engine
    if "native" not in engines:
        pytest.skip("native engine not compared (numba missing or not compiling here); portable agreed")


def test_native_runs_in_threads_give_the_loops_numbers(sparse_features, monkeypatch):
    """The native engine trains runs on torch.get_num_threads() threads: bit-identical to one."""
    _needs_native()
    pln = torch.nn.Sequential(torch.nn.Linear(N_FEAT, N_OUT))
    learner = ol.OnlineLearner(pln, oe.Protocol(engine="native"))
    specs = oe.run_specs(11, "eval", 20, 5, N_CLASSES, False, 1)
    finals = {}
    for threads in (1, 3):
        monkeypatch.setattr(torch, "get_num_threads", lambda threads=threads: threads)
        finals[threads] = learner.train(sparse_features.train, specs, 1e-3)
    assert all(torch.equal(a, b) for one, three in zip(finals[1], finals[3]) for a, b in zip(one, three))
    assert not torch.equal(finals[1][0][0], finals[1][1][0])  # the runs differ from one another


@pytest.mark.skipif(not (SHARED_OMNIGLOT / "images_evaluation.zip").exists(), reason="no real Omniglot data")
def test_shipped_cpu_model_same_accuracies_on_every_engine(tmp_path):
    """trained_models/omniglot_cpu_oml.pt on the real data, schedule 10:20 with the rate search:
    the native and portable engines choose the same rates and give every run the same accuracies."""
    _needs_native()
    from datasets.omniglot import load_omniglot
    from experiment.checkpoint import load_checkpoint, load_weights
    from experiment.config import from_dict
    from experiment.evaluation.features import feature_bank
    from experiment.omniglot_presets import OmniglotConfig, build_model

    payload = load_checkpoint(REPO / "trained_models" / "omniglot_cpu_oml.pt", benchmark="omniglot")
    net = load_weights(build_model(from_dict(OmniglotConfig, payload["config"])), payload)
    split = load_omniglot(SHARED_OMNIGLOT, "evaluation", 28, cache_dir=tmp_path, progress=False)
    bank = feature_bank(net.rln, split, cache_dir=tmp_path)
    assert (bank.train == 0).float().mean() > 0.8  # the ReLU RLN's sparsity, which the native path exploits
    out = {engine: oe.evaluate(net.pln, bank, (10, 20), oe.Protocol(runs=3, search_runs=1, engine=engine))
           for engine in ("native", "portable")}
    assert out["native"]["protocol"]["engine"] == "native" and out["portable"]["protocol"]["engine"] == "portable"
    for n in ("10", "20"):
        fast, portable = out["native"]["by_classes"][n], out["portable"]["by_classes"][n]
        assert fast["lr"] == portable["lr"] and fast["lr_search"]["scores"] == portable["lr_search"]["scores"]
        assert fast["runs"] == portable["runs"]


@pytest.fixture
def without_numba(monkeypatch):
    """A process where `import numba` fails, as on a machine without it."""
    monkeypatch.setattr(native, "_KERNEL", None)
    monkeypatch.setitem(sys.modules, "numba", None)
    monkeypatch.delitem(sys.modules, "experiment.evaluation.oml_online", raising=False)
    monkeypatch.delattr(evaluation_package, "oml_online", raising=False)


def test_fallback_without_numba_warns_once_and_runs(without_numba, capsys, sparse_features):
    pln = torch.nn.Sequential(torch.nn.Linear(N_FEAT, 20))
    learner = ol.OnlineLearner(pln, oe.Protocol())
    err = capsys.readouterr().err.splitlines()
    assert learner.engine == "portable"
    assert [line for line in err if line.startswith("warning: numba is not installed")] and len(err) == 1, err
    small = FeatureBank(sparse_features.train[:10, :, :], sparse_features.test[:10], "k")
    specs = oe.run_specs(1, "eval", 3, 2, 10, False, 1)
    finals = learner.train(small.train, specs, 1e-3)
    reference = ol.OnlineLearner(pln, oe.Protocol(engine="autograd")).train(small.train, specs, 1e-3)
    assert all(torch.allclose(a, b, atol=1e-6) for fa, fb in zip(finals, reference) for a, b in zip(fa, fb))
    ol.OnlineLearner(pln, oe.Protocol())  # the warning is said once per process
    assert capsys.readouterr().err == ""
    with pytest.raises(UserError, match="needs numba"):
        ol.OnlineLearner(pln, oe.Protocol(engine="native"))


def test_native_can_be_turned_off(monkeypatch, capsys):
    monkeypatch.setattr(native, "_KERNEL", None)
    monkeypatch.setenv("OML_NATIVE", "0")
    learner = ol.OnlineLearner(torch.nn.Sequential(torch.nn.Linear(4, 3)), oe.Protocol())
    assert learner.engine == "portable" and "warning: OML_NATIVE=0" in capsys.readouterr().err


def test_engine_names_and_old_spellings(monkeypatch):
    monkeypatch.setattr(native, "_KERNEL", False)  # as without numba: no warning, no compile
    linear = torch.nn.Sequential(torch.nn.Linear(4, 3))
    two_layer = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    assert ol.OnlineLearner(linear, oe.Protocol(engine="torch")).engine == "portable"
    assert ol.OnlineLearner(linear, oe.Protocol(engine="auto")).engine == "portable"
    assert ol.OnlineLearner(linear, oe.Protocol(engine="autograd")).engine == "autograd"
    for spelling in ("auto", "torch", "portable"):  # a 2-layer PLN has no closed form here
        assert ol.OnlineLearner(two_layer, oe.Protocol(engine=spelling)).engine == "autograd"
    for spelling in ("c", "native"):
        with pytest.raises(UserError, match="native"):
            ol.OnlineLearner(linear, oe.Protocol(engine=spelling))
    with pytest.raises(UserError, match="linear PLN"):
        ol.OnlineLearner(two_layer, oe.Protocol(engine="native"))
    with pytest.raises(UserError, match="--engine must be"):
        oe.Protocol(engine="cuda").validate()


def test_native_refuses_bad_indices_and_labels():
    _needs_native()
    fn = native.kernel()
    init = [torch.zeros(4, 3), torch.zeros(4)]
    x, y = torch.rand(5, 3), torch.tensor([0, 1, 2, 3, 0])
    assert len(ol.train_native(fn, init, x, y, np.arange(5), 0.1, "adam")) == 2
    with pytest.raises(ValueError, match="trajectory index"):
        ol.train_native(fn, init, x, y, np.array([0, 5]), 0.1, "adam")
    with pytest.raises(ValueError, match="trajectory index"):
        ol.train_native(fn, init, x, y, np.array([-1]), 0.1, "sgd")
    with pytest.raises(ValueError, match="label outside the 4 outputs"):
        ol.train_native(fn, init, x, torch.tensor([0, 1, 2, 4, 0]), np.arange(5), 0.1, "adam")


def test_adam_without_fused_cpu_kernel(monkeypatch):
    """torch < 2.4 has no fused Adam on the CPU (requirements.txt allows torch >= 2.1): the autograd
    engine then runs the single-tensor Adam, the same update within float rounding."""
    real_adam = torch.optim.Adam

    def old_torch_adam(params, **kw):
        if kw.get("fused"):
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices: ['cuda']")
        return real_adam(params, **kw)

    gen = torch.Generator().manual_seed(2)
    xs, ys = torch.rand(2, 12, 6, generator=gen), torch.randint(0, 4, (2, 12), generator=gen)
    inits = [[torch.randn(4, 6, generator=gen), torch.zeros(4)] for _ in range(2)]
    orders = np.stack([np.arange(12)] * 2)
    fused = ol.train_autograd(inits, xs, ys, orders, 0.01, "adam")
    monkeypatch.setattr(torch.optim, "Adam", old_torch_adam)
    assert ol.torch_adam([torch.zeros(2, requires_grad=True)], 0.1).defaults["foreach"] is False
    single = ol.train_autograd(inits, xs, ys, orders, 0.01, "adam")
    assert all(torch.allclose(a, b, atol=1e-6) for fa, fb in zip(fused, single) for a, b in zip(fa, fb))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_portable_engine_on_cuda_agrees(sparse_features):
    specs = oe.run_specs(4, "eval", 10, 2, N_CLASSES, False, 1)
    pln = torch.nn.Sequential(torch.nn.Linear(N_FEAT, N_OUT))
    cpu = ol.OnlineLearner(pln, oe.Protocol(engine="portable", run_batch=2)).train(sparse_features.train, specs, 1e-3)
    gpu = ol.OnlineLearner(pln, oe.Protocol(engine="portable", run_batch=2), device="cuda").train(
        sparse_features.train.cuda(), specs, 1e-3)
    assert all(torch.allclose(a, b.cpu(), atol=FULL_SCALE_ATOL) for fa, fb in zip(cpu, gpu) for a, b in zip(fa, fb))


def test_subnormals_are_flushed_only_inside_the_native_kernel():
    """The native kernel runs with subnormals flushed (x86 slows ~100x on them; docs/engines.md),
    for its own call only: torch and numpy outside it keep them, and a trajectory whose far-off
    outputs' gradients square to subnormals gives the same predictions flushed or not."""
    _needs_native()
    tiny = torch.tensor([1e-40])
    with native.flushed_subnormals():
        flushed = (tiny * 1.0).item() == 0.0  # where the CPU supports it (x86 SSE3, AArch64)
    assert (tiny * 1.0).item() != 0.0
    if platform.machine().lower() in ("x86_64", "amd64", "aarch64", "arm64"):
        assert flushed
    elif not flushed:
        pytest.skip(f"this CPU ({platform.machine()}) cannot flush subnormals: nothing to compare")
    gen = torch.Generator().manual_seed(5)
    x = torch.relu(torch.randn(300, 40, generator=gen) - 1.0) * 40  # large features: saturated softmax
    y = torch.arange(300) % 30
    init = [torch.randn(200, 40, generator=gen) * 0.5, torch.zeros(200)]
    order = np.arange(300)
    fn = native.kernel()
    kept = native.train_native(fn, init, x, y, order, 3e-3, "adam", ol.ADAM_BETAS, ol.ADAM_EPS, flush=False)
    flush = native.train_native(fn, init, x, y, order, 3e-3, "adam", ol.ADAM_BETAS, ol.ADAM_EPS)
    assert (tiny * 1.0).item() != 0.0
    assert torch.equal(kept[0], flush[0]) and torch.equal(kept[1], flush[1])  # too small to move a weight

    def second_moments(flush):  # the kernel's own v: where the subnormals live
        wt, b = init[0].t().contiguous().numpy(), init[1].clone().numpy()
        mt, vt, mb, vb = np.zeros_like(wt), np.zeros_like(wt), np.zeros_like(b), np.zeros_like(b)
        with native.flushed_subnormals() if flush else contextlib.nullcontext():
            assert fn(wt, b, mt, vt, mb, vb, x.numpy(), order, y.numpy(), True, 3e-3, 0.9, 0.999, 1e-8) == 0
        return vt

    subnormal = lambda v: ((v != 0) & (np.abs(v) < np.finfo(np.float32).tiny)).sum()
    assert subnormal(second_moments(False)) > 0 and subnormal(second_moments(True)) == 0
