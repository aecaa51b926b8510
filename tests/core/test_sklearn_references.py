"""core's momentum, Adam and schedules against scikit-learn's MLPRegressor and MLPClassifier.

The same initial weights, the same mini-batches (``shuffle=False``), one ``partial_fit`` an
epoch, 100 steps in all. The mapping, which docs/core.md states too:

- MLPRegressor (identity output, squared error) is ``Network(output_activation="identity",
  cost="quadratic")``: its loss is half the squared error averaged over samples *and*
  outputs, but its gradient is averaged over samples only (the output delta is a - y), which
  is the gradient of core's mean quadratic cost. MLPClassifier with three classes or more
  (softmax, log loss) is ``output_activation="softmax", cost="cross_entropy"``.
- ``alpha`` adds alpha / (2m) * sum(W^2) to a mini-batch of m samples; core's l2 adds
  l2 / (2n) * sum(W^2), n the training samples: l2 = alpha * n / m.
- ``momentum``: v = momentum * v - rate * g, theta += v (Nesterov: theta += momentum * v -
  rate * g) is torch's buffer times -rate, so the same steps at a constant rate.
- ``adam``: scikit-learn adds epsilon to sqrt(v) before correcting v's bias, core (as
  torch) after; the two agree when epsilon is negligible next to sqrt(v), as here.
"""

import numpy as np
import pytest
from sklearn.neural_network import MLPClassifier, MLPRegressor

from core import Network, Plateau, Trainer, TrainingConfig

N, BATCH, EPOCHS, HIDDEN = 40, 10, 25, 9
ALPHA = 1e-3
RTOL = 1e-10


def regression():
    rng = np.random.RandomState(0)
    X = rng.randn(N, 6)
    return X, np.column_stack([np.sin(X[:, 0]), X[:, 1] * X[:, 2]])


def classification():
    rng = np.random.RandomState(1)
    labels = rng.randint(3, size=N)
    return rng.randn(N, 6) + labels[:, None], labels


def network(outputs, classifier):
    output, cost = ("softmax", "cross_entropy") if classifier else ("identity", "quadratic")
    return Network([6, HIDDEN, outputs], output_activation=output, cost=cost, init="scaled", rng=1)


def parameters(net):
    """In scikit-learn's order: coefs_ then intercepts_."""
    return [*net.W_n, *(b[:, 0] for b in net.B_n)]


def core_run(X, Y, rate, classifier=False, **options):
    net = network(Y.shape[1], classifier)
    config = TrainingConfig(epochs=EPOCHS, learning_rate=rate, l2=ALPHA * N / BATCH, **options)
    Trainer(net, X, Y, config, batch_sizes=[BATCH] * (N // BATCH)).run()
    return parameters(net)


def sklearn_run(model, X, y, outputs, classifier=False):
    """``model`` trained for EPOCHS partial_fit calls from core's initial weights."""
    extra = {"classes": np.unique(y)} if classifier else {}
    model.partial_fit(X, y, **extra)  # sizes the model; its weights and state are replaced
    start = network(outputs, classifier)
    for coef, intercept, W, b in zip(model.coefs_, model.intercepts_, start.W_n, start.B_n):
        coef[...], intercept[...] = W, b[:, 0]
    del model._optimizer  # the next call starts a fresh one, as the first step does
    model.t_ = 0  # samples seen, which invscaling counts
    for _ in range(EPOCHS):
        model.partial_fit(X, y)
    return [*model.coefs_, *model.intercepts_]


def assert_agree(ours, theirs, start):
    moved = max(float(np.abs(a - b).max()) for a, b in zip(theirs, start))
    assert moved > 1e-2  # it trained: an update left out would show
    error = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(ours, theirs))
    assert error < RTOL, f"relative error {error:.1e}"


def sgd_regressor(**params):
    return MLPRegressor(
        hidden_layer_sizes=(HIDDEN,),
        activation="logistic",
        solver="sgd",
        alpha=ALPHA,
        batch_size=BATCH,
        shuffle=False,
        **params,
    )


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_agrees_with_mlp_regressor(nesterov):
    X, Y = regression()
    model = sgd_regressor(learning_rate_init=0.1, momentum=0.9, nesterovs_momentum=nesterov)
    theirs = sklearn_run(model, X, Y, outputs=2)
    optimizer = {"name": "momentum", "momentum": 0.9, "nesterov": nesterov}
    assert_agree(core_run(X, Y, 0.1, optimizer=optimizer), theirs, parameters(network(2, False)))


def test_adam_agrees_with_mlp_classifier():
    X, labels = classification()
    model = MLPClassifier(
        hidden_layer_sizes=(HIDDEN,),
        activation="logistic",
        solver="adam",
        alpha=ALPHA,
        batch_size=BATCH,
        shuffle=False,
        learning_rate_init=0.01,
        beta_1=0.8,
        beta_2=0.99,
        epsilon=1e-16,
    )
    theirs = sklearn_run(model, X, labels, outputs=3, classifier=True)
    optimizer = {"name": "adam", "beta1": 0.8, "beta2": 0.99, "eps": 1e-16}
    ours = core_run(X, np.eye(3)[labels], 0.01, classifier=True, optimizer=optimizer)
    assert_agree(ours, theirs, parameters(network(3, True)))


def test_invscaling_is_scikit_learn_s_per_epoch():
    X, Y = regression()
    model = sgd_regressor(learning_rate_init=0.5, momentum=0.0, learning_rate="invscaling")
    theirs = sklearn_run(model, X, Y, outputs=2)
    schedule = {"name": "invscaling", "power_t": 0.5, "per": "epoch"}
    assert_agree(core_run(X, Y, 0.5, schedule=schedule), theirs, parameters(network(2, False)))


def test_adaptive_is_plateau_with_factor_one_fifth_on_the_lowest_cost():
    # scikit-learn's rate after each epoch against Plateau fed the same training costs
    X, Y = regression()
    model = sgd_regressor(
        learning_rate_init=0.5,
        momentum=0.0,
        learning_rate="adaptive",
        tol=0.01,
        n_iter_no_change=2,
    )
    model.partial_fit(X, Y)
    rates = [model._optimizer.learning_rate]
    for _ in range(29):
        model.partial_fit(X, Y)
        rates.append(model._optimizer.learning_rate)
    plateau = Plateau(
        factor=0.2, patience=2, threshold=0.01, threshold_mode="abs", eps=0.0, best="lowest"
    )
    plateau.start(0.5, N // BATCH, 30)
    ours = []
    for cost in model.loss_curve_:
        plateau.end_epoch(cost)
        ours.append(plateau.rate(0, 0, 0))
    assert len(set(rates)) >= 3  # it cut the rate, more than once
    np.testing.assert_allclose(ours, rates, rtol=1e-12)
