"""Training throughput of core against the seed's per-sample loop and PyTorch CPU.

    python benchmarks/core_bench.py [--min-seconds 0.5] [--repeats 5] [--cases 64-30-10,...]

Every implementation does the same math: sigmoid layers, quadratic cost, plain mini-batch
gradient descent with step rate / batch size (``tests/core/test_bench.py`` checks that the
seed loop's steps give core's weights; the PyTorch step, which the suite cannot import, agreed
with core to 4e-16 when checked by hand). Figures are samples per second, the best of
``--repeats`` timings of at least ``--min-seconds`` each. The repeats go round robin over the
implementations, so a slow spell of the machine (a busy neighbour on a shared host) lands on
one round of every implementation rather than on every round of one. Compare the figures by
the ratios printed, which come from one run on one machine.

"core" goes through the array API the worker uses (``Trainer.run``: shuffling, per-batch cost
and accuracy included). "seed loop" is the notebook's algorithm with its backprop fixed, one
sample at a time in Python, kept here as the baseline. "torch manual" is the same math on
PyTorch CPU tensors (no autograd), when PyTorch is installed.

The seed loop is timed twice, because its speed depends on the state of glibc's allocator.
Each sample allocates several weight-sized temporaries (627 KiB at 784-100-10). In a fresh
interpreter glibc hands those out from a heap it keeps trimming back to the kernel, so the
kernel faults their pages in again on every sample; once an earlier large free has raised
glibc's thresholds, the same loop reuses warm memory and runs up to twice as fast. "fresh"
runs the loop alone in a new interpreter, as the notebook runs it; "here" runs it in this
process after the other measurements, which is its best case. Both are printed, with both
ratios, and so are the minor page faults per sample that explain the difference. Core keeps
its buffers from one step to the next, so its speed does not depend on that state.

A table of optimizers follows, in steps per second at 64-30-10 batch 10 and 784-100-10
batch 100, float64 and float32: core's ``Trainer.run`` with each optimizer against core's
plain SGD, and against PyTorch's same optimizer from ``torch.optim`` applied to the same
manual gradients as "torch manual" computes ("fused=True", the fastest of torch's CPU
implementations for these sizes). Both libraries keep their default threads, as in the
first table: NumPy's BLAS and torch each use every core.

A last table, with the 64-30-10 case, compares core's two entry points on the same batches:
the seed API ``Network.gradient_descent(list of (x, y) column pairs, rate)``, which converts
and checks the pairs on every call, against the array API ``Network.sgd_step(inputs, targets,
rate)`` on ready arrays. The figures are steps per second; the ratio is what the conversion
leaves of the array API's rate.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

from core import Network, Trainer, TrainingConfig  # noqa: E402

CASES = [  # (structure, batch size, samples in the data set)
    ([64, 30, 10], 10, 20_000),
    ([784, 30, 10], 10, 10_000),
    ([784, 100, 10], 100, 10_000),
    ([784, 512, 512, 10], 256, 5_120),
]
LOOP_TOO_SLOW = {(784, 512, 512, 10)}
LOOP_SAMPLES = 2_000  # the loop trains on the first 2,000 samples: an epoch of it is long


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


def torch_step(W, B, xb, yb, learning_rate):
    """One step of the same math on PyTorch tensors, in place on the lists W and B."""
    activations = [xb]
    for w, b in zip(W, B):
        activations.append(activations[-1].matmul(w).add_(b).sigmoid_())
    a = activations[-1]
    delta = (a - yb) * a * (1 - a)
    step = learning_rate / len(xb)
    for l in range(len(W) - 1, -1, -1):
        grad_w = activations[l].T @ delta
        grad_b = delta.sum(0)
        if l:
            h = activations[l]
            delta = (delta @ W[l].T) * h * (1 - h)
        W[l] -= step * grad_w
        B[l] -= step * grad_b


def dataset(structure, n, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.rand(n, structure[0])
    Y = np.eye(structure[-1])[rng.randint(structure[-1], size=n)]
    return X, Y


class Timed:
    """One implementation of one case: run_once trains samples_per_run samples."""

    def __init__(self, run_once, samples_per_run):
        self.run_once, self.samples = run_once, samples_per_run
        self.best = 0.0
        self.faults_per_sample = None
        run_once()  # warm up: allocator, BLAS threads, caches

    def measure(self, min_seconds: float) -> None:
        done, faults, started = 0, _minor_faults(), time.perf_counter()
        while True:
            self.run_once()
            done += self.samples
            elapsed = time.perf_counter() - started
            if elapsed >= min_seconds:
                break
        if done / elapsed > self.best:
            self.best = done / elapsed
            self.faults_per_sample = (_minor_faults() - faults) / done


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def seed_loop(structure, batch, X, Y) -> Timed:
    net = SeedLoop(structure, np.random.RandomState(0))
    n = min(len(X), LOOP_SAMPLES)
    pairs = [(X[i].reshape(-1, 1), Y[i].reshape(-1, 1)) for i in range(n)]
    batches = [pairs[i : i + batch] for i in range(0, n, batch)]

    def epoch():
        for mini_batch in batches:
            net.gradient_descent(mini_batch, 3.0)

    return Timed(epoch, n)


def core_trainer(structure, batch, X, Y, dtype, optimizer="sgd", rate=3.0, steps=False) -> Timed:
    """Epochs of Trainer.run; counted in samples, or in steps when ``steps``."""
    rng = np.random.RandomState(0)
    net = Network(structure, dtype=dtype, rng=rng)
    X, Y = X.astype(dtype), Y.astype(dtype)
    # one trainer for the whole measurement, as a job has (checks and setup happen once);
    # each call trains one more epoch and stops
    config = TrainingConfig(epochs=10**9, learning_rate=rate, batch_size=batch, optimizer=optimizer)
    trainer = Trainer(net, X, Y, config, rng=rng)
    return Timed(
        lambda: trainer.run(on_epoch=lambda t, m: True), trainer.n_batches if steps else len(X)
    )


def torch_manual(structure, batch, X, Y, dtype) -> Timed:
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
            torch_step(W, B, Xt[rows], Yt[rows], 3.0)

    return Timed(epoch, n)


OPTIMIZER_CASES = [([64, 30, 10], 10, 2_000), ([784, 100, 10], 100, 5_000)]
SETTLE_SECONDS = 0.2  # idle threads of the other library stop spinning (bench_optimizers)
#: name: (core's optimizer, rate, PyTorch's optimizer on a list of tensors); the rates are
#: each optimizer's usual ones, and the same on both sides
OPTIMIZERS = {
    "sgd": ("sgd", 3.0, lambda torch, p: torch.optim.SGD(p, lr=3.0, fused=True)),
    "momentum": (
        "momentum",
        0.3,
        lambda torch, p: torch.optim.SGD(p, lr=0.3, momentum=0.9, fused=True),
    ),
    "nesterov": (
        {"name": "momentum", "nesterov": True},
        0.3,
        lambda torch, p: torch.optim.SGD(p, lr=0.3, momentum=0.9, nesterov=True, fused=True),
    ),
    "adam": ("adam", 1e-3, lambda torch, p: torch.optim.Adam(p, lr=1e-3, fused=True)),
    "adamw": ("adamw", 1e-3, lambda torch, p: torch.optim.AdamW(p, lr=1e-3, fused=True)),
}


def torch_gradient(W, B, xb, yb) -> None:
    """torch_step's math, leaving the gradient of the batch's mean cost in each .grad."""
    activations = [xb]
    for w, b in zip(W, B):
        activations.append(activations[-1].matmul(w).add_(b).sigmoid_())
    a = activations[-1]
    delta = (a - yb) * a * (1 - a) / len(xb)
    for l in range(len(W) - 1, -1, -1):
        W[l].grad = activations[l].T @ delta
        B[l].grad = delta.sum(0)
        if l:
            h = activations[l]
            delta = (delta @ W[l].T) * h * (1 - h)


def torch_optimizer(structure, batch, X, Y, dtype, make_optimizer) -> Timed:
    """Epochs of manual gradients and ``torch.optim`` steps, counted in steps."""
    import torch

    torch.manual_seed(0)
    tdtype = {"float64": torch.float64, "float32": torch.float32}[dtype]
    W = [torch.randn(n, m, dtype=tdtype) for n, m in zip(structure[:-1], structure[1:])]
    B = [torch.randn(m, dtype=tdtype) for m in structure[1:]]
    optimizer = make_optimizer(torch, [p for pair in zip(W, B) for p in pair])
    Xt, Yt = torch.from_numpy(X).to(tdtype), torch.from_numpy(Y).to(tdtype)
    n = len(Xt)

    @torch.no_grad()
    def epoch():
        order = torch.randperm(n)
        for start in range(0, n, batch):
            rows = order[start : start + batch]
            torch_gradient(W, B, Xt[rows], Yt[rows])
            optimizer.step()

    return Timed(epoch, -(-n // batch))


def bench_optimizers(args, torch, wanted) -> None:
    """Steps per second of each optimizer, core and PyTorch: the best of many short timings.

    A timing is one epoch (200 steps at 64-30-10, 50 at 784-100-10), and the timings go
    round robin over every optimizer and dtype of a case, core's then PyTorch's, for as
    long as the first table gives each timing (``--repeats`` x ``--min-seconds``), at least
    3 rounds: a shared machine has quiet spells that short, and every implementation gets
    them. Before each library's turn the benchmark sleeps SETTLE_SECONDS: OpenBLAS's worker
    thread keeps spinning about 0.1 s after NumPy's last matrix product, and would take a
    core from PyTorch's first timings otherwise.
    """
    print(
        "\noptimizers: steps per second, core's Trainer.run and PyTorch's torch.optim "
        "(fused) on manual gradients, best of round-robin timings of one epoch each"
    )
    print(
        "| case | dtype | optimizer | core | core step / core sgd step | torch "
        "| torch step / torch sgd step | core/torch |"
    )
    print("|---" * 8 + "|")
    for structure, batch, n in OPTIMIZER_CASES:
        name = "-".join(map(str, structure))
        if name not in wanted:
            continue
        X, Y = dataset(structure, n)
        timed = {}
        for dtype in ("float64", "float32"):
            for label, (optimizer, rate, make) in OPTIMIZERS.items():
                timed["core", dtype, label] = core_trainer(
                    structure, batch, X, Y, dtype, optimizer, rate, steps=True
                )
                if torch is not None:
                    timed["torch", dtype, label] = torch_optimizer(
                        structure, batch, X, Y, dtype, make
                    )
        budget, rounds = args.repeats * args.min_seconds * len(timed), 0
        settle = min(SETTLE_SECONDS, args.min_seconds)  # a quick run (the tests') hurries
        started = time.perf_counter()
        while rounds < 3 or time.perf_counter() - started < budget:
            for library in ("core", "torch"):
                time.sleep(settle)
                for key, t in timed.items():
                    if key[0] == library:
                        t.measure(0.0)  # one epoch
            rounds += 1
        rate = {key: t.best for key, t in timed.items()}
        for dtype in ("float64", "float32"):
            for label in OPTIMIZERS:
                core, torch_rate = rate["core", dtype, label], rate.get(("torch", dtype, label))
                torch_sgd = rate.get(("torch", dtype, "sgd"))
                cells = [
                    f"{name}, batch {batch}",
                    dtype,
                    label,
                    f"{core:,.0f}",
                    f"{rate['core', dtype, 'sgd'] / core:.2f}x",
                    "-" if torch_rate is None else f"{torch_rate:,.0f}",
                    "-" if torch_rate is None else f"{torch_sgd / torch_rate:.2f}x",
                    "-" if torch_rate is None else f"{core / torch_rate:.2f}x",
                ]
                print("| " + " | ".join(cells) + " |", flush=True)


SEED_API_CASE = ([64, 30, 10], 10, 2_000)  # structure, batch size, samples (200 batches)
SEED_API_CHUNK = 20  # batches a timing runs: a millisecond or two


def seed_api_pair(structure, batch, n) -> tuple[dict[str, Timed], dict[str, Network]]:
    """The seed API and the array API on the same batches, float64, one network each (the
    same draws, so equal steps give equal weights). Each run is the next SEED_API_CHUNK
    batches, round the data set, counted in steps. Returns the timings and the networks."""
    X, Y = dataset(structure, n)
    rows = [slice(i, i + batch) for i in range(0, n, batch)]
    chunk = min(SEED_API_CHUNK, len(rows))
    assert len(rows) % chunk == 0, "every run must be the same number of steps"
    array_batches = [(X[r], Y[r]) for r in rows]
    pair_batches = [
        [(x.reshape(-1, 1), y.reshape(-1, 1)) for x, y in zip(X[r], Y[r])] for r in rows
    ]
    array_chunks = itertools.cycle(array_batches[i : i + chunk] for i in range(0, len(rows), chunk))
    pair_chunks = itertools.cycle(pair_batches[i : i + chunk] for i in range(0, len(rows), chunk))
    seed_net = Network(structure, rng=0)
    array_net = Network(structure, rng=0)

    def seed_api():
        for mini_batch in next(pair_chunks):
            seed_net.gradient_descent(mini_batch, 3.0)

    def array_api():
        for inputs, targets in next(array_chunks):
            array_net.sgd_step(inputs, targets, 3.0)

    timed = {"seed API": Timed(seed_api, chunk), "array API": Timed(array_api, chunk)}
    return timed, {"seed API": seed_net, "array API": array_net}


def bench_seed_api(args) -> None:
    """The seed API against the array API: steps per second, the best of many short timings.

    Each timing is SEED_API_CHUNK steps, a millisecond or two, and the two APIs alternate
    timing by timing for ``--repeats`` x ``--min-seconds`` each (2.5 s by default), each
    keeping its best: a shared machine has quiet spells that short, and both APIs get them.
    """
    structure, batch, n = SEED_API_CASE
    timed, _ = seed_api_pair(structure, batch, n)
    budget, rounds, started = 2 * args.repeats * args.min_seconds, 0, time.perf_counter()
    while rounds < 3 or time.perf_counter() - started < budget:
        for t in timed.values():
            t.measure(0.0)  # one run: SEED_API_CHUNK steps
        rounds += 1
    seed, array = timed["seed API"].best, timed["array API"].best
    name = "-".join(map(str, structure))
    print(
        f"\nseed API vs array API: steps per second at {name}, batch {batch}, float64, "
        f"best of {rounds:,} alternating timings of {SEED_API_CHUNK} steps"
    )
    print("| case | seed API gradient_descent(pairs) | array API sgd_step(arrays) | seed/array |")
    print("|---" * 4 + "|")
    print(f"| {name}, batch {batch}, float64 | {seed:,.0f} | {array:,.0f} | {seed / array:.2f}x |")


def fresh_seed_loop(structure, batch, n, args) -> tuple[float, float]:
    """The seed loop alone in a new interpreter: (samples/s, minor page faults per sample)."""
    command = [
        sys.executable,
        __file__,
        "--fresh-loop",
        "-".join(map(str, structure)),
        str(batch),
        str(n),
        "--min-seconds",
        str(args.min_seconds),
    ]
    result = json.loads(
        subprocess.run(command, check=True, capture_output=True, timeout=600).stdout
    )
    return result["rate"], result["faults_per_sample"]


def run_fresh_loop(spec: str, batch: int, n: int, min_seconds: float) -> None:
    """Child side of fresh_seed_loop: one timing, printed as JSON."""
    structure = [int(s) for s in spec.split("-")]
    X, Y = dataset(structure, n)
    timed = seed_loop(structure, batch, X, Y)
    timed.measure(min_seconds)
    print(json.dumps({"rate": timed.best, "faults_per_sample": timed.faults_per_sample}))


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text}")
    return value


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


def bench_case(structure, batch, n, args, torch) -> dict:
    """Every implementation of one case, repeats round robin; best samples/s of each."""
    X, Y = dataset(structure, n)
    loop_runs = tuple(structure) not in LOOP_TOO_SLOW
    timed = {
        "core f64": core_trainer(structure, batch, X, Y, "float64"),
        "core f32": core_trainer(structure, batch, X, Y, "float32"),
    }
    if torch is not None:
        timed["torch f64"] = torch_manual(structure, batch, X, Y, "float64")
        timed["torch f32"] = torch_manual(structure, batch, X, Y, "float32")
    if loop_runs:
        timed["loop here"] = seed_loop(structure, batch, X, Y)
    fresh, fresh_faults = 0.0, None
    for _ in range(args.repeats):
        for t in timed.values():
            t.measure(args.min_seconds)
        if loop_runs:
            rate, faults = fresh_seed_loop(structure, batch, n, args)
            if rate > fresh:
                fresh, fresh_faults = rate, faults
    result = {name: t.best for name, t in timed.items()}
    faults = {name: t.faults_per_sample for name, t in timed.items()}
    if loop_runs:
        result["loop fresh"], faults["loop fresh"] = fresh, fresh_faults
    return {"rates": result, "faults": faults}


def main() -> None:
    parser = argparse.ArgumentParser(description="core training throughput")
    parser.add_argument("--min-seconds", type=float, default=0.5)
    parser.add_argument("--repeats", type=_positive_int, default=5)
    parser.add_argument(
        "--cases",
        default=",".join("-".join(map(str, s)) for s, _, _ in CASES),
        help="comma-separated structures to run (default: all four)",
    )
    parser.add_argument("--fresh-loop", nargs=3, metavar=("STRUCTURE", "BATCH", "N"))
    args = parser.parse_args()
    if args.fresh_loop:
        spec, batch, n = args.fresh_loop
        run_fresh_loop(spec, int(batch), int(n), args.min_seconds)
        return

    try:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        torch_version = torch.__version__
    except ImportError:
        torch = None
        torch_version = "not installed (pip install torch==2.13.0 adds it as a baseline)"

    known = {"-".join(map(str, s)) for s, _, _ in CASES}
    wanted = {c.strip() for c in args.cases.split(",")}
    if not wanted <= known:
        parser.error(f"unknown case(s) {sorted(wanted - known)}; known: {sorted(known)}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, torch {torch_version}")
    print(f"BLAS: {blas_description()}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}")
    print(f"samples per second, best of {args.repeats} round-robin repeats; ratios from this run\n")
    print(
        "| case | seed loop, fresh | seed loop, here | core f64 | core f32 | torch f64 | torch f32 "
        "| core/loop fresh | core/loop here | f32/f64 | core/torch f64 | core/torch f32 |"
    )
    print("|---" * 12 + "|")
    faults_rows = []
    for structure, batch, n in CASES:
        name = "-".join(map(str, structure))
        if name not in wanted:
            continue
        result = bench_case(structure, batch, n, args, torch)
        r = result["rates"].get

        def fmt(v):
            return "-" if v is None else f"{v:,.0f}"

        def ratio(a, b):
            return "-" if a is None or b is None else f"{a / b:.2f}x"

        too_slow = "(too slow)" if tuple(structure) in LOOP_TOO_SLOW else "-"
        print(
            f"| {name}, batch {batch} | {fmt(r('loop fresh')) if r('loop fresh') else too_slow} "
            f"| {fmt(r('loop here')) if r('loop here') else too_slow} "
            f"| {fmt(r('core f64'))} | {fmt(r('core f32'))} | {fmt(r('torch f64'))} "
            f"| {fmt(r('torch f32'))} | {ratio(r('core f64'), r('loop fresh'))} "
            f"| {ratio(r('core f64'), r('loop here'))} | {ratio(r('core f32'), r('core f64'))} "
            f"| {ratio(r('core f64'), r('torch f64'))} | {ratio(r('core f32'), r('torch f32'))} |",
            flush=True,
        )
        faults_rows.append((f"{name}, batch {batch}", result["faults"]))

    print("\nminor page faults per sample, in the best timing of each")
    names = ["loop fresh", "loop here", "core f64", "core f32", "torch f64", "torch f32"]
    print("| case | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for name, faults in faults_rows:
        cells = [
            "-" if faults.get(k) is None else f"{faults[k]:.2f}".rstrip("0").rstrip(".")
            for k in names
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")

    bench_optimizers(args, torch, wanted)
    if "-".join(map(str, SEED_API_CASE[0])) in wanted:
        bench_seed_api(args)


if __name__ == "__main__":
    main()
