"""Train the seed's network on scikit-learn's 8x8 digits, as Nielsen trains it on MNIST.

    python examples/digits.py [--seed 0]

64-30-10, sigmoid, quadratic cost, rate 3.0, mini-batches of 10, 30 epochs; a stratified 25%
hold-out with random_state=0. Needs scikit-learn (a dev dependency; core itself does not).
"""

import argparse

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from core import Network, Trainer, TrainingConfig


def digits_split():
    """Inputs scaled to [0, 1], one-hot targets, 75/25 stratified split."""
    digits = load_digits()
    X = digits.data / 16.0
    Y = np.eye(10)[digits.target]
    return train_test_split(X, Y, test_size=0.25, stratify=digits.target, random_state=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    X_train, X_test, Y_train, Y_test = digits_split()
    rng = np.random.RandomState(args.seed)
    net = Network([64, 30, 10], rng=rng)
    trainer = Trainer(
        net,
        X_train,
        Y_train,
        TrainingConfig(epochs=30, learning_rate=3.0, batch_size=10),
        validation=(X_test, Y_test),
        rng=rng,
    )
    trainer.run(
        on_epoch=lambda t, m: print(
            f"epoch {m.epoch:2d}  cost {m.cost:.4f}  train acc {m.accuracy:.3f}  "
            f"test acc {m.val_accuracy:.3f}  {m.seconds * 1000:.0f} ms"
        )
    )
    print(f"hold-out accuracy: {net.evaluate(X_test, Y_test).accuracy:.4f}")


if __name__ == "__main__":
    main()
