"""Each protocol fact has one definition in the code and a test here that states it with literals:

* the within-class split: drawers 1-15 are learned, drawers 16-20 (indices 15..19) are held out
  (datasets.omniglot.split_drawers; the feature cache and Scratch's images slice through it);
* the Oracle's i.i.d. order (`--iid`): a fresh shuffle of the whole trajectory every epoch
  (experiment/evaluation/omniglot.py `draw_run`);
* the Fig. 4 data flow: the search and the training see the training drawers only, the held-out
  accuracy is scored on drawers 16-20, search runs and reported runs come from their own streams;
* Table 2's task boundary: `end_task` after the last sample of every task but the last, handed
  exactly that task's samples (experiment/evaluation/table2.py `task_windows`);
* the interfaces the drivers rely on (typing.Protocol), and that every implementation meets them.

A one-line change to any of these fails a test here (scripts/mutation_probe.py, docs/reliability.md).
"""
from collections import Counter
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

import oml_omniglot
import oml_regression
from datasets.omniglot import N_DRAWERS, load_omniglot, split_drawers, to_float
from experiment.evaluation import table2
from experiment.evaluation.features import FeatureBank, feature_bank
from experiment.evaluation.omniglot import EvaluationLearner, Protocol, draw_run, run_protocol, run_specs
from experiment.evaluation.online_learner import OnlineLearner, PLNInit
from experiment.evaluation.scratch import EvalImages, ScratchLearner, fresh_params
from experiment.training import omniglot as omniglot_training
from experiment.training import sine as sine_training
from experiment.training.loop import TrainingTask
from model import online
from model.continual import LEARNERS, ContinualLearner
from model.continual.models import LearnerModel, LinearHead, Network
from tests.omniglot_fixtures import write_fake_both

TRAINING_DRAWERS = list(range(15))     # drawers 1-15, 0-based
HELD_OUT_DRAWERS = [15, 16, 17, 18, 19]  # drawers 16-20, 0-based


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """The evaluation split of a generated tree: 6 classes of 12px images, every image different."""
    data = write_fake_both(tmp_path_factory.mktemp("facts") / "data", n_alphabets=2, chars_per_alphabet=3, size=24)
    return load_omniglot(data, "evaluation", 12, cache_dir=False, progress=False)


# --- the within-class split ---------------------------------------------------------------------------

def test_split_drawers_is_drawers_1_to_15_then_16_to_20(split):
    by_drawer = np.broadcast_to(np.arange(N_DRAWERS)[None, :, None], (3, N_DRAWERS, 2))  # value = drawer index
    for array in (by_drawer, torch.from_numpy(by_drawer.copy())):
        train, held_out = split_drawers(array)
        assert train[1, :, 0].tolist() == TRAINING_DRAWERS and held_out[1, :, 0].tolist() == HELD_OUT_DRAWERS
    assert np.array_equal(split.train_images(), split.images[:, TRAINING_DRAWERS])
    assert np.array_equal(split.test_images(), split.images[:, HELD_OUT_DRAWERS])
    with pytest.raises(ValueError, match="20 drawers"):
        split_drawers(by_drawer[:, :19])


def test_the_feature_bank_holds_out_drawers_16_to_20(split):
    """An RLN that returns the pixels, so each feature row shows which image it came from."""
    bank = feature_bank(nn.Flatten(), split, cache_dir=False)
    pixels = to_float(split.images).flatten(2)  # [C, 20, H*W]
    assert torch.equal(bank.train, pixels[:, TRAINING_DRAWERS])
    assert torch.equal(bank.test, pixels[:, HELD_OUT_DRAWERS])
    assert not torch.equal(bank.test, pixels[:, 10:15])  # the drawers are told apart: the check can fail


def test_scratch_holds_out_drawers_16_to_20(split):
    images = EvalImages.from_split(split)
    assert torch.equal(images.train, torch.from_numpy(split.images[:, TRAINING_DRAWERS]))
    assert torch.equal(images.test, torch.from_numpy(split.images[:, HELD_OUT_DRAWERS]))


# --- the Fig. 4 runs and the Oracle's i.i.d. order --------------------------------------------------------

def test_a_run_is_n_distinct_classes_learned_class_after_class():
    run = draw_run(np.random.default_rng(0), 10, 10, iid=False, epochs=2)
    assert run.classes.tolist() == list(range(10))  # all 10 of a pool of 10: drawn without replacement
    assert run.order.tolist() == list(range(150)) * 2  # each class's 15 images, class after class, each epoch


