"""Backprop against per-sample sums, a hand-worked step, sympy and finite differences."""

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from core import Network, gradient_check

COMBINATIONS = [
    # (hidden activation, output activation, cost)
    ("sigmoid", "sigmoid", "quadratic"),
    ("tanh", "identity", "quadratic"),
    ("relu", "sigmoid", "cross_entropy"),
    ("sigmoid", "softmax", "cross_entropy"),
    ("tanh", "softmax", "quadratic"),
    ("relu", "tanh", "quadratic"),
]


def make_targets(rng, n, width, output, cost):
    if output == "softmax" or cost == "cross_entropy" and width > 1 and rng.rand() < 0.5:
        return np.eye(width)[rng.randint(width, size=n)]
    if output in ("identity", "relu"):
        return rng.randn(n, width)
    if output == "tanh":
        return rng.uniform(-1, 1, (n, width))
    return rng.rand(n, width)


@pytest.mark.parametrize("hidden,output,cost", COMBINATIONS)
def test_batched_gradient_is_the_sum_of_per_sample_gradients(hidden, output, cost):
    rng = np.random.RandomState(4)
    net = Network([5, 7, 4, 3], activation=hidden, output_activation=output, cost=cost, rng=4)
    X = rng.randn(16, 5)
    Y = make_targets(rng, 16, 3, output, cost)
    loss, weight_grads, bias_grads = net.gradient(X, Y)

    per_sample = [net.gradient(X[i : i + 1], Y[i : i + 1]) for i in range(16)]
    assert loss == pytest.approx(sum(p[0] for p in per_sample), rel=1e-12)
    for l in range(3):
        np.testing.assert_allclose(
            weight_grads[l], sum(p[1][l] for p in per_sample), rtol=0, atol=1e-12
        )
        np.testing.assert_allclose(bias_grads[l], sum(p[2][l] for p in per_sample), atol=1e-12)


def test_one_step_worked_by_hand():
    # structure [1, 1]: one weight w = 0.5, bias b = 0, sample x = 1, target y = 1, rate 3.
    net = Network([1, 1], rng=0)
    net.set_parameters([np.array([[0.5]])], [np.array([0.0])])
    net.gradient_descent([(np.array([[1.0]]), np.array([[1.0]]))], 3.0)
    # z = w x + b = 0.5; a = 1 / (1 + e^-0.5) = 0.6224593312018546
    # delta = (a - y) a (1 - a) = -0.37754066879814 * 0.2350037122015945 = -0.08872345867463687
    # w <- w - 3 * x * delta = 0.5 + 0.2661703760239106 = 0.7661703760239106
    # b <- b - 3 * delta = 0.2661703760239106
    assert net.W_n[0][0, 0] == pytest.approx(0.7661703760239106, abs=1e-15)
    assert net.B_n[0][0, 0] == pytest.approx(0.2661703760239106, abs=1e-15)


def test_gradient_check_is_small_for_backprop_and_large_for_a_wrong_gradient():
    rng = np.random.RandomState(0)
    net = Network([4, 5, 3], rng=0)
    X, Y = rng.randn(6, 4), rng.rand(6, 3)
    assert gradient_check(net, X, Y) < 1e-7

    class Broken(Network):
        def backward(self, activations, targets):
            loss, weight_grads, bias_grads = super().backward(activations, targets)
            weight_grads[0] = weight_grads[0] * 1.01  # a 1% error in one layer
            return loss, weight_grads, bias_grads

    broken = Broken([4, 5, 3], rng=0)
    assert gradient_check(broken, X, Y) > 1e-3


