"""The seed notebook's cells, run against core instead of the notebook's own definitions."""

import numpy as np
import pytest

from core import Network, ShapeError, sigmoid, sigmoid_derivative


def random_vectors(dim, cnt):
    """The notebook's helper: cnt column vectors of length dim from the global generator."""
    return [np.random.rand(dim, 1) for _ in range(cnt)]


def reference_step(W_n, B_n, batch, learning_rate):
    """One gradient descent step computed independently of core: per sample, column vectors,
    the notebook's equations with the input kept as the first activation (the fix)."""
    grad_W = [np.zeros_like(W) for W in W_n]
    grad_B = [np.zeros_like(b) for b in B_n]
    for x, y in batch:
        activations = [x]
        for W, b in zip(W_n, B_n):
            activations.append(sigmoid(W.T @ activations[-1] + b))
        a = activations[-1]
        delta = (a - y) * a * (1 - a)
        for L in range(len(W_n) - 1, -1, -1):
            grad_W[L] += activations[L] @ delta.T
            grad_B[L] += delta
            if L:
                h = activations[L]
                delta = (W_n[L] @ delta) * h * (1 - h)
    d = len(batch)
    return (
        [W - learning_rate / d * g for W, g in zip(W_n, grad_W)],
        [b - learning_rate / d * g for b, g in zip(B_n, grad_B)],
    )


def test_initial_weights_match_the_notebook():
    np.random.seed(2023)
    my_net = Network([3, 2, 2])
    expected = np.array(
        [[-0.10215984, -1.14129263], [2.65440726, 1.44060519], [0.09890227, -3.12153215]]
    )
    np.testing.assert_allclose(my_net.W_n[0], expected, atol=5e-9)
    assert my_net.structure == [3, 2, 2] and my_net.num_layers == 3
    assert [b.shape for b in my_net.B_n] == [(2, 1), (2, 1)]
    assert [W.shape for W in my_net.W_n] == [(3, 2), (2, 2)]


def test_private_seed_draws_what_the_global_seed_draws():
    np.random.seed(7)
    global_net = Network([4, 5, 3])
    private_net = Network([4, 5, 3], rng=7)
    for a, b in zip(global_net.W_n + global_net.B_n, private_net.W_n + private_net.B_n):
        assert np.array_equal(a, b)


def test_four_long_inputs_raise_a_clear_value_error():
    np.random.seed(2023)
    my_net = Network([3, 2, 2])
    before = [W.copy() for W in my_net.W_n]
    np.random.seed(2023)
    a = list(zip(random_vectors(4, 4), random_vectors(2, 4)))
    with pytest.raises(ValueError) as info:
        my_net.gradient_descent(a, 2.0)
    assert isinstance(info.value, ShapeError)
    message = str(info.value)
    assert "expected size 3" in message and "got size 4" in message and "structure[0]" in message
    assert all(np.array_equal(w, b) for w, b in zip(my_net.W_n, before)), "weights changed"


def test_wrong_target_size_raises_a_clear_value_error():
    my_net = Network([3, 2, 2], rng=0)
    batch = list(zip(random_vectors(3, 2), random_vectors(5, 2)))
    with pytest.raises(ShapeError, match=r"expected size 2, got size 5.*structure\[-1\]"):
        my_net.gradient_descent(batch, 1.0)


def test_sixty_four_sample_cell_gives_the_correct_weights():
    np.random.seed(2023)
    my_net = Network([3, 2, 2])
    initial = my_net.W_n[0].copy()
    np.random.seed(2023)
    random_batch = list(zip(random_vectors(3, 64), random_vectors(2, 64)))
    expected_W, expected_B = reference_step(my_net.W_n, my_net.B_n, random_batch, 3.0)

    my_net.gradient_descent(random_batch, 3.0)

    for got, want in zip(my_net.W_n + my_net.B_n, expected_W + expected_B):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-13)
    assert np.abs(my_net.W_n[0] - initial).max() > 1e-3, "the step did not move the weights"


def test_backprop_of_one_pair_matches_the_reference():
    net = Network([3, 4, 2], rng=1)
    x, y = np.random.RandomState(2).rand(3, 1), np.array([[1.0], [0.0]])
    grad_B, grad_W = net.backprop(x, y)
    # reference_step with rate 1 and one sample: new = old - grad
    new_W, new_B = reference_step(net.W_n, net.B_n, [(x, y)], 1.0)
    for g, old, new in zip(grad_W + grad_B, net.W_n + net.B_n, new_W + new_B):
        np.testing.assert_allclose(g, old - new, atol=1e-14)
    assert [g.shape for g in grad_B] == [(4, 1), (2, 1)]


def test_train_runs_the_mini_batches_in_order():
    np.random.seed(3)
    net = Network([3, 4, 2])
    data = list(zip(random_vectors(3, 12), random_vectors(2, 12)))
    batches = [data[:5], data[5:9], data[9:]]
    W_n, B_n = net.W_n, net.B_n
    for _ in range(2):
        for batch in batches:
            W_n, B_n = reference_step(W_n, B_n, batch, 0.5)
    net.train(2, batches, 0.5)
    for got, want in zip(net.W_n + net.B_n, W_n + B_n):
        np.testing.assert_allclose(got, want, atol=1e-13)


def test_seed_sigmoid_helpers():
    z = np.array([[1, 0], [3, 4]])
    np.testing.assert_allclose(sigmoid(z), [[0.73105858, 0.5], [0.95257413, 0.98201379]], atol=1e-8)
    np.testing.assert_allclose(sigmoid_derivative(0.0), 0.25)
