"""The benchmark compares like with like, runs, and core's step allocates nothing large."""

import importlib.util
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from core import Network, Trainer, TrainingConfig

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "core_bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("core_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("structure", [[20, 7, 5], [6, 9, 8, 4]])
def test_the_seed_loop_baseline_does_core_s_math(bench, structure):
    X, Y = bench.dataset(structure, 8)
    loop = bench.SeedLoop(structure, np.random.RandomState(0))
    net = Network(structure, rng=0)  # the same draws: biases, then weights
    for W, W_loop in zip(net.W_n, loop.W_n):
        np.testing.assert_array_equal(W, W_loop)
    for _ in range(3):
        loop.gradient_descent([(x.reshape(-1, 1), y.reshape(-1, 1)) for x, y in zip(X, Y)], 3.0)
        net.sgd_step(X, Y, 3.0)
    for W, W_loop in zip(net.W_n + net.B_n, loop.W_n + loop.B_n):
        np.testing.assert_allclose(W, W_loop, rtol=0, atol=1e-13)
    assert not np.allclose(net.W_n[0], Network(structure, rng=0).W_n[0])  # it did train


def test_the_benchmark_prints_its_table_with_both_loop_figures():
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--cases",
            "64-30-10",
            "--repeats",
            "1",
            "--min-seconds",
            "0.01",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    row = next(line for line in out.splitlines() if line.startswith("| 64-30-10, batch 10 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    rates = [float(c.replace(",", "")) for c in cells[1:5]]  # loops fresh and here, core f64, f32
    assert all(r > 0 for r in rates)
    assert cells[7].endswith("x") and cells[8].endswith("x")  # core/loop, fresh and here
    assert "minor page faults per sample" in out
    title = out.index("seed API vs array API: steps per second at 64-30-10, batch 10, float64")
    row = next(line for line in out[title:].splitlines() if line.startswith("| 64-30-10, batch"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "64-30-10, batch 10, float64"
    assert all(float(c.replace(",", "")) > 0 for c in cells[1:3])  # seed API, array API
    assert cells[3].endswith("x") and float(cells[3][:-1]) > 0  # seed/array


def test_the_seed_api_and_the_array_api_timings_train_the_same_weights(bench):
    timed, nets = bench.seed_api_pair([6, 5, 3], 4, 20)  # the warm-up ran one pass of each
    assert timed["seed API"].samples == timed["array API"].samples == 5  # steps per pass
    timed["seed API"].run_once()
    timed["array API"].run_once()
    seed_net, array_net = nets["seed API"], nets["array API"]
    assert not np.array_equal(seed_net.W_n[0], Network([6, 5, 3], rng=0).W_n[0])  # it trained
    for got, want in zip(seed_net.W_n + seed_net.B_n, array_net.W_n + array_net.B_n):
        np.testing.assert_array_equal(got, want)


def test_a_training_step_allocates_no_weight_sized_temporaries():
    # 784-100-10 batch 100: one weight-sized temporary is 627 KiB, a batch of inputs as much
    rng = np.random.RandomState(0)
    X, Y = rng.rand(1_000, 784), np.eye(10)[rng.randint(10, size=1_000)]
    net = Network([784, 100, 10], rng=0)
    config = TrainingConfig(epochs=10, learning_rate=3.0, batch_size=100)
    trainer = Trainer(net, X, Y, config, rng=0)
    trainer.run(on_epoch=lambda t, m: True)  # first epoch: workspaces and buffers are made
    tracemalloc.start()
    try:
        trainer.run(on_epoch=lambda t, m: True)  # ten steps
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert trainer.epoch == 2
    # one weight-sized temporary would be 627 kB; bookkeeping (the permutation, predictions)
    # is about 90 kB
    assert peak < 200_000, f"{peak:,} bytes allocated at the peak of an epoch"


def test_workspaces_give_the_same_step_as_fresh_arrays():
    rng = np.random.RandomState(3)
    X, Y = rng.rand(40, 6), rng.rand(40, 4)
    net = Network([6, 9, 5, 4], activation="tanh", rng=3)
    for rows in (7, 13, 7, 1, 40, 2, 3, 7):  # more sizes than the cache keeps
        xb, yb = X[:rows], Y[:rows]
        # the allocating path: new arrays for activations and gradients
        _, weight_grads, bias_grads = net.backward(net.feedforward(xb), yb, 0.5 / rows)
        expected = [W - g for W, g in zip(net.W_n, weight_grads)]
        expected_b = [b[:, 0] - g for b, g in zip(net.B_n, bias_grads)]
        net.sgd_step(xb, yb, 0.5)
        for W, e in zip(net.W_n, expected):
            np.testing.assert_array_equal(W, e)
        for b, e in zip(net.B_n, expected_b):
            np.testing.assert_array_equal(b[:, 0], e)
    assert len(net._workspaces) <= 4


def reference_step(W_n, B_n, X, Y, rate, hidden, output, cost, decay=1.0):
    """The step as the seed-era code wrote it, every value a new array: core's reused
    buffers, scratch arrays and 0-d constants must give exactly these bits."""
    forward = {
        "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
        "tanh": np.tanh,
        "relu": lambda z: np.maximum(z, 0.0),
        "identity": lambda z: z,
        "softmax": lambda z: (lambda e: e / e.sum(axis=1, keepdims=True))(
            np.exp(z - z.max(axis=1, keepdims=True))
        ),
    }
    derivative = {  # dC/dz from a = f(z) and g = dC/da
        "sigmoid": lambda a, g: g * (a * (1.0 - a)),
        "tanh": lambda a, g: g * (1.0 - a * a),
        "relu": lambda a, g: g * (a > 0),
        "identity": lambda a, g: g,
        "softmax": lambda a, g: (g - (g * a).sum(axis=1, keepdims=True)) * a,
    }
    activations = [X]
    for l, (W, b) in enumerate(zip(W_n, B_n)):
        f = forward[output if l == len(W_n) - 1 else hidden]
        activations.append(f(activations[-1] @ W + b.T))
    delta = activations[-1] - Y
    if cost == "quadratic":
        delta = derivative[output](activations[-1], delta)
    delta = delta * (rate / len(X))
    new_W, new_B = [None] * len(W_n), [None] * len(W_n)
    for l in range(len(W_n) - 1, -1, -1):
        grad_W, grad_b = activations[l].T @ delta, delta.sum(axis=0)
        if l:
            delta = derivative[hidden](activations[l], delta @ W_n[l].T)
        new_W[l] = W_n[l] * decay - grad_W if decay != 1.0 else W_n[l] - grad_W
        new_B[l] = B_n[l] - grad_b.reshape(-1, 1)
    return new_W, new_B


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(
    "hidden,output,cost",
    [
        ("sigmoid", "sigmoid", "quadratic"),
        ("tanh", "identity", "quadratic"),
        ("relu", "relu", "quadratic"),
        ("relu", "sigmoid", "cross_entropy"),
        ("sigmoid", "softmax", "cross_entropy"),
        ("tanh", "softmax", "quadratic"),
        ("tanh", "tanh", "quadratic"),
    ],
)
def test_the_fast_step_gives_the_plain_step_s_exact_bits(hidden, output, cost, dtype):
    rng = np.random.RandomState(5)
    net = Network(
        [7, 9, 9, 4], activation=hidden, output_activation=output, cost=cost, dtype=dtype, rng=5
    )
    X = rng.randn(33, 7).astype(dtype)
    Y = np.eye(4, dtype=dtype)[rng.randint(4, size=33)]
    with np.errstate(over="ignore", under="ignore"):
        for rows, decay in ((10, 1.0), (10, 0.99), (3, 1.0), (10, 1.0), (33, 0.5)):
            expected_W, expected_B = reference_step(
                net.W_n, net.B_n, X[:rows], Y[:rows], 0.7, hidden, output, cost, decay
            )
            net.sgd_step(X[:rows], Y[:rows], 0.7, decay)
            for got, want in zip(net.W_n + net.B_n, expected_W + expected_B):
                assert got.dtype == want.dtype == np.dtype(dtype)
                np.testing.assert_array_equal(got, want)


def test_the_torch_optimizer_baseline_steps_on_core_s_mean_gradient(bench):
    import torch

    structure = [6, 5, 3]
    X, Y = bench.dataset(structure, 8)
    net = Network(structure, rng=0)
    W = [torch.tensor(w) for w in net.W_n]
    B = [torch.tensor(b[:, 0]) for b in net.B_n]
    bench.torch_gradient(W, B, torch.from_numpy(X), torch.from_numpy(Y))
    _, weight_grads, bias_grads = net.gradient(X, Y)  # summed over the 8 samples
    for tensor, summed in zip(W + B, weight_grads + bias_grads):
        np.testing.assert_allclose(tensor.grad.numpy(), summed / 8, rtol=1e-12, atol=1e-15)


def test_the_optimizer_table_has_a_row_per_optimizer_and_dtype(bench, capsys, monkeypatch):
    import argparse

    import torch

    monkeypatch.setattr(bench, "OPTIMIZER_CASES", [([6, 5, 3], 4, 40)])  # a small case: fast
    bench.bench_optimizers(argparse.Namespace(repeats=1, min_seconds=0.0), torch, {"6-5-3"})
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 6-5-3")]
    assert len(rows) == 2 * len(bench.OPTIMIZERS)
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] in ("float64", "float32") and cells[2] in bench.OPTIMIZERS
        assert float(cells[3].replace(",", "")) > 0 and float(cells[5].replace(",", "")) > 0
        assert all(c.endswith("x") for c in (cells[4], cells[6], cells[7]))
