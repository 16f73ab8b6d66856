"""The Table 2 learners' update rules (model/continual/) on tiny generated data."""
import copy
import itertools
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model.continual import EWC, MER, ExperienceReplay, Online, Reservoir
from model.continual.ewc import penalty_grads
from model.continual.models import LinearHead, Network
from model.continual.reservoir import stack


def _linear_problem(seed=0, n=12, n_features=7, n_outputs=5, sparsity=0.5):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, n_features, generator=gen) * (torch.rand(n, n_features, generator=gen) > sparsity)
    y = torch.randint(0, n_outputs, (n,), generator=gen)
    params = [torch.randn(n_features, n_outputs, generator=gen) * 0.3, torch.randn(n_outputs, generator=gen) * 0.1]
    return x, y, params


def _autograd_grads(params, x, y):
    live = [p.clone().requires_grad_() for p in params]
    loss = F.cross_entropy(x @ live[0] + live[1], y)
    return torch.autograd.grad(loss, live)


# --- the models -------------------------------------------------------------------------------------

def test_linear_head_grads_and_sparse_step_match_autograd():
    x, y, params = _linear_problem()
    head = LinearHead()
    for rows in (slice(0, 1), slice(0, 5)):
        _, grads = head.grads(params, x[rows], y[rows])
        for g, ref in zip(grads, _autograd_grads(params, x[rows], y[rows])):
            torch.testing.assert_close(g, ref)
        stepped = [p.clone() for p in params]
        head.sgd_step_(stepped, x[rows], y[rows], 0.5)  # only the rows of the features the batch uses
        for s, p, ref in zip(stepped, params, _autograd_grads(params, x[rows], y[rows])):
            torch.testing.assert_close(s, p - 0.5 * ref)
    unused = (x[:1] == 0).all(0)
    assert unused.any()  # the check above covered untouched rows


def test_fisher_of_the_linear_head_is_the_mean_squared_per_sample_gradient():
    x, y, params = _linear_problem()
    fisher = LinearHead().sq_grads(params, x, y)
    per_sample = [_autograd_grads(params, x[i:i + 1], y[i:i + 1]) for i in range(len(y))]
    for k, f in enumerate(fisher):
        torch.testing.assert_close(f, torch.stack([g[k] ** 2 for g in per_sample]).mean(0))
    # and the whole-network model gives the same on a network that is this linear head
    layer = nn.Linear(x.shape[1], params[1].numel())
    net = Network(layer)
    as_net = [params[0].t().contiguous(), params[1]]
    for f, g in zip(net.sq_grads(as_net, x, y), fisher):
        torch.testing.assert_close(f.t() if f.ndim == 2 else f, g)


# --- ER-Reservoir -----------------------------------------------------------------------------------

def test_reservoir_holds_a_uniform_random_subset():
    """Algorithm R: after N items each subset of `size` items is equally likely (chi-square over all
    C(N, size) subsets), so each item is kept with probability size / N."""
    n_items, size, trials = 10, 3, 12_000
    rng = np.random.default_rng(0)
    subsets, kept = Counter(), np.zeros(n_items)
    for _ in range(trials):
        memory = Reservoir(size, rng)
        for i in range(n_items):
            memory.add(i)
        assert memory.seen == n_items and len(memory) == size
        subsets[tuple(sorted(memory.items))] += 1
        kept[memory.items] += 1
    all_subsets = list(itertools.combinations(range(n_items), size))
    assert set(subsets) <= set(all_subsets)
    expected = trials / len(all_subsets)
    chi2 = sum((subsets[s] - expected) ** 2 / expected for s in all_subsets)
    df = len(all_subsets) - 1
    assert chi2 < df + 5 * (2 * df) ** 0.5  # 5 sigma above the chi-square mean
    p = size / n_items
    assert np.abs(kept / trials - p).max() < 5 * (p * (1 - p) / trials) ** 0.5


