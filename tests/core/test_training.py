"""The array API's training loop: metrics, options, determinism and exact resume."""

import io

import numpy as np
import pytest

from core import (
    COMPLETED,
    EARLY_STOPPED,
    STOPPED,
    Diverged,
    Network,
    ShapeError,
    Trainer,
    TrainingConfig,
)


def blobs(n=120, seed=0):
    """Three separable clusters in 4-D with one-hot targets."""
    rng = np.random.RandomState(seed)
    labels = rng.randint(3, size=n)
    centres = np.array([[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0]], dtype=float)
    X = centres[labels] + 0.3 * rng.randn(n, 4)
    return X, np.eye(3)[labels]


def fresh_run(seed=11, epochs=6, **options):
    rng = np.random.RandomState(seed)
    net = Network([4, 6, 3], rng=rng, **options.pop("net", {}))
    X, Y = blobs()
    trainer = Trainer(
        net, X, Y, TrainingConfig(epochs=epochs, learning_rate=1.0, **options), rng=rng
    )
    return trainer


def weights_of(net):
    return [a.copy() for a in net.W_n + net.B_n]


def assert_bitwise_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and np.array_equal(x, y)


def test_metrics_per_epoch_with_accuracy_and_validation():
    rng = np.random.RandomState(0)
    X, Y = blobs(200)
    net = Network([4, 8, 3], rng=rng)
    trainer = Trainer(
        net,
        X[:150],
        Y[:150],
        TrainingConfig(epochs=8, learning_rate=2.0),
        validation=(X[150:], Y[150:]),
        rng=rng,
    )
    seen = []
    assert trainer.run(on_epoch=lambda t, m: seen.append(m)) == COMPLETED
    assert [m.epoch for m in seen] == list(range(1, 9)) and seen == trainer.history
    assert seen[-1].cost < seen[0].cost
    assert seen[-1].accuracy > 0.9 and seen[-1].val_accuracy > 0.9
    assert all(m.seconds > 0 and m.val_cost is not None for m in seen)
    # validation cost is the network's mean cost on the held-out rows after the epoch
    assert seen[-1].val_cost == pytest.approx(net.evaluate(X[150:], Y[150:]).cost, rel=1e-12)


def test_accuracy_is_none_for_targets_that_are_not_one_hot():
    rng = np.random.RandomState(1)
    X = rng.rand(30, 2)
    trainer = Trainer(
        Network([2, 3, 1], rng=1),
        X,
        X[:, :1] * X[:, 1:],
        TrainingConfig(epochs=2, learning_rate=0.5),
        rng=1,
    )
    trainer.run()
    assert trainer.history[0].accuracy is None and trainer.history[0].val_cost is None


def test_same_seed_same_data_gives_bitwise_identical_weights():
    runs = []
    for _ in range(2):
        trainer = fresh_run(l2=0.1, net={"activation": "tanh", "init": "scaled"})
        trainer.run()
        runs.append(weights_of(trainer.network))
    assert_bitwise_equal(*runs)
    other = fresh_run(seed=12, l2=0.1, net={"activation": "tanh", "init": "scaled"})
    other.run()
    assert not np.array_equal(runs[0][0], other.network.W_n[0])


@pytest.mark.parametrize("stop_at_batch", [None, 5])
def test_resume_from_exported_state_matches_an_uninterrupted_run(stop_at_batch):
    reference = fresh_run(epochs=7)
    reference.run()

    first = fresh_run(epochs=7)
    if stop_at_batch is None:  # stop at the end of epoch 3
        result = first.run(on_epoch=lambda t, m: m.epoch == 3)
    else:  # stop in the middle of epoch 3, after its 5th mini-batch
        result = first.run(on_batch=lambda t: t.epoch == 2 and t.progress.batch == stop_at_batch)
    assert result == STOPPED

    buffer = io.BytesIO()
    np.savez(buffer, **first.state_dict())  # the state survives a trip through plain arrays
    buffer.seek(0)
    state = dict(np.load(buffer, allow_pickle=False))

    # a new process: a different seed, since everything must come from the state
    resumed = fresh_run(seed=99, epochs=7)
    resumed.load_state_dict(state)
    assert resumed.run() == COMPLETED
    assert_bitwise_equal(weights_of(resumed.network), weights_of(reference.network))
    # the interrupted epoch's metrics come out as if it had never been interrupted
    first_resumed = 4 if stop_at_batch is None else 3
    final_epochs = [m for m in reference.history if m.epoch >= first_resumed]
    assert [(m.epoch, m.cost, m.accuracy) for m in resumed.history] == [
        (m.epoch, m.cost, m.accuracy) for m in final_epochs
    ]


