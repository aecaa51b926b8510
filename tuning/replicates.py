"""Seed replicates: a configuration trained with several seeds, ranked by its mean
objective. The reason to change is how replicates are numbered or aggregated.

Pure: no SQL. Trials are numbered in the order they are drawn; with ``k`` replicates, draw
``d`` (1, 2, ...) is replicate ``(d - 1) % k`` of configuration ``(d - 1) // k + 1``.
Replicate 0 has the configuration's values and seed; replicate r > 0 the same values and
``derived_seed(seed of replicate 0, r)`` (which also draws its validation split, when the
base holds rows out: the mean is over splits as well as initialisations and shuffles).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def place(draw: int, replicates: int) -> tuple[int, int]:
    """(configuration, replicate) of the sweep's ``draw``-th draw."""
    return (draw - 1) // replicates + 1, (draw - 1) % replicates


@dataclass(frozen=True)
class Replicate:
    configuration: int
    job_id: str
    params: dict
    value: float | None  # the objective; None until it has a finite one


def aggregate(replicates: list[Replicate], goal: str) -> list[dict]:
    """Each configuration's mean and standard deviation (n - 1 in the denominator; 0 for
    one value) over the replicates with an objective, best mean first; configurations with
    none yet last, by number."""
    by_configuration: dict[int, list[Replicate]] = {}
    for r in replicates:
        by_configuration.setdefault(r.configuration, []).append(r)
    rows = []
    for number, group in by_configuration.items():
        values = [r.value for r in group if r.value is not None and math.isfinite(r.value)]
        mean = sum(values) / len(values) if values else None
        spread = None
        if values:
            squares = sum((v - mean) ** 2 for v in values)
            spread = math.sqrt(squares / (len(values) - 1)) if len(values) > 1 else 0.0
        rows.append(
            {
                "configuration": number,
                "params": group[0].params,
                "job_ids": [r.job_id for r in group],
                "finished": len(values),
                "mean": mean,
                "std": spread,
            }
        )

    def key(row: dict):
        if row["mean"] is None:
            return (1, 0.0, row["configuration"])
        return (0, -row["mean"] if goal == "max" else row["mean"], row["configuration"])

    return sorted(rows, key=key)