def test_reservoir_fills_in_order_and_samples_without_replacement():
    memory = Reservoir(4, np.random.default_rng(1))
    for i in range(3):
        memory.add(i)
    assert memory.items == [0, 1, 2] and sorted(memory.sample(10)) == [0, 1, 2]
    assert memory.sample(0) == [] and Reservoir(4, np.random.default_rng(1)).sample(3) == []
    for i in range(3, 50):
        memory.add(i)
        picked = memory.sample(3)
        assert len(set(picked)) == 3 and set(picked) <= set(memory.items)


def test_er_step_is_sgd_on_the_new_sample_and_its_replay_batch():
    x, y, params = _linear_problem(n=10)
    learner = ExperienceReplay(LinearHead(), 0.3, np.random.default_rng(3), replay=4, memory=5)
    for i in range(8):
        before = [p.clone() for p in params]
        shadow = copy.deepcopy(learner.memory.rng)  # the draw the learner is about to make
        replayed = Reservoir(5, shadow)
        replayed.items = list(learner.memory.items)
        xb, yb = stack([(x[i:i + 1], y[i:i + 1]), *replayed.sample(4)])
        learner.observe(params, x[i:i + 1], y[i:i + 1])
        for p, b, g in zip(params, before, _autograd_grads(before, xb, yb)):
            torch.testing.assert_close(p, b - 0.3 * g)
        assert len(xb) == 1 + min(i, 4)
    assert len(learner.memory) == 5 and learner.memory.seen == 8


# --- MER --------------------------------------------------------------------------------------------

def _filled_mer(beta, gamma, batches, batch_size, seed=5):
    x, y, params = _linear_problem(seed=seed, n=10)
    learner = MER(LinearHead(), 0.2, np.random.default_rng(seed), beta=beta, gamma=gamma, batches=batches,
                  batch_size=batch_size, memory=6)
    for i in range(7):
        learner.memory.add((x[i:i + 1], y[i:i + 1]))
    return x, y, params, learner


def _planned_batches(learner, current, batches, batch_size):
    shadow = Reservoir(learner.memory.size, copy.deepcopy(learner.memory.rng))
    shadow.items = list(learner.memory.items)
    return [[*shadow.sample(batch_size - 1), current] for _ in range(batches)]


def test_mer_with_gamma_beta_one_and_one_batch_is_k_plain_sgd_steps():
    """The documented special case: s = 1, gamma = beta = 1 -> k sequential SGD steps on the batch
    (k-1 memories, then the current sample)."""
    x, y, params, learner = _filled_mer(1.0, 1.0, batches=1, batch_size=4)
    current = (x[8:9], y[8:9])
    (batch,) = _planned_batches(learner, current, 1, 4)
    expected = [p.clone() for p in params]
    for xj, yj in batch:
        for p, g in zip(expected, _autograd_grads(expected, xj, yj)):
            p.sub_(0.2 * g)
    learner.observe(params, *current)
    for p, e in zip(params, expected):
        torch.testing.assert_close(p, e)
    assert learner.memory.seen == 8


def test_mer_reptile_steps_follow_algorithm_1():
    beta, gamma = 0.5, 0.25
    x, y, params, learner = _filled_mer(beta, gamma, batches=2, batch_size=3)
    current = (x[9:10], y[9:10])
    planned = _planned_batches(learner, current, 2, 3)
    theta = [p.clone() for p in params]
    start = [p.clone() for p in theta]
    for batch in planned:
        within = [p.clone() for p in theta]
        for xj, yj in batch:
            for p, g in zip(theta, _autograd_grads(theta, xj, yj)):
                p.sub_(0.2 * g)
        theta = [w + beta * (t - w) for w, t in zip(within, theta)]
    theta = [s + gamma * (t - s) for s, t in zip(start, theta)]
    learner.observe(params, *current)
    for p, e in zip(params, theta):
        torch.testing.assert_close(p, e)


