"""Optimizers, schedules and clipping in the Trainer: options, exact resume, the seeding rule.

Their arithmetic is checked against PyTorch and scikit-learn in test_references.py and
test_sklearn_references.py; this module checks what the training loop does with them.
"""

import io
import json
import tracemalloc

import numpy as np
import pytest

from core import (
    COMPLETED,
    OPTIMIZERS,
    SCHEDULES,
    STOPPED,
    Adam,
    Cosine,
    Network,
    Trainer,
    TrainingConfig,
)

from .test_training import assert_bitwise_equal, blobs, weights_of


def run_with(seed=11, epochs=6, **options):
    rng = np.random.RandomState(seed)
    X, Y = blobs()
    config = TrainingConfig(epochs=epochs, learning_rate=options.pop("rate", 0.5), **options)
    return Trainer(Network([4, 6, 3], rng=rng), X, Y, config, rng=rng)


def through_npz(state):
    buffer = io.BytesIO()
    np.savez(buffer, **state)
    buffer.seek(0)
    return dict(np.load(buffer, allow_pickle=False))


# every optimizer and every schedule at least once, with clipping and L2 in some
RUNS = {
    "sgd, step per step, l2": dict(
        schedule={"name": "step", "step_size": 7, "gamma": 0.7, "per": "step"}, l2=0.3
    ),
    "momentum, exponential per epoch, clipped": dict(
        optimizer={"name": "momentum", "momentum": 0.8, "dampening": 0.2},
        schedule={"name": "exponential", "gamma": 0.8},
        clip_norm=0.3,
    ),
    "nesterov, cosine with warm-up per step": dict(
        optimizer={"name": "momentum", "nesterov": True},
        schedule={"name": "cosine", "warmup": 10, "per": "step"},
        rate=0.2,
    ),
    "adam, plateau, l2": dict(
        optimizer={"name": "adam", "weight_decay": 1e-3},
        schedule={"name": "plateau", "patience": 0, "factor": 0.5, "threshold": 0.4},
        l2=0.1,
        rate=0.05,
    ),
    "adamw, invscaling per step, clipped": dict(
        optimizer="adamw", schedule={"name": "invscaling", "per": "step"}, clip_norm=0.5
    ),
}


@pytest.mark.parametrize("stop", ["epoch boundary", "mid-epoch"])
@pytest.mark.parametrize("run", RUNS)
def test_a_run_stopped_anywhere_resumes_bitwise(run, stop):
    reference = run_with(**RUNS[run])
    reference.run()
    rates = [m.learning_rate for m in reference.history]
    assert len(set(rates)) > 1  # the schedule changed the rate by the stop or after it

    first = run_with(**RUNS[run])
    if stop == "epoch boundary":
        result = first.run(on_epoch=lambda t, m: m.epoch == 3)
    else:
        result = first.run(on_batch=lambda t: t.epoch == 2 and t.progress.batch == 5)
    assert result == STOPPED
    state = through_npz(first.state_dict())

    resumed = run_with(seed=99, **RUNS[run])  # everything must come from the state
    resumed.load_state_dict(state)
    assert resumed.run() == COMPLETED
    assert_bitwise_equal(weights_of(resumed.network), weights_of(reference.network))
    tail = reference.history[-len(resumed.history) :]
    assert [(m.cost, m.learning_rate) for m in resumed.history] == [
        (m.cost, m.learning_rate) for m in tail
    ]


def test_the_state_holds_the_optimizer_and_schedule_as_flat_plain_arrays():
    trainer = run_with(**RUNS["adam, plateau, l2"])
    trainer.run(on_epoch=lambda t, m: m.epoch == 5)
    state = trainer.state_dict()
    assert str(state["opt_name"]) == "adam" and int(state["opt_step"]) == 5 * 12
    assert state["opt_grad_sum_W0"].shape == (4, 6) and state["opt_square_sum_b1"].shape == (3, 1)
    assert str(state["sched_name"]) == "plateau" and float(state["sched_rate"]) < 0.05
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in state.values())
    # a snapshot: training on changes the live buffers, not the exported ones
    before = state["opt_grad_sum_W0"].copy()
    trainer.run()
    assert not np.array_equal(trainer.state_dict()["opt_grad_sum_W0"], before)
    np.testing.assert_array_equal(state["opt_grad_sum_W0"], before)


