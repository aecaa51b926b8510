"""A job's spec turned into core's network and trainer, and its gradient check: the reason to
change is how a stored job maps onto core (its options, data layout and seed)."""

from __future__ import annotations

import numpy as np

from backprop.spec import JobSpec
from core import Network, Trainer, TrainingConfig, gradient_check
from store import progress


def build_trainer(spec: JobSpec, arrays: dict[str, np.ndarray]) -> Trainer:
    """The job's network and trainer, exactly as the spec says (the seed drives both)."""
    options, layout = spec.options, spec.data
    rng = np.random.RandomState(spec.seed)  # draws what np.random.seed(seed) would
    network = Network(
        spec.structure,
        activation=options.activation,
        output_activation=options.output_activation,
        cost=options.cost,
        init=options.init,
        dtype=options.dtype,
        rng=rng,
    )
    init = arrays.get("init")
    if init is not None:  # init_from: another job's weights (a checkpoint overrides them)
        layers = len(spec.structure) - 1
        network.set_parameters(
            [init[f"W{l}"] for l in range(layers)], [init[f"b{l}"] for l in range(layers)]
        )
    early = options.early_stopping
    config = TrainingConfig(
        epochs=spec.epochs,
        learning_rate=spec.learning_rate,
        batch_size=layout.batch_size or 1,
        shuffle=layout.shuffle,
        l2=options.l2,
        patience=early.patience if early else None,
        min_delta=early.min_delta if early else 0.0,
        optimizer=options.optimizer or "sgd",
        schedule=options.schedule or "constant",
        clip_norm=options.clip_norm,
    )
    validation = None
    if "val_inputs" in arrays:
        validation = (arrays["val_inputs"], arrays["val_targets"])
    return Trainer(
        network,
        arrays["inputs"],
        arrays["targets"],
        config,
        batch_sizes=arrays.get("batch_sizes"),
        validation=validation,
        rng=rng,
    )


GRADIENT_CHECK_PARAMETERS = 200  # weights and biases checked, drawn at random
GRADIENT_CHECK_SAMPLES = 32  # rows of the sample batch, at most
GRADIENT_CHECK_THRESHOLD = 1e-4  # correct backprop gives about 1e-7; a wrong formula 1e-3+


def check_gradients(store, job, owner, trainer, arrays, when: str, notify) -> None:
    """core.gradient_check on the job's first rows (its first batch's size, at most 32):
    the worst relative error between backprop and central differences, stored on the job.
    The parameters are drawn from a generator of its own, so training is not changed."""
    rows = min(job.spec.data.batch_size or 10, GRADIENT_CHECK_SAMPLES, len(arrays["inputs"]))
    worst = gradient_check(
        trainer.network,
        arrays["inputs"][:rows],
        arrays["targets"][:rows],
        parameters=GRADIENT_CHECK_PARAMETERS,
        rng=np.random.RandomState(job.spec.seed),
    )
    total = sum(w.size + b.size for w, b in zip(trainer.network.W_n, trainer.network.B_n))
    check = {
        "worst_relative_error": float(worst),
        "parameters": min(GRADIENT_CHECK_PARAMETERS, total),
        "samples": int(rows),
    }
    store(progress.record_gradient_check, job.id, owner, when, check, GRADIENT_CHECK_THRESHOLD)
    notify(job.id)