def test_early_stopping_with_patience_and_resume_keeps_it():
    X, Y = blobs()
    rng = np.random.RandomState(3)
    net = Network([4, 6, 3], rng=rng)
    # a validation set the network cannot improve on: random labels
    val_Y = np.eye(3)[np.random.RandomState(5).randint(3, size=len(X))]
    trainer = Trainer(
        net,
        X,
        Y,
        TrainingConfig(epochs=50, learning_rate=3.0, patience=2),
        validation=(X, val_Y),
        rng=rng,
    )
    assert trainer.run() == EARLY_STOPPED
    epochs_run = len(trainer.history)
    assert epochs_run < 50
    best = min(m.val_cost for m in trainer.history)
    assert all(m.val_cost >= best for m in trainer.history[-2:])

    again = Trainer(Network([4, 6, 3], rng=0), X, Y, trainer.config, validation=(X, val_Y))
    again.load_state_dict(trainer.state_dict())
    assert again.run() == EARLY_STOPPED and again.history == []


def test_divergence_raises_naming_the_epoch():
    rng = np.random.RandomState(0)
    X = rng.randn(50, 3) * 10
    Y = rng.randn(50, 1) * 1e3
    net = Network([3, 16, 1], activation="relu", output_activation="identity", rng=0)
    trainer = Trainer(net, X, Y, TrainingConfig(epochs=30, learning_rate=5.0), rng=0)
    with pytest.raises(Diverged) as info:
        trainer.run()
    assert info.value.epoch >= 1 and f"epoch {info.value.epoch}" in str(info.value)
    assert len(trainer.history) == info.value.epoch - 1


def test_explicit_batches_run_in_order_without_shuffling():
    X, Y = blobs(30)
    a = Trainer(
        Network([4, 5, 3], rng=2),
        X,
        Y,
        TrainingConfig(epochs=3, learning_rate=1.0),
        batch_sizes=[10, 15, 5],
    )
    a.run()
    b = Network([4, 5, 3], rng=2)
    for _ in range(3):
        for lo, hi in [(0, 10), (10, 25), (25, 30)]:
            b.sgd_step(X[lo:hi], Y[lo:hi], 1.0)
    assert_bitwise_equal(weights_of(a.network), weights_of(b))
    with pytest.raises(ValueError, match="add up to the 30 samples"):
        Trainer(Network([4, 5, 3]), X, Y, a.config, batch_sizes=[10, 10])


def test_shuffling_draws_from_the_generator_and_no_shuffle_does_not():
    def final_weights(shuffle, shuffle_seed):
        trainer = fresh_run(seed=1, epochs=2, shuffle=shuffle)  # same initial weights
        trainer.rng = np.random.RandomState(shuffle_seed)
        trainer.run()
        return trainer.network.W_n[0]

    assert not np.array_equal(final_weights(True, 1), final_weights(True, 2))
    assert np.array_equal(final_weights(True, 1), final_weights(True, 1))
    assert np.array_equal(final_weights(False, 1), final_weights(False, 2))


def test_l2_shrinks_the_weights():
    plain, decayed = fresh_run(epochs=10), fresh_run(epochs=10, l2=5.0)
    plain.run()
    decayed.run()
    norm = lambda t: sum(float((W**2).sum()) for W in t.network.W_n)  # noqa: E731
    assert norm(decayed) < 0.8 * norm(plain)


def test_float32_trains_in_float32_and_close_to_float64():
    t64 = fresh_run(epochs=5)
    t32 = fresh_run(epochs=5, net={"dtype": "float32"})
    t64.run()
    t32.run()
    assert all(W.dtype == np.float32 for W in t32.network.W_n + t32.network.B_n)
    assert t32.history[-1].cost == pytest.approx(t64.history[-1].cost, rel=1e-3)


def test_cross_entropy_and_softmax_learn_the_blobs():
    trainer = fresh_run(
        epochs=10,
        net={
            "cost": "cross_entropy",
            "output_activation": "softmax",
            "activation": "relu",
            "init": "scaled",
        },
    )
    trainer.run()
    assert trainer.history[-1].accuracy > 0.95


def test_predict_and_evaluate_check_shapes():
    net = Network([4, 3, 2], rng=0)
    assert net.predict(np.zeros((5, 4))).shape == (5, 2)
    with pytest.raises(ShapeError, match="expected size 4, got size 3"):
        net.predict(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="finite"):
        net.predict(np.full((1, 4), np.nan))
    with pytest.raises(ValueError, match="cross_entropy.*output_activation"):
        Network([2, 2], cost="cross_entropy", output_activation="identity")


