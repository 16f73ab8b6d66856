"""MAML-Rep: the few-shot meta-gradient, its batched PLN-only inner loop, its sampler and its run.

On a tiny conv net in float64, `model.maml_rep.few_shot_loss` (support features computed once)
must give the brute-force recomputation's loss and gradients (`model.reference`, the RLN re-run
at every inner step on the whole support batch), for both orders; the second-order gradient must
agree with finite differences. The inner loop must take `inner_steps` steps each on the whole
support batch (not one image per step) and change only the PLN. Then the sampler's layout, one
training step, the presets, and a killed run resumed byte for byte, on a generated tree.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import oml_omniglot
from datasets.omniglot import load_omniglot
from datasets.omniglot_sampler import sample_few_shot
from experiment.checkpoint import load_checkpoint
from experiment.omniglot_presets import OMNIGLOT_PRESETS, OmniglotConfig, config_from_checkpoint
from experiment.training import omniglot as omniglot_training
from experiment.training.omniglot import MAMLRepTraining, make_training
from model import meta_learner
from model.maml_rep import clamp_gradients, few_shot_loss
from model.meta_learner import InnerLoopRule, meta_loss
from model.networks import build_omniglot_net
from model.reference import reference_meta_loss
from tests.conftest import die_at_step
from tests.gradient_checks import assert_matches_finite_differences, grads
from tests.omniglot_fixtures import write_fake_both

N_OUT, WAYS, SHOTS, QUERY, STEPS = 8, 3, 2, 2, 4


def _case(hidden=0):
    torch.manual_seed(0)
    model = build_omniglot_net(channels=4, image_size=11, strides=(2, 1, 1), pln_hidden=hidden, n_outputs=N_OUT).double()
    g = torch.Generator().manual_seed(2)
    x_support = torch.rand(WAYS * SHOTS, 1, 11, 11, generator=g, dtype=torch.float64)
    y_support = torch.arange(WAYS).repeat_interleave(SHOTS)  # relabelled 0..ways-1, class by class
    x_query = torch.rand(WAYS * QUERY, 1, 11, 11, generator=g, dtype=torch.float64)
    y_query = torch.arange(WAYS).repeat_interleave(QUERY)
    return model, (x_support, y_support, x_query, y_query)




def _as_trajectory(data):
    """The same task as OML's trajectory: STEPS copies of the whole support batch."""
    x_support, y_support, x_query, y_query = data
    return (x_support.unsqueeze(0).expand(STEPS, *x_support.shape), y_support.unsqueeze(0).expand(STEPS, -1),
            x_query, y_query)


# --- the meta-gradient --------------------------------------------------------------------------------

@pytest.mark.parametrize("first_order", [True, False])
@pytest.mark.parametrize("hidden", [0, 6])
def test_support_features_once_equal_brute_force(first_order, hidden):
    model, data = _case(hidden)
    rule = InnerLoopRule(lr=0.5 if not hidden else 0.2, first_order=first_order)
    fast_loss = few_shot_loss(model, *data, F.cross_entropy, rule, STEPS).loss
    fast = grads(model, fast_loss)
    ref_loss = reference_meta_loss(model, *_as_trajectory(data), F.cross_entropy, rule)
    ref = grads(model, ref_loss)
    assert fast_loss.item() == pytest.approx(ref_loss.item(), rel=1e-12)
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    # and it is OML's objective with that trajectory (meta_loss runs the RLN on every copy)
    oml = grads(model, meta_loss(model, *_as_trajectory(data), F.cross_entropy, rule).loss)
    for a, b in zip(fast, oml):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    n_rln = len(list(model.rln.parameters()))
    assert sum(g.abs().sum() for g in fast[:n_rln]) > 0  # the representation is meta-learned
    assert sum(g.abs().sum() for g in fast[n_rln:]) > 0  # and the PLN initialisation


def test_second_order_gradient_matches_finite_differences():
    model, data = _case()
    rule = InnerLoopRule(lr=0.5, first_order=False)
    assert_matches_finite_differences(model, lambda: few_shot_loss(model, *data, F.cross_entropy, rule, STEPS).loss)


def test_first_order_differs_from_second_order():
    model, data = _case()
    first = grads(model, few_shot_loss(model, *data, F.cross_entropy, InnerLoopRule(0.5, True), STEPS).loss)
    second = grads(model, few_shot_loss(model, *data, F.cross_entropy, InnerLoopRule(0.5, False), STEPS).loss)
    assert max((a - b).abs().max().item() for a, b in zip(first, second)) > 1e-6