@pytest.mark.parametrize(
    "hidden,output,cost",
    [("sigmoid", "sigmoid", "quadratic"), ("tanh", "softmax", "cross_entropy")],
)
def test_backprop_equals_sympy_symbolic_derivatives(hidden, output, cost):
    structure = [2, 3, 2]
    net = Network(structure, activation=hidden, output_activation=output, cost=cost, rng=5)
    rng = np.random.RandomState(5)
    X = rng.randn(3, 2)
    Y = np.eye(2)[[0, 1, 1]] if output == "softmax" else rng.rand(3, 2)

    W = [
        sp.Matrix(n, m, lambda i, j, l=l: sp.Symbol(f"w{l}_{i}_{j}"))
        for l, (n, m) in enumerate(zip(structure[:-1], structure[1:]))
    ]
    B = [
        sp.Matrix(m, 1, lambda i, j, l=l: sp.Symbol(f"b{l}_{i}"))
        for l, m in enumerate(structure[1:])
    ]
    f_hidden = {"sigmoid": lambda z: 1 / (1 + sp.exp(-z)), "tanh": sp.tanh}[hidden]

    cost_expr = 0
    for x, y in zip(X, Y):
        a = sp.Matrix(x)
        a = (W[0].T * a + B[0]).applyfunc(f_hidden)
        z = W[1].T * a + B[1]
        if output == "softmax":
            exps = z.applyfunc(sp.exp)
            a = exps / sum(exps)
        else:
            a = z.applyfunc(lambda v: 1 / (1 + sp.exp(-v)))
        if cost == "quadratic":
            cost_expr += sum((a[i] - y[i]) ** 2 for i in range(2)) / 2
        else:
            cost_expr += -sum(y[i] * sp.log(a[i]) for i in range(2))

    symbols = [s for M in W + B for s in M]
    derivatives = sp.lambdify(symbols, [sp.diff(cost_expr, s) for s in symbols], "math")
    values = [M[idx] for M in net.W_n + net.B_n for idx in np.ndindex(M.shape)]
    symbolic = derivatives(*values)

    _, weight_grads, bias_grads = net.gradient(X, Y)
    computed = [g for M in weight_grads + bias_grads for g in M.ravel()]
    np.testing.assert_allclose(computed, symbolic, rtol=1e-10, atol=1e-13)


@st.composite
def networks_and_batches(draw):
    hidden, output, cost = draw(st.sampled_from(COMBINATIONS))
    structure = draw(st.lists(st.integers(1, 5), min_size=2, max_size=4))
    if output == "softmax" and structure[-1] == 1:
        structure[-1] = 2
    seed = draw(st.integers(0, 2**31 - 1))
    n = draw(st.integers(1, 6))
    rng = np.random.RandomState(seed)
    net = Network(
        structure, activation=hidden, output_activation=output, cost=cost, init="scaled", rng=seed
    )
    X = rng.randn(n, structure[0])
    Y = make_targets(rng, n, structure[-1], output, cost)
    return net, X, Y


def pre_activations(net, X):
    zs, a = [], X
    for l, (W, b) in enumerate(zip(net.W_n, net.B_n)):
        z = a @ W + b.T
        zs.append(z)
        f = net.output_activation if l == len(net.W_n) - 1 else net.activation
        a = f.forward(z.copy())
    return zs


# the same 150 examples on every run: a property test whose verdict changed from run to run
# (a rare network sits near the bound) would fail CI by chance
@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(networks_and_batches())
def test_backprop_matches_finite_differences_on_random_networks(case):
    net, X, Y = case
    # relu has a kink at 0 where no finite difference converges: keep away from it
    if net.activation.name == "relu" or net.output_activation.name == "relu":
        assume(all(np.abs(z).min() > 1e-3 for z in pre_activations(net, X)))
    assert gradient_check(net, X, Y) < 1e-5


def test_a_sampled_gradient_check_checks_that_many_parameters_and_is_repeatable():
    from core import Network, gradient_check

    rng = np.random.RandomState(0)
    net = Network([5, 7, 3], rng=rng)
    X, Y = rng.rand(6, 5), rng.rand(6, 3)
    full = gradient_check(net, X, Y)
    sampled = gradient_check(net, X, Y, parameters=10, rng=np.random.RandomState(1))
    again = gradient_check(net, X, Y, parameters=10, rng=np.random.RandomState(1))
    assert sampled == again and sampled <= full < 1e-6
    # asking for more parameters than there are checks them all
    assert gradient_check(net, X, Y, parameters=10_000) == full