def test_a_state_from_before_optimizers_continues_as_sgd_and_nothing_else():
    trainer = run_with(epochs=2)
    trainer.run()
    old = {k: v for k, v in trainer.state_dict().items() if not k.startswith(("opt_", "sched_"))}
    again = run_with(epochs=3)
    again.load_state_dict(old)
    assert again.run() == COMPLETED and [m.epoch for m in again.history] == [3]
    with pytest.raises(ValueError, match="written by optimizer 'sgd', the config has 'adam'"):
        run_with(optimizer="adam").load_state_dict(old)
    with pytest.raises(ValueError, match="schedule 'constant', the config has 'cosine'"):
        run_with(schedule="cosine").load_state_dict(old)
    momentum = run_with(optimizer="momentum")
    with pytest.raises(ValueError, match="optimizer 'momentum', the config has 'adamw'"):
        run_with(optimizer="adamw").load_state_dict(momentum.state_dict())


def test_with_no_rng_the_trainer_follows_numpy_s_global_seed():
    X, Y = blobs()
    config = TrainingConfig(epochs=3, learning_rate=1.0, shuffle=True)
    runs = []
    for _ in range(2):
        np.random.seed(2023)
        net = Network([4, 6, 3])
        Trainer(net, X, Y, config).run()
        runs.append(weights_of(net))
    assert_bitwise_equal(*runs)
    # the same stream as one private generator passed to both
    rng = np.random.RandomState(2023)
    net = Network([4, 6, 3], rng=rng)
    Trainer(net, X, Y, config, rng=rng).run()
    assert_bitwise_equal(runs[0], weights_of(net))


def test_one_adam_step_moves_every_parameter_by_about_the_rate():
    # the first step: m = (1 - beta1) g and v = (1 - beta2) g^2, whose bias corrections
    # divide by (1 - beta1) and (1 - beta2), leaving m = g and sqrt(v) = |g|; the step is
    # rate * g / (|g| + eps), the rate itself wherever |g| >> eps
    X, Y = blobs(10)
    net = Network([4, 6, 3], rng=0)
    before = weights_of(net)
    _, weight_grads, bias_grads = net.gradient(X, Y)
    config = TrainingConfig(epochs=1, learning_rate=0.01, batch_size=10, optimizer="adam")
    Trainer(net, X, Y, config, rng=0).run()
    for old, new, summed in zip(before, weights_of(net), weight_grads + bias_grads):
        g = summed.reshape(old.shape) / 10  # the gradient of the batch's mean cost
        np.testing.assert_allclose(new, old - 0.01 * g / (np.abs(g) + 1e-8), rtol=1e-14)
        assert np.abs(np.abs(new - old) - 0.01).max() < 1e-5


def test_the_metrics_report_the_rate_of_each_epoch_s_last_step():
    trainer = run_with(epochs=3, rate=0.4, schedule={"name": "exponential", "gamma": 0.5})
    trainer.run()
    assert [m.learning_rate for m in trainer.history] == [0.4, 0.2, 0.1]
    assert trainer.history[0].as_dict()["learning_rate"] == 0.4
    cosine = run_with(epochs=2, rate=0.4, schedule={"name": "cosine", "per": "step"})
    cosine.run()  # 24 steps: the last one's rate is the cosine's 23rd of 24
    expected = 0.4 * (1 + np.cos(np.pi * 23 / 24)) / 2
    assert cosine.history[-1].learning_rate == pytest.approx(expected, rel=1e-15)


