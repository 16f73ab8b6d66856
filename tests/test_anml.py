"""ANML (model/anml.py, experiment/training/anml.py): the network, the meta-gradient, the CLI.

The reference here is the original's forward written out as it ran it (uvm-neurobotics-lab/ANML
model/learner.py: one image at a time, batch norm in training mode on that one image, 2x2 max-pools
after the first two convolutions, a sigmoid gate multiplying the flattened features) and its inner
loop unrolled with plain autograd over the whole network re-run at every step (meta_learner.py:
the first 14 tensors, the NM network's, frozen by --rln 7; every other one stepped). Float64, a
tiny network: the fast path must give the same loss and meta-gradient, first and second order.
"""
import json

import pytest
import torch
import torch.nn.functional as F

import evaluate_omniglot
import oml_omniglot
from experiment import export
from experiment.evaluation.omniglot_protocols import ANML_LR_GRID
from experiment.training import anml as anml_training
from model.anml import PIXEL_MEAN, PIXEL_STD, adapted_params, anml_meta_loss, build_anml_net, inner_loop
from model.meta_learner import InnerLoopRule
from tests.conftest import one_line_error
from tests.gradient_checks import assert_matches_finite_differences, grads
from tests.omniglot_fixtures import write_fake_both
from utils.errors import Interrupted

N_OUT, SIZE = 6, 22  # 22px: conv 20, pool 10, conv 8, pool 4, conv 2 -> 4 channels x 2 x 2 = 16 features


def _net():
    torch.manual_seed(0)
    return build_anml_net(nm_channels=3, channels=4, image_size=SIZE, n_outputs=N_OUT).double()


def _data():
    g = torch.Generator().manual_seed(2)
    x_traj = torch.rand(4, 1, 1, SIZE, SIZE, generator=g, dtype=torch.float64)
    y_traj = torch.tensor([[1], [1], [1], [1]])  # one class's images, one per step, as ANML samples
    x_meta = torch.rand(7, 1, SIZE, SIZE, generator=g, dtype=torch.float64)
    y_meta = torch.tensor([0, 2, 3, 5, 1, 1, 4])
    return x_traj, y_traj, x_meta, y_meta


def _original_logits(p: dict, x: torch.Tensor) -> torch.Tensor:
    """The original's forward, image by image, from the weights `p` keyed like the state dict."""
    def stack(prefix, h):
        for i, (conv, norm) in enumerate(((0, 1), (4, 5), (8, 9))):
            h = F.conv2d(h, p[f"{prefix}.{conv}.weight"], p[f"{prefix}.{conv}.bias"])
            zeros = torch.zeros(h.shape[1], dtype=h.dtype)
            h = F.batch_norm(h, zeros, torch.ones_like(zeros), p[f"{prefix}.{norm}.weight"],
                             p[f"{prefix}.{norm}.bias"], training=True)
            h = F.relu(h)
            if i < 2:
                h = F.max_pool2d(h, kernel_size=2, stride=2)
        return h.reshape(1, -1)

    out = []
    for img in x:
        rgb = ((img * 255 - PIXEL_MEAN) / PIXEL_STD).expand(3, -1, -1).unsqueeze(0)
        gate = torch.sigmoid(F.linear(stack("rln.nm.0", rgb), p["rln.nm.1.weight"], p["rln.nm.1.bias"]))
        out.append(F.linear(stack("rln.body", rgb) * gate, p["pln.0.weight"], p["pln.0.bias"]))
    return torch.cat(out)


def _brute_force_meta_loss(net, x_traj, y_traj, x_meta, y_meta, rule):
    params = dict(net.named_parameters())
    names = list(params)
    learn = names[14:]  # --rln 7 in the original: the NM network's 7 layers (14 tensors) never step
    assert all(n.startswith("rln.nm.") for n in names[:14]) and not any(n.startswith("rln.nm.") for n in learn)
    for x, y in zip(x_traj, y_traj):
        loss = F.cross_entropy(_original_logits(params, x), y)
        step = torch.autograd.grad(loss, [params[n] for n in learn], create_graph=not rule.first_order)
        params = {**params, **{n: params[n] - rule.lr * g for n, g in zip(learn, step)}}
    return F.cross_entropy(_original_logits(params, x_meta), y_meta)


def test_the_network_is_the_originals_per_image_forward():
    net, (_, _, x, _) = _net(), _data()
    torch.testing.assert_close(net(x), _original_logits(dict(net.named_parameters()), x), rtol=1e-10, atol=1e-12)