def test_the_oracle_order_is_a_fresh_shuffle_of_the_whole_trajectory_every_epoch():
    n, length, epochs = 4, 60, 3
    first_steps = []
    for seed in range(300):
        run = draw_run(np.random.default_rng(seed), 12, n, iid=True, epochs=epochs)
        sorted_run = draw_run(np.random.default_rng(seed), 12, n, iid=False, epochs=epochs)
        # the same classes and PLN seed as the class-sorted run of the same stream: only the order differs
        assert np.array_equal(run.classes, sorted_run.classes) and run.init_seed == sorted_run.init_seed
        per_epoch = run.order.reshape(epochs, length)
        for order in per_epoch:
            assert sorted(order.tolist()) == list(range(length))  # every image once per epoch
        if seed < 10:
            assert not np.array_equal(per_epoch[0], per_epoch[1]) and not np.array_equal(per_epoch[1], per_epoch[2])
            assert len(set((per_epoch[0][:15] // 15).tolist())) > 1  # the first 15 steps mix classes
        first_steps.append(per_epoch[0][0])
    # the first image is uniform over the 60: mean 29.5, sd 17.3 / sqrt(300) = 1.0
    assert abs(np.mean(first_steps) - 29.5) < 5.0


def test_a_fresh_pln_and_a_fresh_scratch_network_are_kaiming_normal_with_zero_biases():
    """Kaiming-normal (fan_in, ReLU gain): std sqrt(2 / fan_in); over 120,000 draws the sample std is
    within 1% of it (its relative sd is 0.2%)."""
    w, b = PLNInit(nn.Sequential(nn.Linear(400, 300)), "all")(seed=3)
    assert abs(float(w.std()) / (2 / 400) ** 0.5 - 1) < 0.01 and abs(float(w.mean())) < 0.001 and not b.any()
    conv = nn.Sequential(nn.Conv2d(1, 64, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64 * 4 * 4, 2000))
    conv_w, conv_b, lin_w, lin_b = fresh_params(conv, seed=4)
    assert abs(float(conv_w.std()) / (2 / 9) ** 0.5 - 1) < 0.1  # 576 draws: relative sd 3%
    assert abs(float(lin_w.std()) / (2 / 1024) ** 0.5 - 1) < 0.01 and not conv_b.any() and not lin_b.any()


def test_scratch_learns_one_image_at_a_time_in_the_runs_order():
    """Scratch: a fresh network from the run's seed, then one SGD step per training image, batch 1,
    in `spec.order` (here the Oracle's shuffled order), written out by hand."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 8))
    images = torch.randint(0, 256, (8, 15, 6, 6), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    spec = draw_run(np.random.default_rng(1), 8, 2, iid=True, epochs=1)
    (final,) = ScratchLearner(net, Protocol(optimizer="sgd")).train(images, [spec], 0.05)
    params = [p.clone().requires_grad_() for p in fresh_params(net, spec.init_seed)]
    names = [name for name, _ in net.named_parameters()]
    x = to_float(images[torch.as_tensor(spec.classes)]).reshape(-1, 1, 6, 6)
    y = torch.as_tensor(np.repeat(spec.classes, 15))
    for t in spec.order.tolist():
        logits = torch.func.functional_call(net, dict(zip(names, params)), (x[t:t + 1],))
        grads = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, y[t:t + 1]), params)
        params = [(p - 0.05 * g).detach().requires_grad_() for p, g in zip(params, grads)]
    for got, want in zip(final, params, strict=True):
        torch.testing.assert_close(got, want.detach())


class SpyLearner:
    """An EvaluationLearner that records what run_protocol hands it and answers with known numbers."""

    def __init__(self, protocol: Protocol, n_outputs: int = 64):
        self.protocol, self.n_outputs, self.calls = protocol, n_outputs, []

    def init(self, seed: int) -> list[torch.Tensor]:
        return [torch.zeros(1)]

    def record(self) -> dict:
        return {"learner": "spy"}

    def train(self, bank_train, specs, lr):
        self.calls.append(("train", bank_train, specs, lr))
        return [[torch.tensor(float(i))] for i in range(len(specs))]

    def trajectory_accuracy(self, bank_train, specs, params):
        self.calls.append(("trajectory", bank_train, specs))
        return [0.25 + 0.01 * float(p[0]) for p in params]

    def held_out_accuracy(self, bank_test, specs, params):
        self.calls.append(("held_out", bank_test, specs))
        return [0.5 + 0.01 * float(p[0]) for p in params]


@pytest.mark.parametrize("iid", [False, True])
def test_the_protocol_hands_the_search_and_training_drawers_1_to_15_and_scores_16_to_20(iid):
    bank = FeatureBank(torch.zeros(12, 15, 3), torch.ones(12, 5, 3), "spy")
    protocol = Protocol(iid=iid, epochs=2, runs=3, search_runs=2, seed=7)
    spy = SpyLearner(protocol)
    entry = run_protocol(spy, bank, (4,))["by_classes"]["4"]
    kinds = [call[0] for call in spy.calls]
    assert kinds.count("held_out") == 1 and kinds[-1] == "held_out"  # scored once, after the search and training
    assert all(call[1] is bank.train for call in spy.calls[:-1]) and spy.calls[-1][1] is bank.test
    search = [call[2] for call in spy.calls if call[0] == "train"][:-1]
    reported = spy.calls[-1][2]
    expected_search = run_specs(7, "lr_search", 4, 2, 12, iid, 2)
    expected_runs = run_specs(7, "eval", 4, 3, 12, iid, 2)
    for specs in search:
        assert [s.classes.tolist() for s in specs] == [s.classes.tolist() for s in expected_search]
    assert [s.classes.tolist() for s in reported] == [s.classes.tolist() for s in expected_runs]
    assert [s.classes.tolist() for s in expected_search] != [s.classes.tolist() for s in expected_runs]
    for spec in [*search[0], *reported]:
        epochs = spec.order.reshape(2, 60)
        if iid:
            assert not np.array_equal(epochs[0], np.arange(60)) and not np.array_equal(epochs[0], epochs[1])
        else:
            assert np.array_equal(epochs, np.tile(np.arange(60), (2, 1)))
    # what is reported is what the learner measured, run by run
    assert entry["runs"]["held_out_accuracy"] == [0.5, 0.51, 0.52]
    assert entry["runs"]["trajectory_accuracy"] == [0.25, 0.26, 0.27]


# --- the sine protocol's online step ----------------------------------------------------------------------

def test_the_sine_online_step_is_sgd_on_each_runs_own_mean_squared_error():
    """experiment/evaluation/sine.py trains R runs at once with model.online.sgd_step_runs: each run's
    update must be the plain SGD step on the mean squared error of its own batch, as one run alone gets."""
    gen = torch.Generator().manual_seed(0)
    runs, batch, width = 3, 4, 5
    params = [torch.randn(runs, 6, width, generator=gen), torch.randn(runs, 6, generator=gen),
              torch.randn(runs, 1, 6, generator=gen), torch.randn(runs, 1, generator=gen)]
    x, y = torch.randn(runs, batch, width, generator=gen), torch.randn(runs, batch, 1, generator=gen)
    out = online.forward(params, x)
    assert torch.allclose(online.per_run_mse(out, y), ((out - y) ** 2).mean(dim=(1, 2)))
    for clip in (None, 0.05):
        stepped = online.sgd_step_runs([p.clone().requires_grad_() for p in params], x, y, online.per_run_mse, 0.1, clip)
        for r in range(runs):
            alone = [p[r].clone().requires_grad_() for p in params]
            hidden = torch.relu(x[r] @ alone[0].t() + alone[1])
            loss = ((hidden @ alone[2].t() + alone[3] - y[r]) ** 2).mean()
            for new, old, grad in zip(stepped, params, torch.autograd.grad(loss, alone), strict=True):
                grad = grad if clip is None else grad.clamp(-clip, clip)
                torch.testing.assert_close(new[r].detach(), old[r] - 0.1 * grad)


# --- Table 2: tasks and their boundaries -------------------------------------------------------------------

def test_task_windows_end_every_task_but_the_last():
    order = np.array([2, 0, 1, 5, 3, 4, 7, 8, 6])
    assert [(end, rows.tolist()) for end, rows in table2.task_windows(order, 3)] == [(3, [2, 0, 1]), (6, [5, 3, 4])]
    assert table2.task_windows(order, 9) == []


class Recorder:
    """A ContinualLearner that records the stream it is fed."""
    made: ClassVar[list] = []

    def __init__(self, model, lr, rng=None, **hyperparameters):
        self.log = []
        Recorder.made.append(self)

    def observe(self, params, x, y) -> None:
        self.log.append(("observe", y.tolist(), x.clone()))

    def end_task(self, params, xs, ys) -> None:
        self.log.append(("end_task", ys.tolist(), xs.clone()))


def _labelled_features(n_classes: int) -> torch.Tensor:
    """[C, 15, 2] features whose values are (class, drawer): each row says which image it is."""
    c, d = torch.meshgrid(torch.arange(n_classes), torch.arange(15), indexing="ij")
    return torch.stack([c, d], dim=-1).float()


def test_end_task_sees_exactly_each_finished_tasks_samples_after_its_last_one(monkeypatch):
    monkeypatch.setitem(LEARNERS, "online", Recorder)
    Recorder.made.clear()
    features = _labelled_features(8)
    rep = table2.FrozenRLN(nn.Linear(2, 16), "OML")
    run = table2.draw_task_run(3, "eval", 2, 3, 0, 8, iid=False)  # 2 classes x 3 tasks
    table2.train_run(rep, "online", {"lr": 0.1}, run, features, table2.Table2Protocol())
    (recorder,) = Recorder.made
    kinds = [entry[0] for entry in recorder.log]
    assert len(kinds) == 92 and [i for i, k in enumerate(kinds) if k == "end_task"] == [30, 61]
    observed = [entry for entry in recorder.log if entry[0] == "observe"]
    assert [y for _, (y,), _ in observed] == np.repeat(run.classes, 15)[run.order].tolist()
    for t, index in enumerate((30, 61)):
        _, ys, xs = recorder.log[index]
        task_classes = run.classes[2 * t:2 * t + 2].tolist()
        assert Counter(ys) == {task_classes[0]: 15, task_classes[1]: 15}  # the task's 30 samples, no other
        assert sorted(map(tuple, xs.tolist())) == sorted((float(c), float(d)) for c in task_classes for d in range(15))


def test_each_learner_and_the_iid_row_get_their_streams(monkeypatch):
    seen = []
    real = table2.train_run

    def spy(rep, learner, hp, run, train, protocol):
        seen.append((learner, run))
        return real(rep, learner, hp, run, train, protocol)
    monkeypatch.setattr(table2, "train_run", spy)
    gen = torch.Generator().manual_seed(0)
    bank = FeatureBank(torch.rand(8, 15, 4, generator=gen), torch.rand(8, 5, 4, generator=gen), "synthetic")
    rep = table2.FrozenRLN(nn.Linear(4, 16), "OML")
    grids = {"features": {"lr": (0.1,)}}
    for learner in ("online", "iid"):
        table2.evaluate_cell(rep, learner, (2, 2), bank, table2.Table2Protocol(runs=2, search_runs=1, seed=3), grids)
    for learner in ("online", "iid"):
        runs = [run for name, run in seen if name == learner]
        assert len(runs) == 3  # one search run, then the two reported runs
        expected = [*table2.task_runs(3, "lr_search", 2, 2, 1, 8, learner == "iid"),
                    *table2.task_runs(3, "eval", 2, 2, 2, 8, learner == "iid")]
        for got, want in zip(runs, expected):
            assert np.array_equal(got.classes, want.classes) and np.array_equal(got.order, want.order)
        mixes = [bool((run.order[:30] >= 30).any()) for run in runs]
        assert mixes == [learner == "iid"] * 3  # Approx IID: the whole stream shuffled; the others: task by task


def test_table2_scores_held_out_on_drawers_16_to_20_of_each_runs_classes():
    gen = torch.Generator().manual_seed(1)
    prototypes = torch.relu(torch.randn(8, 1, 24, generator=gen))
    train, test = (torch.relu(prototypes + 0.3 * torch.randn(8, k, 24, generator=gen)) for k in (15, 5))
    bank = FeatureBank(train, test, "synthetic")
    rep = table2.FrozenRLN(nn.Linear(24, 16), "OML")
    protocol = table2.Table2Protocol(runs=2, search_runs=1, seed=5)
    hp = {"lr": 0.1, "lam": 1.0}
    cell = table2.evaluate_cell(rep, "ewc", (2, 3), bank, protocol, {"features": {"lr": (0.1,), "ewc": {"lam": (1.0,)}}})
    for r, run in enumerate(table2.task_runs(5, "eval", 2, 3, 2, 8, False)):
        wt, b = table2.train_run(rep, "ewc", hp, run, bank.train, protocol)
        assert torch.isfinite(wt).all() and torch.isfinite(b).all()
        for part, per_class, name in ((bank.test, 5, "held_out_accuracy"), (bank.train, 15, "trajectory_accuracy")):
            x = part[torch.as_tensor(run.classes)].reshape(-1, 24)
            labels = np.repeat(run.classes, per_class)
            expected = float(((x @ wt + b).argmax(1).numpy() == labels).mean())
            assert cell["runs"][name][r] == round(expected, 8)
    assert 0.4 < cell["held_out_accuracy"]["mean"] < 1.0  # it learns (chance is 1/6), and the check can fail


# --- meta-training's diagnostics --------------------------------------------------------------------------

def test_the_meta_set_diagnostics_read_random_images_first_then_the_trajectory_classes(monkeypatch):
    """The meta set is the random images (classes < class_split) first, then the trajectory classes'
    part: a meta-loss whose outputs are right exactly on the trajectory classes must log 1 and 0."""
    args = oml_omniglot.get_args_parser().parse_args(
        ["--image-size", "12", "--channels", "4", "--strides", "2", "2", "--n-classes", "8", "--class-split", "4",
         "--tasks", "2", "--update_step", "3", "--meta-random", "5"])
    task = omniglot_training.make_training(oml_omniglot._config(args), "cpu",
                                           np.zeros((8, N_DRAWERS, 12, 12), dtype=np.uint8))

    def right_on_trajectory_classes(model, x_traj, y_traj, x_meta, y_meta, loss_fn, rule):
        with torch.no_grad():
            loss_fn(model(x_meta), y_meta)  # the unadapted logits, as meta_loss records them
        on_trajectory = torch.isin(y_meta, y_traj.flatten())
        assert on_trajectory.tolist() == [False] * 5 + [True] * (len(y_meta) - 5)
        outputs = torch.zeros(len(y_meta), 16)
        outputs[torch.arange(len(y_meta)), torch.where(on_trajectory, y_meta, (y_meta + 1) % 16)] = 1.0
        loss = sum(p.sum() for p in model.parameters()) * 0.0
        return loss, loss.detach(), outputs
    monkeypatch.setattr(omniglot_training, "meta_loss", right_on_trajectory_classes)
    metrics = task.step()
    assert metrics["accuracy_after_trajectory_classes"] == 1.0 and metrics["accuracy_after_random"] == 0.0


# --- the interfaces ----------------------------------------------------------------------------------------

def test_every_learner_meets_its_interface():
    head, net = LinearHead(), Network(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)))
    assert isinstance(head, LearnerModel) and isinstance(net, LearnerModel)
    for name, cls in LEARNERS.items():
        assert isinstance(cls(head, 0.1, rng=np.random.default_rng(0)), ContinualLearner), name
    pln = nn.Sequential(nn.Linear(3, 16))
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 16))
    for learner in (OnlineLearner(pln, Protocol(engine="portable")), ScratchLearner(conv, Protocol()),
                    SpyLearner(Protocol())):
        assert isinstance(learner, EvaluationLearner), type(learner).__name__
    assert not isinstance(object(), EvaluationLearner) and not isinstance(head, ContinualLearner)


@pytest.mark.parametrize("method", ["oml", "pretraining", "srnn", "maml-rep"])
def test_every_omniglot_training_method_is_a_training_task(method):
    args = oml_omniglot.get_args_parser().parse_args(
        ["--image-size", "12", "--channels", "4", "--strides", "2", "2", "--n-classes", "8", "--class-split", "4",
         "--method", method, "--ways", "3"])
    cfg = oml_omniglot._config(args)
    task = omniglot_training.make_training(cfg, "cpu", np.zeros((8, N_DRAWERS, 12, 12), dtype=np.uint8))
    assert isinstance(task, TrainingTask)


@pytest.mark.parametrize("method", ["oml", "pretraining"])
def test_every_sine_training_method_is_a_training_task(method):
    cfg = oml_regression._config(oml_regression.get_args_parser().parse_args(["--preset", "quick", "--method", method]))
    assert isinstance(sine_training.make_training(cfg, "cpu"), TrainingTask)