def test_options_round_trip_through_json():
    for cls in [*OPTIMIZERS.values(), *SCHEDULES.values()]:
        required = {"step_size": 3, "gamma": 0.5}
        options = cls(**{k: v for k, v in required.items() if k in cls.parameters})
        as_json = json.loads(json.dumps(options.to_dict()))
        assert as_json["name"] == cls.name and set(as_json) == {"name", *cls.parameters}
        assert cls.from_dict(as_json) == options
        config = TrainingConfig(epochs=1, learning_rate=1.0, **{cls.kind: as_json})
        assert getattr(config, cls.kind) == options
    with pytest.raises(ValueError, match="optimizer.name must be 'adam' here, got 'sgd'"):
        Adam.from_dict({"name": "sgd"})
    assert Adam().to_dict() == {
        "name": "adam",
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-8,
        "weight_decay": 0.0,
    }
    assert Cosine().to_dict() == {
        "name": "cosine",
        "t_max": None,
        "min_lr": 0.0,
        "warmup": 0,
        "per": "epoch",
    }
    config = TrainingConfig(epochs=1, learning_rate=1.0, optimizer="adam", schedule="cosine")
    assert hash(config) == hash(TrainingConfig(**config.__dict__))


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(optimizer="rmsprop"), r"optimizer.name must be one of \['adam', 'adamw'"),
        (dict(optimizer={"beta1": 0.9}), "optimizer.name must be one of"),
        (
            dict(optimizer={"name": "adam", "beta1": 1.0}),
            r"optimizer.beta1 must lie in \[0.0, 1.0\)",
        ),
        (dict(optimizer={"name": "adam", "eps": 0}), "optimizer.eps must lie in"),
        (dict(optimizer={"name": "adam", "lr": 0.1}), "adam takes no parameter lr"),
        (dict(optimizer={"name": "momentum", "nesterov": "yes"}), "optimizer.nesterov must be"),
        (
            dict(optimizer={"name": "momentum", "nesterov": True, "dampening": 0.5}),
            "nesterov needs",
        ),
        (dict(optimizer={"name": "sgd", "momentum": 0.9}), "sgd takes no parameter momentum"),
        (dict(optimizer=0.9), "optimizer must be a name or a dict"),
        (dict(schedule={"name": "step"}), "schedule.step_size is required for step"),
        (dict(schedule={"name": "step", "step_size": 2.5}), "schedule.step_size must be a whole"),
        (
            dict(schedule={"name": "exponential", "gamma": float("nan")}),
            "schedule.gamma must be a finite",
        ),
        (
            dict(schedule={"name": "cosine", "per": "batch"}),
            r"schedule.per must be one of \['epoch', 'step'\]",
        ),
        (dict(schedule={"name": "plateau", "factor": 1.0}), "schedule.factor must lie in"),
        (dict(schedule={"name": "plateau", "per": "step"}), "plateau takes no parameter per"),
        (dict(clip_norm=0.0), r"clip_norm must lie in \(0.0, inf\)"),
        (dict(clip_norm=float("inf")), "clip_norm must be a finite number"),
    ],
)
def test_bad_options_raise_a_value_error_naming_the_field(options, message):
    with pytest.raises(ValueError, match=message):
        TrainingConfig(epochs=1, learning_rate=1.0, **options)


@pytest.mark.parametrize(
    "options",
    [dict(optimizer="adam", l2=0.5), dict(optimizer="momentum", clip_norm=0.1, l2=0.5)],
)
def test_an_optimizer_step_allocates_no_weight_sized_temporaries(options):
    rng = np.random.RandomState(0)
    X, Y = rng.rand(1_000, 784), np.eye(10)[rng.randint(10, size=1_000)]
    config = TrainingConfig(epochs=10, learning_rate=0.01, batch_size=100, **options)
    trainer = Trainer(Network([784, 100, 10], rng=0), X, Y, config, rng=0)
    trainer.run(on_epoch=lambda t, m: True)  # first epoch: workspaces and buffers are made
    tracemalloc.start()
    try:
        trainer.run(on_epoch=lambda t, m: True)  # ten steps
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200_000, f"{peak:,} bytes allocated at the peak of an epoch"