def test_inner_loop_is_batched_and_touches_only_the_pln(monkeypatch):
    """Every inner step sees the whole support batch; the fast weights are the PLN's alone; the
    adapted PLN is STEPS full-batch SGD steps of the linear PLN on fixed RLN features, by hand;
    and the online alternative (one image per step) gives a different loss."""
    model, data = _case()
    x_support, y_support, x_query, y_query = data
    rule = InnerLoopRule(lr=0.5, first_order=False)
    seen = {}
    original = meta_learner.inner_loop  # adapted_loss, which few_shot_loss calls, runs it

    def spy(pln, params, feats, targets, loss_fn, rule):
        seen["params"], seen["feats"], seen["targets"] = set(params), feats.shape, targets.shape
        return original(pln, params, feats, targets, loss_fn, rule)

    monkeypatch.setattr(meta_learner, "inner_loop", spy)
    rln_before = [p.detach().clone() for p in model.rln.parameters()]
    result = few_shot_loss(model, *data, F.cross_entropy, rule, STEPS)
    n_features = model.rln(x_support[:1]).shape[1]
    assert seen["params"] == {name for name, _ in model.pln.named_parameters()}
    assert seen["feats"] == (STEPS, WAYS * SHOTS, n_features) and seen["targets"] == (STEPS, WAYS * SHOTS)
    assert all(torch.equal(a, b) for a, b in zip(rln_before, model.rln.parameters()))
    with torch.no_grad():  # the same steps by hand: W <- W - lr * dCE/dW of the mean over the batch
        feats, query_feats = model.rln(x_support), model.rln(x_query)
        w, b = model.pln[0].weight.clone(), model.pln[0].bias.clone()
        one_hot = F.one_hot(y_support, N_OUT).double()
        for _ in range(STEPS):
            residual = (torch.softmax(feats @ w.T + b, 1) - one_hot) / len(feats)
            w, b = w - rule.lr * residual.T @ feats, b - rule.lr * residual.sum(0)
        by_hand = F.cross_entropy(query_feats @ w.T + b, y_query)
    assert result.loss.item() == pytest.approx(by_hand.item(), rel=1e-10)
    online = meta_loss(model, x_support.unsqueeze(1), y_support.unsqueeze(1), x_query, y_query, F.cross_entropy, rule)
    assert abs(online.loss.item() - result.loss.item()) > 1e-3


def test_clamp_gradients_is_element_wise_and_none_is_off():
    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([-9.0, -1.0, 2.0, 7.0])
    clamp_gradients([p], None)
    assert p.grad.tolist() == [-9.0, -1.0, 2.0, 7.0]
    clamp_gradients([p], 5.0)
    assert p.grad.tolist() == [-5.0, -1.0, 2.0, 5.0]


# --- the sampler ----------------------------------------------------------------------------------

def test_few_shot_sample_layout():
    for seed in range(20):
        s = sample_few_shot(np.random.default_rng(seed), n_classes=963, ways=5, shots=5, query=5)
        assert len(set(s.classes)) == 5 and all(0 <= c < 963 for c in s.classes)
        assert list(s.support_classes) == list(np.repeat(s.classes, 5))
        assert list(s.query_classes) == list(np.repeat(s.classes, 5))
        assert list(s.support_labels) == list(s.query_labels) == list(np.repeat(np.arange(5), 5))
        for i in range(5):  # one shuffled pass per class: 5 support then 5 query images, disjoint
            support, query = set(s.support_drawers[5 * i:5 * i + 5]), set(s.query_drawers[5 * i:5 * i + 5])
            assert len(support) == 5 and len(query) == 5 and not support & query
    drawn = {c for seed in range(60) for c in sample_few_shot(np.random.default_rng(seed), n_classes=963, ways=5,
                                                              shots=5, query=5).classes}
    assert min(drawn) < 481 <= max(drawn)  # all meta-training classes, no class split
    a, b = (sample_few_shot(np.random.default_rng(4), n_classes=30, ways=3, shots=2, query=4) for _ in range(2))
    assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("classes", "support_drawers", "query_drawers"))


# --- presets and the training step ------------------------------------------------------------------

def _resolve(argv):
    return oml_omniglot._config(oml_omniglot.get_args_parser().parse_args(argv))


def test_maml_rep_presets_keep_the_original_few_shot_values_on_the_paper_network():
    for preset in ("oml2020", "mrcl2019"):
        config = _resolve(["--preset", preset, "--method", "maml-rep"])
        assert (config.ways, config.shots, config.query, config.inner_steps) == (5, 5, 5, 5)
        assert (config.maml_update_lr, config.maml_meta_lr, config.maml_clip) == (0.01, 1e-4, 5.0)
        assert config.steps == config.maml_steps == 40_000
    assert _resolve(["--preset", "mrcl2019", "--method", "maml-rep"]).first_order  # the 2019 meta-gradient
    cpu = _resolve(["--preset", "cpu", "--method", "maml-rep"])
    assert cpu.steps == OMNIGLOT_PRESETS["cpu"]["maml_steps"]
    assert _resolve(["--preset", "cpu", "--method", "maml-rep", "--steps", "7"]).steps == 7
    assert _resolve(["--preset", "cpu"]).steps == 10_000  # OML's length is its own


def test_bad_maml_rep_settings_are_refused():
    from utils.errors import UserError
    for argv, message in ((["--shots", "15", "--query", "6"], "exceed a class's 20 images"),
                          (["--ways", "20", "--n-classes", "12", "--class-split", "6"], "exceeds the 12"),
                          (["--maml-meta-lr", "0"], "--maml_meta_lr"), (["--inner-steps", "0"], "--inner-steps")):
        with pytest.raises(UserError, match=message):
            _resolve(["--preset", "cpu", "--method", "maml-rep", *argv])
    assert _resolve(["--preset", "cpu", "--method", "maml-rep", "--maml-clip", "0"]).maml_clip is None


