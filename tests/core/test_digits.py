"""Real data: the seed's algorithm on scikit-learn's digits reaches Nielsen-like accuracy."""

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from core import Network, Trainer, TrainingConfig


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_seed_defaults_reach_95_percent_on_digits(seed):
    digits = load_digits()
    X, Y = digits.data / 16.0, np.eye(10)[digits.target]
    X_train, X_test, Y_train, Y_test = train_test_split(
        X, Y, test_size=0.25, stratify=digits.target, random_state=0
    )
    rng = np.random.RandomState(seed)
    net = Network([64, 30, 10], rng=rng)  # sigmoid, quadratic cost, N(0, 1) init
    config = TrainingConfig(epochs=30, learning_rate=3.0, batch_size=10)
    Trainer(net, X_train, Y_train, config, rng=rng).run()

    accuracy = net.evaluate(X_test, Y_test).accuracy
    assert accuracy >= 0.95, f"hold-out accuracy {accuracy:.3f}"
    # the same figure from predict, computed here without core's evaluate
    assert accuracy == np.mean(net.predict(X_test).argmax(1) == Y_test.argmax(1))
