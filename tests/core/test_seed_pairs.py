"""The seed API's (x, y) pairs: the batched conversion gives the per-pair checks' arrays and
raises their errors, naming the same pair and field.

``per_pair`` below is ``Network.pairs_to_arrays`` as it was before the batched conversion:
every expectation here is what that loop gave, on valid and on broken input alike.
"""

import re
import warnings

import numpy as np
import pytest

import core.network
from core import Network, ShapeError
from core.network import _as_vector


def per_pair(net, pairs, field):
    """The reference: one ``_as_vector`` per x and per y, in pair order, then np.stack."""
    xs, ys = [], []
    for i, (x, y) in enumerate(pairs):
        xs.append(_as_vector(x, f"{field}[{i}] input", net.structure[0], net.dtype, "structure[0]"))
        ys.append(
            _as_vector(y, f"{field}[{i}] target", net.structure[-1], net.dtype, "structure[-1]")
        )
    if not xs:
        raise ValueError(f"{field}: expected at least one (x, y) pair, got none")
    return np.stack(xs), np.stack(ys)


def column_pairs(structure, n, seed=0, dtype="float64"):
    rng = np.random.RandomState(seed)
    X = rng.rand(n, structure[0]).astype(dtype)
    Y = np.eye(structure[-1], dtype=dtype)[rng.randint(structure[-1], size=n)]
    return X, Y, [(x.reshape(-1, 1), y.reshape(-1, 1)) for x, y in zip(X, Y)]


def assert_same_arrays(got, want):
    for g, w in zip(got, want):
        assert type(g) is type(w) is np.ndarray
        assert g.dtype == w.dtype and g.shape == w.shape
        assert g.flags.c_contiguous
        np.testing.assert_array_equal(g, w)
        assert g.tobytes() == w.tobytes()  # bitwise, signed zeros included


def assert_same_error(net, pairs, field="mini_batch"):
    """pairs_to_arrays and gradient_descent raise what the per-pair loop raises, weights kept."""
    with pytest.raises(Exception) as expected:
        per_pair(net, pairs, field)
    with pytest.raises(type(expected.value)) as got:
        net.pairs_to_arrays(pairs, field)
    assert type(got.value) is type(expected.value)
    assert str(got.value) == str(expected.value)
    before = [a.copy() for a in net.W_n + net.B_n]
    with pytest.raises(type(expected.value), match=re.escape(str(expected.value))):
        net.gradient_descent(pairs, 3.0)
    assert all(np.array_equal(a, b) for a, b in zip(net.W_n + net.B_n, before)), "weights moved"
    return str(got.value)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("structure", [[64, 30, 10], [3, 4, 2], [1, 3, 1]])
def test_the_seed_api_steps_bitwise_as_the_array_api(structure, dtype):
    X, Y, pairs = column_pairs(structure, 40, dtype=dtype)
    seed_net = Network(structure, dtype=dtype, rng=4)
    array_net = Network(structure, dtype=dtype, rng=4)
    for start in (0, 10, 20, 30, 0, 7):
        batch = slice(start, start + 10)
        seed_net.gradient_descent(pairs[batch], 3.0)
        array_net.sgd_step(X[batch], Y[batch], 3.0)
    for got, want in zip(seed_net.W_n + seed_net.B_n, array_net.W_n + array_net.B_n):
        assert got.dtype == want.dtype == np.dtype(dtype)
        assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize(
    "make_x",
    [
        lambda x: x.reshape(-1, 1),  # the seed's columns
        lambda x: x,  # flat vectors
        lambda x: x.reshape(1, -1),  # rows
        lambda x: np.asfortranarray(x.reshape(-1, 1)),
        lambda x: np.repeat(x.reshape(-1, 1), 2, axis=1)[:, :1],  # a strided column view
        lambda x: x.reshape(-1, 1).astype(np.float32),
        lambda x: (x * 1000).astype(np.int64).reshape(-1, 1),
        lambda x: x > 0.5,  # booleans
        lambda x: x.reshape(-1, 1).tolist(),  # nested lists of Python floats
        lambda x: [int(v * 10) for v in x],  # Python ints
        lambda x: [2**62 + 2**38 + 1, -3, 2**25 + 1, 7, 2**70],  # and ones float32 rounds
        lambda x: [str(v) for v in x],  # numeric strings convert, as np.asarray converts them
        lambda x: np.array([[str(v)] for v in x]),  # and so do arrays of them
        lambda x: np.ma.masked_array(x.reshape(-1, 1), mask=x.reshape(-1, 1) > 0.5),  # data
        lambda x: np.asmatrix(x.reshape(-1, 1)),
    ],
)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_every_accepted_vector_stacks_to_the_per_pair_arrays(make_x, dtype):
    net = Network([5, 3, 2], dtype=dtype, rng=0)
    X, Y, _ = column_pairs([5, 3, 2], 6, seed=1)
    pairs = [(make_x(x), y.reshape(-1, 1)) for x, y in zip(X, Y)]
    assert_same_arrays(net.pairs_to_arrays(pairs, "mini_batch"), per_pair(net, pairs, "m"))


