"""Job specs for tests that store jobs directly, not through the API."""

from __future__ import annotations

from backprop.spec import DataLayout, JobSpec, TrainingOptions


def inline_spec(structure=(2, 2), *, samples: int = 1, epochs: int = 1, **fields) -> JobSpec:
    """A job on ``samples`` inline rows, in batches of 10, every option its default
    (``fields``: the spec's others, e.g. callback_url)."""
    return JobSpec(
        structure=structure,
        epochs=epochs,
        learning_rate=1.0,
        seed=1,
        options=TrainingOptions(),
        data=DataLayout.for_arrays(samples, batch_size=10, shuffle=True, validation_samples=0),
        **fields,
    )