N_FAKE = 12
TINY = ["--image-size", "14", "--channels", "4", "--strides", "2", "1", "--n-classes", str(N_FAKE), "--class-split", "6",
        "--no-progress", "--log-every", "2", "--save-every", "4", "--method", "maml-rep", "--preset", "cpu"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("omniglot")
    write_fake_both(root, as_zip=True)
    return root


def _task(data, *extra):
    cfg = _resolve(TINY + list(extra))
    images = load_omniglot(data, "background", 14, cache_dir=data / "cache", progress=False).images
    return make_training(cfg, "cpu", images)


def test_step_learns_the_task_and_moves_every_tensor(data):
    task = _task(data)
    assert isinstance(task, MAMLRepTraining) and isinstance(task.cfg, OmniglotConfig)
    state = task.rng.bit_generator.state
    batch = task.batch()
    task.rng.bit_generator.state = state  # step() draws the same task
    assert batch.x_support.shape == (5 * 5, 1, 14, 14) and batch.x_query.shape == (5 * 5, 1, 14, 14)
    assert batch.y_support.tolist() == batch.y_query.tolist() == np.repeat(np.arange(5), 5).tolist()
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    metrics = task.step()
    assert set(metrics) == {"loss", "meta_loss_before", "accuracy_before", "accuracy_after"}
    assert all(np.isfinite(v) for v in metrics.values())
    # the inner loop lowered the query loss (on the generated tree mostly by learning that the
    # answer is one of units 0..4: the generated images of a class are unrelated drawings)
    assert metrics["loss"] < metrics["meta_loss_before"]
    after = task.model.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in after)  # Adam moved every tensor, RLN included
    # no output-row reset: every row moved by about one Adam step (bounded by the meta lr)
    assert (after["pln.0.weight"] - before["pln.0.weight"]).abs().max() < 2 * task.cfg.maml_meta_lr


def test_killed_run_resumes_byte_for_byte(data, tmp_path, monkeypatch):
    def args(*extra):
        return oml_omniglot.get_args_parser().parse_args(
            ["--path", str(data), "--cache-dir", str(data / "cache"), "--results-dir", str(tmp_path),
             "--nonstandard-data", *TINY, "--steps", "8", *extra])

    whole = oml_omniglot.main(args("--name", "whole"))
    revive = die_at_step(monkeypatch, omniglot_training.MAMLRepTraining, 7)  # between the checkpoints at 4 and 8
    with pytest.raises(KeyboardInterrupt):
        oml_omniglot.main(args("--name", "killed"))
    revive()
    killed = whole.parent / "killed_1"
    assert torch.load(killed / "checkpoint.pt", weights_only=True)["step"] == 4
    oml_omniglot.main(oml_omniglot.get_args_parser().parse_args(["--resume", str(killed), "--no-progress",
                                                                  "--cache-dir", str(data / "cache"),
                                                                  "--nonstandard-data"]))
    a = torch.load(whole / "checkpoint.pt", weights_only=True)["state_dict"]
    b = torch.load(killed / "checkpoint.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (whole / "metrics.jsonl").read_bytes() == (killed / "metrics.jsonl").read_bytes()
    payload = load_checkpoint(whole)
    assert payload["method"] == "maml-rep" and config_from_checkpoint(payload).method == "maml-rep"


def test_export_and_evaluation_read_it_like_any_checkpoint(data, tmp_path):
    """Exported weights-only, a MAML-Rep run rebuilds the network from its config alone, and the
    evaluation protocol trains its PLN on frozen RLN features (what evaluate_omniglot.py does)."""
    from experiment import export
    from experiment.evaluation.features import feature_bank
    from experiment.evaluation.omniglot import Protocol, evaluate
    from experiment.omniglot_presets import build_model

    run = oml_omniglot.main(oml_omniglot.get_args_parser().parse_args(
        ["--path", str(data), "--cache-dir", str(data / "cache"), "--results-dir", str(tmp_path), "--nonstandard-data",
         *TINY, "--steps", "2", "--quick-eval", "4"]))
    assert (run / "quick_eval.json").is_file()  # the post-training check runs as for every method
    out = tmp_path / "maml_rep.pt"
    export.main(export.get_args_parser().parse_args([str(run), str(out)]))
    payload = torch.load(out, weights_only=True)
    assert "training" not in payload and payload["method"] == "maml-rep"
    config = config_from_checkpoint(payload)
    model = build_model(config)
    model.load_state_dict(payload["state_dict"])
    evaluation = load_omniglot(data, "evaluation", 14, cache_dir=False, progress=False)
    bank = feature_bank(model.rln.eval(), evaluation, cache_dir=False)
    entry = evaluate(model.pln, bank, (4,), Protocol(runs=2, search_runs=2, seed=0))["by_classes"]["4"]
    assert 0 <= entry["held_out_accuracy"]["mean"] <= 1 and 0 <= entry["trajectory_accuracy"]["mean"] <= 1
