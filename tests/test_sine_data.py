"""datasets/sine.py: the task family's ranges, the input layout (one-hot slot, then x), and what
the trajectory and pretraining samplers return."""
import numpy as np
import pytest

from datasets.sine import X_RANGE, SineFamily, encode, sample_iid, sample_trajectory


def test_amplitudes_and_phases_fill_their_ranges():
    family = SineFamily.draw(200_000, np.random.default_rng(0))
    assert len(family) == 200_000
    a, p = family.amplitudes, family.phases
    assert a.min() >= 0.1 and a.max() <= 5.1 and p.min() >= 0.0 and p.max() <= np.pi
    # ...and reach both ends (a shifted or scaled range would leave one end empty)
    assert a.min() < 0.1 + 1e-3 and a.max() > 5.1 - 1e-3 and p.min() < 1e-3 and p.max() > np.pi - 1e-3
    assert abs(a.mean() - 2.6) < 0.02 and abs(p.mean() - np.pi / 2) < 0.01  # uniform
    # the functions are fixed by the seed alone
    again = SineFamily.draw(200_000, np.random.default_rng(0))
    assert np.array_equal(a, again.amplitudes) and np.array_equal(p, again.phases)


def test_a_function_is_amplitude_times_sine_of_x_plus_phase():
    family = SineFamily(np.array([2.0, 0.5]), np.array([0.0, np.pi / 2]))
    x = np.array([np.pi / 2, 0.0])
    np.testing.assert_allclose(family(np.array([0, 1]), x), [2.0, 0.5], atol=1e-12)
    np.testing.assert_allclose(family(1, np.pi / 2), 0.0, atol=1e-12)


def test_encode_layout():
    out = encode([2, 0, 4], [-1.5, 0.25, 5.0], capacity=5)
    assert out.dtype == np.float32 and out.shape == (3, 6)
    np.testing.assert_array_equal(out, [[0, 0, 1, 0, 0, -1.5], [1, 0, 0, 0, 0, 0.25], [0, 0, 0, 0, 1, 5.0]])
    # a scalar slot broadcasts over x
    np.testing.assert_array_equal(encode(1, np.zeros((2, 2)), capacity=3)[..., :3], np.tile([0, 1, 0], (2, 2, 1)))


def _one_hot_slot(inputs, capacity):
    one_hot = inputs[..., :capacity]
    assert set(np.unique(one_hot)) <= {0.0, 1.0} and np.all(one_hot.sum(-1) == 1)
    return one_hot.argmax(-1)


@pytest.mark.parametrize("slot_mode", ["position", "random"])
def test_trajectory_layout_and_ranges(slot_mode):
    capacity, tasks, steps, batch, extra = 50, 10, 4, 8, 30
    family = SineFamily.draw(400, np.random.default_rng(1))
    t = sample_trajectory(family, np.random.default_rng(2), tasks=tasks, update_step=steps, batch_size=batch,
                          extra_per_task=extra, capacity=capacity, slot_mode=slot_mode)
    assert t["x_traj"].shape == (tasks * steps, batch, capacity + 1) and t["y_traj"].shape == (tasks * steps, batch, 1)
    assert t["x_extra"].shape == (tasks, extra, capacity + 1) and t["y_extra"].shape == (tasks, extra, 1)
    ids, slots = t["ids"], t["slots"]
    assert len(set(ids)) == tasks and len(set(slots)) == tasks and all(0 <= s < capacity for s in slots)
    if slot_mode == "position":
        assert list(slots) == list(range(tasks))
    # function by function: `steps` batches of function i, each with slot i's one-hot and its values
    for i in range(tasks):
        x = t["x_traj"][i * steps : (i + 1) * steps]
        assert np.all(_one_hot_slot(x, capacity) == slots[i])
        np.testing.assert_allclose(t["y_traj"][i * steps : (i + 1) * steps, :, 0], family(ids[i], x[..., -1].astype(np.float64)),
                                   atol=1e-5)
        assert np.all(_one_hot_slot(t["x_extra"][i], capacity) == slots[i])
        np.testing.assert_allclose(t["y_extra"][i, :, 0], family(ids[i], t["x_extra"][i, :, -1].astype(np.float64)), atol=1e-5)
    xs = np.concatenate([t["x_traj"][..., -1].ravel(), t["x_extra"][..., -1].ravel()])
    assert X_RANGE == (-5.0, 5.0) and xs.min() >= -5.0 and xs.max() <= 5.0 and xs.min() < -4.8 and xs.max() > 4.8


def test_random_slots_use_the_whole_capacity():
    family = SineFamily.draw(400, np.random.default_rng(1))
    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(30):
        seen |= set(sample_trajectory(family, rng, tasks=10, update_step=1, batch_size=1, extra_per_task=1, capacity=50,
                                      slot_mode="random")["slots"])
    assert seen == set(range(50))


def test_pretraining_samples_slot_and_head_of_each_function():
    family = SineFamily.draw(400, np.random.default_rng(0))
    x, y, heads = sample_iid(family, np.random.default_rng(4), n_functions=25, samples=6, capacity=10)
    assert x.shape == (150, 11) and y.shape == (150, 1) and heads.shape == (150,)
    slots = _one_hot_slot(x, 10)
    values = x[:, -1].astype(np.float64)
    assert values.min() >= -5.0 and values.max() <= 5.0
    # function id = head * capacity + slot, and y is that function's value
    ids = heads * 10 + slots
    assert len(set(ids)) == 25 and ids.max() < 400
    np.testing.assert_allclose(y[:, 0], family(ids, values), atol=1e-5)
    assert np.all(ids.reshape(25, 6) == ids.reshape(25, 6)[:, :1])  # 6 samples per function, together