def test_mixed_shapes_and_dtypes_stack_to_the_per_pair_arrays():
    # (3, 1), (3,) and (1, 3) are all column vectors to the per-pair check; dtypes mix too
    net = Network([3, 2, 2], dtype="float32", rng=0)
    rng = np.random.RandomState(2)
    shapes = [(3, 1), (3,), (1, 3), (3, 1)]
    dtypes = [np.float64, np.int64, np.float32, np.float16]
    pairs = [
        ((rng.randn(*shape) * 1e3).astype(dt), rng.rand(2, 1))
        for shape, dt in zip(shapes * 2, dtypes * 2)
    ]
    # an int64 that rounds differently to float32 directly and by way of float64
    pairs.append((np.array([2**62 + 2**38 + 1, -3, 2**25 + 1]), [0.0, 1.0]))
    got = net.pairs_to_arrays(pairs, "mini_batch")
    assert_same_arrays(got, per_pair(net, pairs, "m"))
    # and the same arrays when every vector is one shape (the batched conversion)
    same_shape = [(np.asarray(x).reshape(-1, 1), np.reshape(y, (-1, 1))) for x, y in pairs]
    assert_same_arrays(net.pairs_to_arrays(same_shape, "mini_batch"), got)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_huge_finite_values_are_accepted_without_warnings(dtype):
    # their squares overflow, which the batched check cannot tell from infinity: the
    # per-pair checks then decide, and accept them as they always have
    net = Network([3, 2, 2], dtype=dtype, rng=0)
    huge = np.finfo(dtype).max / 4
    pairs = [(np.full((3, 1), huge), np.array([[1.0], [0.0]])) for _ in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = net.pairs_to_arrays(pairs, "mini_batch")
    assert_same_arrays(got, per_pair(net, pairs, "m"))


def test_the_arrays_are_new_memory():
    net = Network([3, 2, 2], rng=0)
    _, _, pairs = column_pairs([3, 2, 2], 4)
    inputs, targets = net.pairs_to_arrays(pairs, "mini_batch")
    inputs[:] = -1.0
    targets[:] = -1.0
    assert all((x >= 0).all() and (y >= 0).all() for x, y in pairs)


def test_a_clean_batch_is_converted_without_a_per_pair_check(monkeypatch):
    calls = []

    def counting(*args):
        calls.append(args[1])
        return _as_vector(*args)

    monkeypatch.setattr(core.network, "_as_vector", counting)
    net = Network([64, 30, 10], rng=0)
    _, _, pairs = column_pairs([64, 30, 10], 10)
    net.gradient_descent(pairs, 3.0)
    assert calls == []
    pairs[3] = (np.ones((63, 1)), pairs[3][1])  # a bad pair: the per-pair checks name it
    with pytest.raises(ShapeError):
        net.gradient_descent(pairs, 3.0)
    assert calls[:2] == ["mini_batch[0] input", "mini_batch[0] target"]
    assert calls[-1] == "mini_batch[3] input"


def replace(pairs, i, x=None, y=None):
    pairs = list(pairs)
    old_x, old_y = pairs[i]
    pairs[i] = (old_x if x is None else x, old_y if y is None else y)
    return pairs


PAIRS = column_pairs([3, 2, 2], 8, seed=5)[2]
NAN_X = np.array([[0.1], [np.nan], [0.3]])
INF_Y = np.array([[np.inf], [0.0]])

ERROR_CASES = {
    "x too long": (
        replace(PAIRS, 3, x=np.ones((4, 1))),
        "mini_batch[3] input: expected size 3, got size 4 (the network's structure[0])",
    ),
    "every x too long (the notebook's cell)": (
        [(np.ones((4, 1)), y) for _, y in PAIRS],
        "mini_batch[0] input: expected size 3, got size 4 (the network's structure[0])",
    ),
    "flat x too short": (
        replace(PAIRS, 6, x=np.ones(2)),
        "mini_batch[6] input: expected size 3, got size 2 (the network's structure[0])",
    ),
    "y too long": (
        replace(PAIRS, 2, y=np.ones((5, 1))),
        "mini_batch[2] target: expected size 2, got size 5 (the network's structure[-1])",
    ),
    "NaN in x": (
        replace(PAIRS, 4, x=NAN_X),
        "mini_batch[4] input: expected finite numbers, found NaN or infinity",
    ),
    "inf in y": (
        replace(PAIRS, 1, y=INF_Y),
        "mini_batch[1] target: expected finite numbers, found NaN or infinity",
    ),
    "-inf in the last x": (
        replace(PAIRS, 7, x=[[0.0], [-np.inf], [1.0]]),
        "mini_batch[7] input: expected finite numbers, found NaN or infinity",
    ),
    "None in x is NaN": (
        replace(PAIRS, 5, x=[0.0, None, 1.0]),
        "mini_batch[5] input: expected finite numbers, found NaN or infinity",
    ),
    "ragged: (3, 1) and (3,) then a (4,)": (
        replace(replace(PAIRS, 1, x=np.ones(3)), 5, x=np.ones(4)),
        "mini_batch[5] input: expected size 3, got size 4 (the network's structure[0])",
    ),
    "ragged: a (3, 3) matrix among columns": (
        replace(PAIRS, 2, x=np.ones((3, 3))),
        "mini_batch[2] input: expected a column vector of size 3, got shape (3, 3)",
    ),
    "a scalar x": (
        replace(PAIRS, 3, x=1.0),
        "mini_batch[3] input: expected a column vector of size 3, got shape ()",
    ),
    "a 3-D x": (
        replace(PAIRS, 0, x=np.ones((3, 1, 1))),
        "mini_batch[0] input: expected a column vector of size 3, got shape (3, 1, 1)",
    ),
    "every x 3-D": (
        [(np.ones((1, 3, 1)), y) for _, y in PAIRS],
        "mini_batch[0] input: expected a column vector of size 3, got shape (1, 3, 1)",
    ),
    "every x and every y 3-D": (
        [(np.ones((3, 1, 1)), np.ones((2, 1, 1))) for _ in PAIRS],
        "mini_batch[0] input: expected a column vector of size 3, got shape (3, 1, 1)",
    ),
    "every y a 2 x 1 x 1 block": (
        [(x, np.ones((2, 1, 1))) for x, _ in PAIRS],
        "mini_batch[0] target: expected a column vector of size 2, got shape (2, 1, 1)",
    ),
    "non-numeric text in x": (
        replace(PAIRS, 4, x=["0.5", "abc", "1"]),
        "could not convert string to float: 'abc'",
    ),
    "a dict for y": (replace(PAIRS, 2, y={"a": 1}), None),
    "a ragged nested list for x": (replace(PAIRS, 3, x=[[1.0], [2.0, 3.0], [4.0]]), None),
    "complex numbers in y": (replace(PAIRS, 6, y=[1j, 0]), None),
    "an empty list": ([], "mini_batch: expected at least one (x, y) pair, got none"),
    "a single x, not a pair": (
        PAIRS[:2] + [(PAIRS[2][0],)] + PAIRS[3:],
        "not enough values to unpack (expected 2, got 1)",
    ),
    "a triple": (PAIRS[:3] + [PAIRS[3] + (1,)], "too many values to unpack (expected 2)"),
    "a number, not a pair": (PAIRS[:1] + [7] + PAIRS[1:], "cannot unpack non-iterable int object"),
    "a bad x before a non-pair: the x comes first": (
        replace(PAIRS, 1, x=np.ones(5))[:3] + [None],
        "mini_batch[1] input: expected size 3, got size 5 (the network's structure[0])",
    ),
    "a bad y before a bad x: the earlier pair first": (
        replace(replace(PAIRS, 2, y=np.ones(3)), 4, x=np.ones(4)),
        "mini_batch[2] target: expected size 2, got size 3 (the network's structure[-1])",
    ),
    "a bad x and a bad y in one pair: the input first": (
        replace(PAIRS, 3, x=NAN_X, y=np.ones(3)),
        "mini_batch[3] input: expected finite numbers, found NaN or infinity",
    ),
    "a bad y and a NaN in a later x": (
        replace(replace(PAIRS, 0, y=np.ones(1)), 6, x=NAN_X),
        "mini_batch[0] target: expected size 2, got size 1 (the network's structure[-1])",
    ),
}


@pytest.mark.parametrize("case", ERROR_CASES)
def test_every_error_is_the_per_pair_error(case):
    pairs, message = ERROR_CASES[case]
    net = Network([3, 2, 2], rng=0)
    got = assert_same_error(net, pairs)
    if message is not None:
        assert got.startswith(message)


def test_blocks_of_the_right_size_are_not_vectors():
    # 2 x 2 inputs and targets have the sizes of a [4, 3, 4] network, but are not vectors
    net = Network([4, 3, 4], rng=0)
    pairs = [(np.ones((2, 2)), np.ones((2, 2))) for _ in range(3)]
    message = assert_same_error(net, pairs)
    assert message == "mini_batch[0] input: expected a column vector of size 4, got shape (2, 2)"


def test_a_size_error_is_a_shape_error_with_its_fields():
    net = Network([3, 2, 2], rng=0)
    with pytest.raises(ShapeError) as info:
        net.gradient_descent(replace(PAIRS, 3, x=np.ones((4, 1))), 2.0)
    assert (info.value.field, info.value.expected, info.value.actual) == (
        "mini_batch[3] input",
        3,
        4,
    )


def test_a_generator_of_pairs_converts_and_fails_like_a_list():
    net = Network([3, 2, 2], rng=0)
    assert_same_arrays(net.pairs_to_arrays(iter(PAIRS), "m"), per_pair(net, PAIRS, "m"))

    def broken():
        yield from PAIRS[:2]
        yield replace(PAIRS, 0, x=np.ones(4))[0]
        raise RuntimeError("the data source failed")

    with pytest.raises(ShapeError, match=re.escape("mini_batch[2] input: expected size 3")):
        net.pairs_to_arrays(broken(), "mini_batch")

    def failing_after_good_pairs():
        yield from PAIRS[:2]
        raise RuntimeError("the data source failed")

    with pytest.raises(RuntimeError, match="the data source failed"):
        net.pairs_to_arrays(failing_after_good_pairs(), "mini_batch")


def test_backprop_and_train_name_their_pairs_as_before():
    net = Network([3, 2, 2], rng=0)
    with pytest.raises(ShapeError, match=re.escape("x[0] target: expected size 2, got size 3")):
        net.backprop(np.ones((3, 1)), np.ones((3, 1)))
    with pytest.raises(ValueError, match=re.escape("x[0] input: expected finite numbers")):
        net.backprop(NAN_X, np.ones((2, 1)))
    batches = [PAIRS[:5], replace(PAIRS[5:], 2, x=np.ones(2))]  # the flat index: 5 + 2
    with pytest.raises(ShapeError, match=re.escape("training_data[7] input: expected size 3")):
        net.train(1, batches, 1.0)


def test_backprop_and_train_give_the_per_pair_results():
    X, Y, pairs = column_pairs([3, 4, 2], 12, seed=3)
    net = Network([3, 4, 2], rng=1)
    grad_B, grad_W = net.backprop(*pairs[0])
    _, weight_grads, bias_grads = net.gradient(X[:1], Y[:1])
    for got, want in zip(grad_W + grad_B, weight_grads + [g.reshape(-1, 1) for g in bias_grads]):
        assert got.tobytes() == want.tobytes()
    array_net = Network([3, 4, 2], rng=1)
    net.train(2, [pairs[:5], pairs[5:9], pairs[9:]], 0.5)
    for _ in range(2):
        for rows in (slice(0, 5), slice(5, 9), slice(9, 12)):
            array_net.sgd_step(X[rows], Y[rows], 0.5)
    for got, want in zip(net.W_n + net.B_n, array_net.W_n + array_net.B_n):
        assert got.tobytes() == want.tobytes()


def reference_step(W_n, B_n, inputs, targets, learning_rate):
    """One seed step written out plainly: sigmoid layers, quadratic cost, the batch's rows as
    samples, in the operation order of ``Workspace`` (each product and sum the same NumPy
    call on the same operands), so equal results are equal bits. W_n and B_n change in place."""
    sigmoid = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    activations = [inputs]
    for W, b in zip(W_n, B_n):
        activations.append(sigmoid(activations[-1] @ W + b.T))
    a = activations[-1]
    delta = (a - targets) * ((1 - a) * a)  # dC/dz at the output: (a - y) * sigma'(z)
    delta = delta * np.asarray(float(learning_rate) / len(inputs), a.dtype)
    grads = []
    for l in range(len(W_n) - 1, -1, -1):
        grads.append((l, activations[l].T @ delta, delta.sum(axis=0)))
        if l:
            h = activations[l]
            delta = (delta @ W_n[l].T) * ((1 - h) * h)
    for l, dW, db in grads:
        W_n[l] -= dW
        B_n[l] -= db.reshape(-1, 1)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("structure", [[64, 30, 10], [5, 7, 6, 3], [1, 3, 1]])
def test_gradient_descent_is_the_reference_step_bit_for_bit(structure, dtype):
    X, Y, pairs = column_pairs(structure, 40, seed=7, dtype=dtype)
    net = Network(structure, dtype=dtype, rng=3)
    W_n, B_n = [W.copy() for W in net.W_n], [b.copy() for b in net.B_n]
    for start, rate in ((0, 3.0), (10, 0.5), (20, 3.0), (30, 1.0), (0, 3.0), (7, 2.0)):
        rows = slice(start, start + 10)
        net.gradient_descent(pairs[rows], rate)
        reference_step(W_n, B_n, X[rows], Y[rows], rate)
    for got, want in zip(net.W_n + net.B_n, W_n + B_n):
        assert got.dtype == want.dtype == np.dtype(dtype)
        assert got.tobytes() == want.tobytes()
    assert not np.array_equal(net.W_n[0], Network(structure, dtype=dtype, rng=3).W_n[0])
