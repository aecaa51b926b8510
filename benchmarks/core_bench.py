"""Training throughput of core against the seed's per-sample loop and PyTorch CPU.

    python benchmarks/core_bench.py [--min-seconds 0.5] [--repeats 3]

Every implementation does the same math: sigmoid layers, quadratic cost, plain mini-batch
gradient descent with step rate / batch size. Figures are samples per second, the best of
``--repeats`` runs of at least ``--min-seconds`` each; compare them by the ratios printed,
which come from one run on one machine (absolute numbers drift between machines and runs).

"core" goes through the array API the worker uses (``Trainer.run``: shuffling, per-batch cost
and accuracy included). "seed loop" is the notebook's algorithm with its backprop fixed,
one sample at a time in Python, kept here as the baseline. "torch manual" is the same math on
PyTorch CPU tensors (no autograd), when PyTorch is installed.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from core import Network, Trainer, TrainingConfig

CASES = [  # (structure, batch size, samples in the data set)
    ([64, 30, 10], 10, 20_000),
    ([784, 30, 10], 10, 10_000),
    ([784, 100, 10], 100, 10_000),
    ([784, 512, 512, 10], 256, 5_120),
]
LOOP_TOO_SLOW = {(784, 512, 512, 10)}


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def sigmoid_derivative(z):
    return sigmoid(z) * (1 - sigmoid(z))


class SeedLoop:
    """The notebook's Network.backprop and gradient_descent with its one bug fixed (the forward
    pass no longer rebinds x, so layer 0's gradient uses the input) and nothing else changed:
    column vectors, one sample at a time, sigmoid_derivative recomputed from z."""

    def __init__(self, structure, rng):
        self.num_layers = len(structure)
        self.B_n = [rng.randn(l, 1) for l in structure[1:]]
        self.W_n = [rng.randn(l, next_l) for l, next_l in zip(structure[:-1], structure[1:])]

    def backprop(self, x, y):
        e_Je_B_ns = [np.zeros(b.shape) for b in self.B_n]
        e_Je_W_ns = [np.zeros(W.shape) for W in self.W_n]
        Z_n, A_n = [], []
        a = x  # the fix: start from x and leave x alone
        for b, W in zip(self.B_n, self.W_n):
            z = np.dot(W.T, a) + b
            a = sigmoid(z)
            Z_n.append(z)
            A_n.append(a)
        H = self.num_layers - 2
        delta = None  # the output layer (L == H) sets it first
        for L in range(H, -1, -1):
            if L != H:
                delta = sigmoid_derivative(Z_n[L]) * np.dot(self.W_n[L + 1], delta)
            else:
                delta = sigmoid_derivative(Z_n[L]) * (A_n[L] - y)
            e_Je_B_ns[L] = delta
            if L != 0:
                e_Je_W_ns[L] = np.dot(A_n[L - 1], delta.T)
            else:
                e_Je_W_ns[L] = np.dot(x, delta.T)
        return e_Je_B_ns, e_Je_W_ns

    def gradient_descent(self, mini_batch, learning_rate):
        e_Je_B_n = [np.zeros(b.shape) for b in self.B_n]
        e_Je_W_n = [np.zeros(W.shape) for W in self.W_n]
        for x, y in mini_batch:
            e_Je_B_ns, e_Je_W_ns = self.backprop(x, y)
            e_Je_B_n = [e_Je_b + e_Je_b_s for e_Je_b, e_Je_b_s in zip(e_Je_B_n, e_Je_B_ns)]
            e_Je_W_n = [e_Je_W + e_Je_W_s for e_Je_W, e_Je_W_s in zip(e_Je_W_n, e_Je_W_ns)]
        d = len(mini_batch)
        self.W_n = [W - learning_rate / d * e_Je_W for W, e_Je_W in zip(self.W_n, e_Je_W_n)]
        self.B_n = [b - learning_rate / d * e_Je_b for b, e_Je_b in zip(self.B_n, e_Je_B_n)]


def dataset(structure, n, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.rand(n, structure[0])
    Y = np.eye(structure[-1])[rng.randint(structure[-1], size=n)]
    return X, Y


def rate(run_once, samples_per_run, min_seconds, repeats):
    """Best samples/s over ``repeats`` timings, each repeating run_once for min_seconds."""
    run_once()  # warm up: allocator, BLAS threads, caches
    best = 0.0
    for _ in range(repeats):
        done, started = 0, time.perf_counter()
        while True:
            run_once()
            done += samples_per_run
            elapsed = time.perf_counter() - started
            if elapsed >= min_seconds:
                break
        best = max(best, done / elapsed)
    return best


def bench_seed_loop(structure, batch, X, Y, args):
    net = SeedLoop(structure, np.random.RandomState(0))
    n = min(len(X), 2_000)
    pairs = [(X[i].reshape(-1, 1), Y[i].reshape(-1, 1)) for i in range(n)]
    batches = [pairs[i : i + batch] for i in range(0, n, batch)]

    def epoch():
        for mini_batch in batches:
            net.gradient_descent(mini_batch, 3.0)

    return rate(epoch, n, args.min_seconds, args.repeats)


def bench_core(structure, batch, X, Y, dtype, args):
    rng = np.random.RandomState(0)
    net = Network(structure, dtype=dtype, rng=rng)
    X, Y = X.astype(dtype), Y.astype(dtype)
    # one trainer for the whole measurement, as a job has (checks and setup happen once);
    # each call trains one more epoch and stops
    config = TrainingConfig(epochs=10**9, learning_rate=3.0, batch_size=batch)
    trainer = Trainer(net, X, Y, config, rng=rng)

    def epoch():
        trainer.run(on_epoch=lambda t, m: True)

    return rate(epoch, len(X), args.min_seconds, args.repeats)


def bench_torch(structure, batch, X, Y, dtype, args):
    import torch

    torch.manual_seed(0)
    tdtype = {"float64": torch.float64, "float32": torch.float32}[dtype]
    W = [torch.randn(n, m, dtype=tdtype) for n, m in zip(structure[:-1], structure[1:])]
    B = [torch.randn(m, dtype=tdtype) for m in structure[1:]]
    Xt, Yt = torch.from_numpy(X).to(tdtype), torch.from_numpy(Y).to(tdtype)
    n = len(Xt)

    @torch.no_grad()
    def epoch():
        order = torch.randperm(n)
        for start in range(0, n, batch):
            rows = order[start : start + batch]
            xb, yb = Xt[rows], Yt[rows]
            activations = [xb]
            for w, b in zip(W, B):
                activations.append(torch.sigmoid(activations[-1] @ w + b))
            a = activations[-1]
            delta = (a - yb) * a * (1 - a)
            step = 3.0 / len(xb)
            for l in range(len(W) - 1, -1, -1):
                grad_w = activations[l].T @ delta
                grad_b = delta.sum(0)
                if l:
                    h = activations[l]
                    delta = (delta @ W[l].T) * h * (1 - h)
                W[l] -= step * grad_w
                B[l] -= step * grad_b

    return rate(epoch, n, args.min_seconds, args.repeats)


def blas_description() -> str:
    try:
        from threadpoolctl import threadpool_info

        info = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        return ", ".join(
            f"{i['internal_api']} {i.get('version')} {i.get('architecture')} "
            f"{i['num_threads']} threads"
            for i in info
        )
    except ImportError:
        return "unknown (threadpoolctl not installed)"


def main() -> None:
    parser = argparse.ArgumentParser(description="core training throughput")
    parser.add_argument("--min-seconds", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    try:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        torch_version = torch.__version__
    except ImportError:
        torch = None
        torch_version = "not installed (pip install torch==2.13.0 adds it as a baseline)"

    print(f"python {platform.python_version()}, numpy {np.__version__}, torch {torch_version}")
    print(f"BLAS: {blas_description()}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}")
    print("samples per second (best of repeats); ratios from this run\n")
    header = (
        "| case | seed loop f64 | core f64 | core f32 | torch f64 | torch f32 "
        "| core/loop | f32/f64 | core/torch f64 | core/torch f32 |"
    )
    print(header)
    print("|---" * 10 + "|")
    for structure, batch, n in CASES:
        X, Y = dataset(structure, n)
        loop = None
        if tuple(structure) not in LOOP_TOO_SLOW:
            loop = bench_seed_loop(structure, batch, X, Y, args)
        core64 = bench_core(structure, batch, X, Y, "float64", args)
        core32 = bench_core(structure, batch, X, Y, "float32", args)
        t64 = t32 = None
        if torch is not None:
            t64 = bench_torch(structure, batch, X, Y, "float64", args)
            t32 = bench_torch(structure, batch, X, Y, "float32", args)

        def fmt(v):
            return "-" if v is None else f"{v:,.0f}"

        def ratio(a, b):
            return "-" if a is None or b is None else f"{a / b:.2f}x"

        name = "-".join(map(str, structure)) + f", batch {batch}"
        print(
            f"| {name} | {fmt(loop) if loop else '(too slow)'} | {fmt(core64)} | {fmt(core32)} "
            f"| {fmt(t64)} | {fmt(t32)} | {ratio(core64, loop)} | {ratio(core32, core64)} "
            f"| {ratio(core64, t64)} | {ratio(core32, t32)} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