# --- EWC ---------------------------------------------------------------------------------------------

def test_ewc_penalty_is_zero_at_the_anchor_and_its_gradient_is_the_formula():
    x, y, params = _linear_problem(seed=7, n=12)
    model, lam = LinearHead(), 3.0
    learner = EWC(model, 0.1, lam=lam)
    assert learner.penalty(params).item() == 0.0  # no task finished: no penalty
    learner.end_task(params, x[:6], y[:6])
    assert abs(learner.penalty(params).item()) < 1e-6  # at the anchor
    anchor1, fisher1 = [p.clone() for p in params], model.sq_grads(params, x[:6], y[:6])
    for i in range(6, 12):
        learner.observe(params, x[i:i + 1], y[i:i + 1])
    anchor2, fisher2 = [p.clone() for p in params], model.sq_grads(params, x[6:], y[6:])
    learner.end_task(params, x[6:], y[6:])
    theta = [p + 0.05 * torch.randn_like(p) for p in params]
    # Eq. 3 with one penalty per finished task
    direct = sum(lam / 2 * (f * (t - a) ** 2).sum() for anchors, fishers in ((anchor1, fisher1), (anchor2, fisher2))
                 for t, a, f in zip(theta, anchors, fishers))
    torch.testing.assert_close(learner.penalty(theta), direct, rtol=1e-4, atol=1e-6)
    live = [t.clone().requires_grad_() for t in theta]
    auto = torch.autograd.grad(learner.penalty(live), live)
    formula = [lam * (f1 * (t - a1) + f2 * (t - a2))
               for t, a1, f1, a2, f2 in zip(theta, anchor1, fisher1, anchor2, fisher2)]
    for a, f, g in zip(auto, formula, penalty_grads(theta, learner.fisher_sum, learner.fisher_anchor_sum, lam)):
        torch.testing.assert_close(a, f, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(g, f, rtol=1e-4, atol=1e-6)
    # and a step is SGD on cross-entropy + penalty
    before = [t.clone() for t in theta]
    learner.observe(theta, x[:1], y[:1])
    live = [b.clone().requires_grad_() for b in before]
    loss = F.cross_entropy(x[:1] @ live[0] + live[1], y[:1]) + learner.penalty(live)
    for t, b, g in zip(theta, before, torch.autograd.grad(loss, live)):
        torch.testing.assert_close(t, b - 0.1 * g, rtol=1e-4, atol=1e-6)


def test_online_is_one_sgd_step_per_sample_and_ignores_tasks():
    x, y, params = _linear_problem(seed=9)
    learner = Online(LinearHead(), 0.4)
    before = [p.clone() for p in params]
    learner.observe(params, x[:1], y[:1])
    learner.end_task(params, x, y)
    for p, b, g in zip(params, before, _autograd_grads(before, x[:1], y[:1])):
        torch.testing.assert_close(p, b - 0.4 * g)


@pytest.mark.parametrize("learner_cls, extra", [(Online, {}), (ExperienceReplay, {"replay": 3}),
                                                (MER, {"beta": 0.5}), (EWC, {"lam": 1.0})])
def test_network_model_trains_every_parameter(learner_cls, extra):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4))
    model = Network(net)
    params = [p.detach().clone() for p in net.parameters()]
    x, y = torch.rand(6, 1, 6, 6), torch.tensor([0, 1, 2, 3, 0, 1])
    learner = learner_cls(model, 0.1, rng=np.random.default_rng(0), **extra)
    for i in range(3):
        learner.observe(params, x[i:i + 1], y[i:i + 1])
    learner.end_task(params, x[:3], y[:3])
    for i in range(3, 6):
        learner.observe(params, x[i:i + 1], y[i:i + 1])
    # every parameter moved, to finite values (NaN parameters would also differ from the start)
    assert all(torch.isfinite(p).all() and not torch.equal(p, q) for p, q in zip(params, net.parameters(), strict=True))