def test_gate_shapes_and_range():
    net = build_anml_net(nm_channels=112, channels=256, image_size=28, n_outputs=1000)  # the paper's sizes
    x = torch.rand(5, 1, 28, 28)
    gate = net.rln.gate(x)
    assert gate.shape == (5, 2304) and net.rln.n_features == 2304 and net.pln[0].in_features == 2304
    assert bool(((gate > 0) & (gate < 1)).all())
    body = net.rln.body(((x * 255 - PIXEL_MEAN) / PIXEL_STD).expand(-1, 3, -1, -1))
    torch.testing.assert_close(net.rln(x), body * gate)  # multiplicative, after the last convolution
    assert net(x).shape == (5, 1000)
    assert sum(p.numel() for p in net.parameters()) == 6_048_424  # "about 6M" (ANML's network)


@pytest.mark.parametrize("first_order", [True, False], ids=["first-order", "second-order"])
def test_meta_gradient_equals_the_unrolled_original(first_order):
    net, data = _net(), _data()
    rule = InnerLoopRule(lr=0.5, first_order=first_order)  # large enough for the steps to matter on a tiny net
    fast_loss = anml_meta_loss(net, *data, rule).loss
    fast = grads(net, fast_loss)
    ref_loss = _brute_force_meta_loss(net, *data, rule)
    ref = grads(net, ref_loss)
    assert fast_loss.item() == pytest.approx(ref_loss.item(), rel=1e-12)
    for (name, _), a, b in zip(net.named_parameters(), fast, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=name)
        assert a.abs().sum() > 0, name  # both networks' initial weights are meta-learned


def test_second_order_meta_gradient_matches_finite_differences():
    net, data = _net(), _data()
    rule = InnerLoopRule(lr=0.5, first_order=False)
    assert_matches_finite_differences(net, lambda: anml_meta_loss(net, *data, rule).loss)


def test_inner_loop_steps_the_prediction_network_and_never_the_nm_network():
    net, (x_traj, y_traj, x_meta, y_meta) = _net(), _data()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    start = adapted_params(net)
    assert set(start) == {n for n in before if not n.startswith("rln.nm.")}
    assert any(n.startswith("rln.body.") for n in start) and any(n.startswith("pln.") for n in start)
    gates = net.rln.gate(x_traj.flatten(0, 1)).reshape(4, 1, -1)
    adapted = inner_loop(net, start, x_traj, y_traj, gates, InnerLoopRule(lr=0.5, first_order=True))
    assert set(adapted) == set(start)
    assert all(not torch.equal(adapted[n], before[n]) for n in adapted)  # body and head both move
    anml_meta_loss(net, x_traj, y_traj, x_meta, y_meta, InnerLoopRule(lr=0.5))
    assert all(torch.equal(p, before[n]) for n, p in net.named_parameters())  # fast weights only


def test_first_order_reaches_the_nm_network_through_the_meta_loss_only():
    """First order (the original's): the NM gradient is that of the meta-loss at the adapted
    weights taken as constants; second order adds the path through the trajectory's gates."""
    net, (x_traj, y_traj, x_meta, y_meta) = _net(), _data()
    nm = [p for n, p in net.named_parameters() if n.startswith("rln.nm.")]
    first = torch.autograd.grad(anml_meta_loss(net, x_traj, y_traj, x_meta, y_meta, InnerLoopRule(0.5, True)).loss, nm)
    with torch.no_grad():
        gates = net.rln.gate(x_traj.flatten(0, 1)).reshape(4, 1, -1)
    adapted = inner_loop(net, adapted_params(net), x_traj, y_traj, gates, InnerLoopRule(0.5, True))
    constant = {n: v.detach() for n, v in adapted.items()}
    from torch.func import functional_call
    meta_only = F.cross_entropy(functional_call(net, constant, (x_meta, net.rln.gate(x_meta))), y_meta)
    for a, b in zip(first, torch.autograd.grad(meta_only, nm)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)
    second = torch.autograd.grad(anml_meta_loss(net, x_traj, y_traj, x_meta, y_meta, InnerLoopRule(0.5, False)).loss, nm)
    assert max((a - b).abs().max().item() for a, b in zip(first, second)) > 1e-8


# --- the command line: training, resume, export, evaluation ------------------------------------------