def test_config_rejects_nonsense():
    for bad in [
        dict(epochs=0),
        dict(learning_rate=-1.0),
        dict(learning_rate=float("nan")),
        dict(batch_size=0),
        dict(l2=-1.0),
        dict(patience=0),
    ]:
        args = {"epochs": 1, "learning_rate": 1.0} | bad
        with pytest.raises(ValueError):
            TrainingConfig(**args)


@pytest.mark.parametrize("at_batch", [5, 12])  # 12 = after the epoch's last mini-batch
def test_state_exported_inside_on_batch_resumes_exactly(at_batch):
    # early stopping on the training cost: a wrong partial cost would change when it stops
    options = dict(epochs=30, patience=1)
    reference = fresh_run(**options)
    assert reference.n_batches == 12
    reference.run()

    saved = {}

    def checkpoint_then_die(trainer):
        if trainer.epoch == 2 and trainer.progress.batch == at_batch:
            saved.update(trainer.state_dict())  # as the worker's timed checkpoint does
            return True
        return False

    first = fresh_run(**options)
    first.run(on_batch=checkpoint_then_die)
    resumed = fresh_run(seed=99, **options)
    resumed.load_state_dict(saved)
    resumed.run()
    assert_bitwise_equal(weights_of(resumed.network), weights_of(reference.network))
    assert [(m.epoch, m.cost, m.accuracy) for m in resumed.history] == [
        (m.epoch, m.cost, m.accuracy) for m in reference.history if m.epoch >= 3
    ]


def test_exported_state_is_a_snapshot():
    trainer = fresh_run(epochs=3)
    states = []
    trainer.run(on_epoch=lambda t, m: states.append(t.state_dict()))
    assert not np.array_equal(states[0]["W0"], states[-1]["W0"])


def test_batch_size_beyond_the_data_is_one_batch():
    X, Y = blobs(30)
    config = TrainingConfig(epochs=1, learning_rate=1.0, batch_size=10**300)
    trainer = Trainer(Network([4, 5, 3], rng=0), X, Y, config, rng=0)
    assert trainer.n_batches == 1
    trainer.run()
    with pytest.raises(ValueError, match="at least one sample"):
        Trainer(Network([4, 5, 3]), X[:0], Y[:0], config)


def test_fortran_ordered_data_trains_like_c_ordered_in_bounded_memory():
    X, Y = blobs()
    runs = []
    for order in ("C", "F"):
        rng = np.random.RandomState(3)
        net = Network([4, 6, 3], rng=rng)
        trainer = Trainer(
            net,
            np.asarray(X, order=order),
            np.asarray(Y, order=order),
            TrainingConfig(epochs=2, learning_rate=1.0, batch_size=1),
            rng=rng,
        )
        trainer.run()
        assert len(trainer._buffers[0]) <= len(X)  # the shuffling buffer never outgrows the data
        runs.append(weights_of(net))
    for c, f in zip(*runs):
        np.testing.assert_array_equal(c, f)


def test_a_big_endian_dtype_trains_in_native_order_with_the_same_bits():
    X, Y = blobs()
    runs = []
    for dtype in ("<f8", ">f8"):
        rng = np.random.RandomState(4)
        net = Network([4, 6, 3], dtype=dtype, rng=rng)
        assert net.dtype == np.dtype("float64")
        Trainer(net, X, Y, TrainingConfig(epochs=2, learning_rate=1.0), rng=rng).run()
        runs.append(weights_of(net))
    for little, big in zip(*runs):
        np.testing.assert_array_equal(little, big)


def test_a_numpy_float_learning_rate_steps_like_a_python_float():
    X, Y = blobs()
    runs = []
    for rate in (0.3, np.float64(0.3)):
        rng = np.random.RandomState(5)
        net = Network([4, 6, 3], dtype="float32", rng=rng)
        Trainer(net, X, Y, TrainingConfig(epochs=2, learning_rate=rate), rng=rng).run()
        runs.append(weights_of(net))
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_pickles_carry_the_model_not_the_training_buffers():
    import pickle

    trainer = fresh_run(epochs=1)
    trainer.run()
    net = trainer.network
    assert net._workspaces
    copy = pickle.loads(pickle.dumps(net))
    assert "_workspaces" not in copy.__dict__
    for a, b in zip(weights_of(net), weights_of(copy)):
        np.testing.assert_array_equal(a, b)
    X, Y = blobs()
    np.testing.assert_array_equal(copy.predict(X), net.predict(X))
    net.release_workspaces()
    assert "_workspaces" not in net.__dict__
