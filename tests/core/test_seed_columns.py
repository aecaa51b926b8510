"""gradient_descent's reused buffers for the seed's column pairs: the same step as the array
API on the same rows, whatever the batch sizes and however the pairs change between steps,
and every batch they do not take goes to ``pairs_to_arrays`` as before."""

import copy
import pickle
import re
import warnings

import numpy as np
import pytest

from core import Network, ShapeError

from .test_seed_pairs import column_pairs


def assert_same_parameters(net, other):
    for got, want in zip(net.W_n + net.B_n, other.W_n + other.B_n):
        assert got.dtype == want.dtype
        assert got.tobytes() == want.tobytes()


def pairs_to_arrays_refused(monkeypatch):
    """Make pairs_to_arrays fail, so a step that still works took the reused buffers."""

    def refuse(self, pairs, field):
        raise AssertionError("pairs_to_arrays was called")

    monkeypatch.setattr(Network, "pairs_to_arrays", refuse)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_batches_of_many_sizes_step_as_the_array_api(dtype, monkeypatch):
    # more sizes than the network keeps buffers for, and back again: evicted and rebuilt
    X, Y, pairs = column_pairs([6, 5, 3], 40, seed=1, dtype=dtype)
    seed_net = Network([6, 5, 3], dtype=dtype, rng=2)
    array_net = Network([6, 5, 3], dtype=dtype, rng=2)
    pairs_to_arrays_refused(monkeypatch)
    start = 0
    for size in (10, 7, 10, 1, 3, 5, 2, 10, 7, 4):
        rows = slice(start % 30, start % 30 + size)
        seed_net.gradient_descent(pairs[rows], 2.0)
        array_net.sgd_step(X[rows], Y[rows], 2.0)
        start += size
    assert_same_parameters(seed_net, array_net)
    assert len(seed_net.__dict__["_column_batches"]) <= 4


def test_one_list_with_new_values_steps_on_the_new_values():
    X, Y, _ = column_pairs([4, 3, 2], 6, seed=3)
    pairs = [(np.empty((4, 1)), y.reshape(-1, 1)) for y in Y]
    seed_net, array_net = Network([4, 3, 2], rng=5), Network([4, 3, 2], rng=5)
    for scale in (1.0, -2.0, 0.5):
        for (x, _), row in zip(pairs, X):
            x[:, 0] = row * scale  # the same arrays in the same list, new numbers
        seed_net.gradient_descent(pairs, 1.5)
        array_net.sgd_step(X * scale, Y, 1.5)
    assert_same_parameters(seed_net, array_net)
    pairs[4][0][2, 0] = np.nan  # and a NaN in a list that passed before is still refused
    before = copy.deepcopy(seed_net)
    with pytest.raises(ValueError, match=re.escape("mini_batch[4] input: expected finite")):
        seed_net.gradient_descent(pairs, 1.5)
    assert_same_parameters(seed_net, before)


def test_the_pairs_are_left_as_they_were():
    _, _, pairs = column_pairs([4, 3, 2], 5, seed=4)
    kept = [(x.copy(), y.copy()) for x, y in pairs]
    Network([4, 3, 2], rng=0).gradient_descent(pairs, 3.0)
    for (x, y), (x0, y0) in zip(pairs, kept):
        assert x.tobytes() == x0.tobytes() and y.tobytes() == y0.tobytes()


OTHER_BATCHES = {
    "flat vectors": lambda x, y: (x.ravel(), y.ravel()),
    "rows": lambda x, y: (x.reshape(1, -1), y),
    "float32 vectors": lambda x, y: (x.astype(np.float32), y),
    "integers": lambda x, y: ((x * 100).astype(np.int64), y.astype(np.int64)),
    "a strided column view": lambda x, y: (np.repeat(x, 2, axis=1)[:, :1], y),
    "big-endian numbers": lambda x, y: (x.astype(">f8"), y),
    "nested lists": lambda x, y: (x.tolist(), y.tolist()),
    "masked arrays": lambda x, y: (np.ma.masked_array(x, mask=x > 0.5), y),
}


@pytest.mark.parametrize("kind", OTHER_BATCHES)
def test_other_vectors_step_as_their_converted_arrays(kind):
    _, _, pairs = column_pairs([5, 4, 3], 8, seed=6)
    pairs = [OTHER_BATCHES[kind](x, y) for x, y in pairs]
    net, reference = Network([5, 4, 3], rng=7), Network([5, 4, 3], rng=7)
    net.gradient_descent(pairs, 3.0)
    reference.sgd_step(*reference.pairs_to_arrays(pairs, "mini_batch"), 3.0)
    assert_same_parameters(net, reference)


@pytest.mark.parametrize("container", [tuple, iter, lambda pairs: (p for p in pairs)])
def test_other_containers_of_pairs_step_as_a_list(container):
    _, _, pairs = column_pairs([5, 4, 3], 8, seed=8)
    net, reference = Network([5, 4, 3], rng=9), Network([5, 4, 3], rng=9)
    net.gradient_descent(container(pairs), 3.0)
    reference.gradient_descent(pairs, 3.0)
    assert_same_parameters(net, reference)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_huge_finite_values_step_as_the_array_api_without_a_warning_of_the_check(dtype):
    # their squares overflow, so the buffers' check refuses them without a warning and the
    # per-pair checks accept them, as they always have
    huge = np.finfo(dtype).max / 4
    X = np.full((3, 3), huge, dtype)
    Y = np.eye(2, dtype=dtype)[[0, 1, 0]]
    pairs = [(x.reshape(-1, 1), y.reshape(-1, 1)) for x, y in zip(X, Y)]
    net, reference = Network([3, 2, 2], dtype=dtype, rng=0), Network([3, 2, 2], dtype=dtype, rng=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not net._column_batch(3).fill(pairs)
    with np.errstate(all="ignore"):  # the step's own arithmetic overflows
        net.gradient_descent(pairs, 1.0)
        reference.sgd_step(X, Y, 1.0)
    assert_same_parameters(net, reference)


def test_a_pair_of_wrong_sizes_is_named_after_a_clean_step():
    _, _, pairs = column_pairs([3, 2, 2], 4, seed=10)
    net = Network([3, 2, 2], rng=0)
    net.gradient_descent(pairs, 1.0)  # the buffers for 4 pairs exist now
    pairs[2] = (np.ones((3, 1)), np.ones((3, 1)))
    with pytest.raises(ShapeError, match=re.escape("mini_batch[2] target: expected size 2")):
        net.gradient_descent(pairs, 1.0)
    pairs[2] = (np.ones((3, 2)), np.ones((2, 1)))
    with pytest.raises(ValueError, match=re.escape("got shape (3, 2)")):
        net.gradient_descent(pairs, 1.0)


def test_copies_and_pickles_leave_the_buffers_behind():
    _, _, pairs = column_pairs([3, 2, 2], 4, seed=11)
    net = Network([3, 2, 2], rng=0)
    net.gradient_descent(pairs, 1.0)
    assert "_column_batches" in net.__dict__
    assert "_column_batches" not in pickle.loads(pickle.dumps(net)).__dict__
    assert "_column_batches" not in copy.deepcopy(net).__dict__
    net.release_workspaces()
    assert "_column_batches" not in net.__dict__
    net.gradient_descent(pairs, 1.0)  # and they come back
    assert 4 in net.__dict__["_column_batches"]