TINY = ["--method", "anml", "--preset", "anml_cpu", "--image-size", str(SIZE), "--channels", "4", "--nm-channels", "3",
        "--n-classes", "8", "--meta-random", "8", "--steps", "4", "--log-every", "1", "--save-every", "2"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("anml")
    data = write_fake_both(root / "data", n_alphabets=2, chars_per_alphabet=4, size=SIZE + 2)
    return root, ["--path", str(data), "--cache-dir", str(root / "cache"), "--nonstandard-data", "--no-progress"]


def _train(argv):
    return oml_omniglot.main(oml_omniglot.get_args_parser().parse_args(argv))


@pytest.fixture(scope="module")
def whole(tree):
    root, common = tree
    return _train(TINY + common + ["--results-dir", str(root / "whole")])


def test_a_killed_run_resumes_byte_for_byte(tree, whole, tmp_path, monkeypatch):
    _, common = tree
    original, calls = anml_training.ANMLTraining.step, {"n": 0}

    def dying(self):
        calls["n"] += 1
        if calls["n"] == 3:  # after the checkpoint at step 2
            raise KeyboardInterrupt
        return original(self)

    with monkeypatch.context() as mp:
        mp.setattr(anml_training.ANMLTraining, "step", dying)
        with pytest.raises(Interrupted):
            _train(TINY + common + ["--results-dir", str(tmp_path)])
    killed = next(tmp_path.glob("*/omniglot/*"))
    assert torch.load(killed / "checkpoint.pt", weights_only=True)["step"] == 2
    _train(["--resume", str(killed), *common])
    for name in ("checkpoint.pt", "metrics.jsonl", "config.json"):
        assert (killed / name).read_bytes() == (whole / name).read_bytes(), name
    logged = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    assert all(0 < r["gate_mean"] < 1 for r in logged)


def test_an_exported_checkpoint_evaluates_end_to_end(tree, whole, tmp_path):
    _, common = tree
    shipped = export.main(export.get_args_parser().parse_args([str(whole), str(tmp_path / "anml.pt")]))
    payload = torch.load(shipped, weights_only=True)
    assert payload["method"] == "anml" and "training" not in payload
    run = evaluate_omniglot.main(evaluate_omniglot.get_args_parser().parse_args(
        ["--model", str(shipped), "--schedule", "2:4", "--runs", "2", "--search-runs", "1",
         "--results-dir", str(tmp_path / "eval"), *common]))
    result = json.loads((run / "results.json").read_text())
    assert result["features"]["n_features"] == 16  # the gated features are the frozen representation
    assert result["model"]["method"] == "anml" and result["label"].startswith("ANML (anml_cpu)")
    assert set(result["by_classes"]) == {"2", "4"}
    assert all(0 <= e["held_out_accuracy"]["mean"] <= 1 for e in result["by_classes"].values())


def test_protocol_anml_searches_anmls_rates(tree, whole, tmp_path):
    _, common = tree
    run = evaluate_omniglot.main(evaluate_omniglot.get_args_parser().parse_args(
        ["--model", str(whole), "--protocol", "anml", "--schedule", "3", "--runs", "1", "--search-runs", "2",
         "--results-dir", str(tmp_path), *common]))
    result = json.loads((run / "results.json").read_text())
    protocol, entry = result["protocol"], result["by_classes"]["3"]
    assert protocol["name"] == "anml" and protocol["lr_grid"] == list(ANML_LR_GRID) and "coincides_with" not in protocol
    assert entry["lr_search"]["grid"] == list(ANML_LR_GRID) and entry["lr"] in ANML_LR_GRID
    assert len(entry["lr_search"]["scores"][0]) == 14


@pytest.mark.parametrize("argv, message", [
    (["--method", "anml", "--preset", "cpu"], "--method anml trains ANML's network: give --preset anml or anml_cpu"),
    (["--preset", "anml", "--method", "oml"], "preset anml is ANML's network: it trains with --method anml only"),
    (["--method", "anml", "--pln-hidden", "8"], "--strides and --pln-hidden do not apply"),
    (["--method", "anml", "--iid-lr", "0.1"], "--iid-lr is read by --method pretraining or srnn only"),
    (["--preset", "cpu", "--nm-channels", "8"], "--nm-channels is read by --method anml only"),
    (["--method", "anml", "--image-size", "17"], "--image-size 17 is too small for ANML's"),
])
def test_inapplicable_combinations_are_refused_in_one_line(capsys, tmp_path, argv, message):
    err = one_line_error(capsys, oml_omniglot.main, oml_omniglot.get_args_parser(),
                         argv + ["--path", str(tmp_path / "none"), "--results-dir", str(tmp_path / "r")])
    assert message in err
    assert not (tmp_path / "r").exists()


def test_method_anml_alone_is_the_anml_preset():
    resolved = oml_omniglot._config(oml_omniglot.get_args_parser().parse_args(["--method", "anml"]))
    assert (resolved.preset, resolved.method) == ("anml", "anml")
