"""What the optimizers buy on real data: scikit-learn's 8x8 digits, 64-30-10.

    python benchmarks/optimizers_digits.py [--seeds 5] [--epochs 30]

The seed's network (sigmoid, quadratic cost, N(0, 1) weights, mini-batches of 10) trained as
a job with ``validation_split`` 0.2 trains: the held-out rows are ``core.validation_rows``
of the job's seed (stratified), and the seed also draws the weights and the shuffling. Each
optimizer runs at its usual defaults: sgd at the seed's rate 3.0, momentum 0.9 at rate 0.3
(the same step once the velocity settles: 0.3 / (1 - 0.9) = 3.0), and Adam at torch's and
scikit-learn's default rate 1e-3 (beta1 0.9, beta2 0.999, eps 1e-8). Three more rows show
Nesterov's momentum, a lighter momentum and Adam at a larger rate. Prints a table of the
final validation accuracy (mean and sample standard deviation over the seeds) and of the
first epoch whose validation accuracy reached 95% (mean over the seeds that reached it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits  # a copy ships inside scikit-learn: no download

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

from core import Network, Trainer, TrainingConfig, validation_rows  # noqa: E402

#: label: (optimizer, learning rate)
RUNS = {
    "sgd, rate 3.0": ("sgd", 3.0),
    "momentum 0.9, rate 0.3": ({"name": "momentum", "momentum": 0.9}, 0.3),
    "momentum 0.9 (Nesterov), rate 0.3": (
        {"name": "momentum", "momentum": 0.9, "nesterov": True},
        0.3,
    ),
    "momentum 0.5, rate 1.5": ({"name": "momentum", "momentum": 0.5}, 1.5),
    "adam, rate 0.001": ("adam", 1e-3),
    "adam, rate 0.01": ("adam", 1e-2),
}
TARGET = 0.95


def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    return data.data / 16.0, np.eye(10)[data.target]


def train(optimizer, rate: float, seed: int, epochs: int) -> list[float]:
    """Validation accuracy after every epoch of one job."""
    X, Y = digits()
    held = validation_rows(Y, 0.2, seed)
    rng = np.random.RandomState(seed)
    net = Network([64, 30, 10], rng=rng)
    config = TrainingConfig(epochs=epochs, learning_rate=rate, batch_size=10, optimizer=optimizer)
    trainer = Trainer(net, X[~held], Y[~held], config, validation=(X[held], Y[held]), rng=rng)
    trainer.run()
    return [m.val_accuracy for m in trainer.history]


def summary(curves: list[list[float]]) -> tuple[str, str]:
    """(final accuracy mean ± sd, epochs to the target mean ± sd and how many seeds got there)."""
    final = np.array([curve[-1] for curve in curves]) * 100
    reached = [
        next(epoch for epoch, acc in enumerate(curve, 1) if acc >= TARGET)
        for curve in curves
        if max(curve) >= TARGET
    ]
    accuracy = f"{final.mean():.1f}% ± {final.std(ddof=1):.1f}"
    if not reached:
        return accuracy, f"not reached (0/{len(curves)})"
    spread = f" ± {np.std(reached, ddof=1):.1f}" if len(reached) > 1 else ""
    return accuracy, f"{np.mean(reached):.1f}{spread} ({len(reached)}/{len(curves)} seeds)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    print(
        f"digits, 64-30-10 sigmoid/quadratic, batch 10, validation split 0.2, {args.epochs} "
        f"epochs, seeds 0-{args.seeds - 1}"
    )
    print(f"| optimizer | validation accuracy after {args.epochs} epochs | epochs to 95% |")
    print("|---|---|---|")
    for label, (optimizer, rate) in RUNS.items():
        curves = [train(optimizer, rate, seed, args.epochs) for seed in range(args.seeds)]
        accuracy, epochs = summary(curves)
        print(f"| {label} | {accuracy} | {epochs} |", flush=True)


if __name__ == "__main__":
    main()
