"""What differs between two of a tenant's jobs: their specs field by field, the first epoch
whose metrics differ, whether their final weights are the same bits, and whether their
weights were the same bits at a state both kept before the metrics part. The reason to
change is what a comparison of two runs reports.

Training with a seed is exact, so two runs that agree up to an epoch and then differ point
at what changed there (a schedule's step, a different batch order). Metrics are compared
as stored, bit for bit, leaving out each epoch's wall-clock seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from store import job_data, jobs
from store.models import SUCCEEDED

from .context import Context

#: the metrics compared, epoch by epoch (not ``seconds``: time always differs)
COMPARED = ("cost", "accuracy", "val_cost", "val_accuracy", "learning_rate")


@dataclass(frozen=True)
class FieldDiff:
    field: str  # a dotted path of the stored spec, e.g. options.schedule.gamma
    this: Any  # None where the field is absent
    other: Any


@dataclass(frozen=True)
class JobDiff:
    spec: list[FieldDiff]
    epochs_compared: int  # epochs both have finished
    first_divergent_epoch: int | None  # of those, the first whose metrics differ
    this_metrics: dict | None  # both rows at that epoch
    other_metrics: dict | None
    weights_equal: bool | None  # both succeeded: their models, bit for bit
    # both kept a state (their latest checkpoint or final state) at the same position, no
    # later than the epoch before the metrics part: that epoch, and whether the weights
    # were the same bits there
    state_epoch: int | None = None
    states_equal: bool | None = None


def diff_jobs(ctx: Context, job_id: str, other_id: str) -> JobDiff:
    """Compare two of the tenant's jobs (JobNotFound for either)."""
    with ctx.db.reading() as session:
        this = jobs.get_job(session, ctx.tenant, job_id)
        other = jobs.get_job(session, ctx.tenant, other_id)
        rows = {job.id: jobs.metrics(session, job.id) for job in (this, other)}
        weights = None
        if this.status == SUCCEEDED and other.status == SUCCEEDED:
            weights = _same_bits(
                job_data.load_model(session, this.id), job_data.load_model(session, other.id)
            )
        states = [job_data.load_checkpoint(session, job.id) for job in (this, other)]
    mine = {row.epoch: row for row in rows[this.id]}
    theirs = {row.epoch: row for row in rows[other.id]}
    common = sorted(mine.keys() & theirs.keys())
    divergent = next((e for e in common if _measured(mine[e]) != _measured(theirs[e])), None)
    state_epoch, states_equal = _states_before(*states, divergent)
    return JobDiff(
        spec=spec_differences(this.spec.to_json(), other.spec.to_json()),
        epochs_compared=len(common),
        first_divergent_epoch=divergent,
        this_metrics=None if divergent is None else _measured(mine[divergent]),
        other_metrics=None if divergent is None else _measured(theirs[divergent]),
        weights_equal=weights,
        state_epoch=state_epoch,
        states_equal=states_equal,
    )


def _states_before(mine, theirs, divergent: int | None) -> tuple[int | None, bool | None]:
    """Where both jobs kept a state at the same position before their metrics part: its
    epoch (finished epochs; the position may be inside the next one) and whether the
    weights and biases there are the same bits."""
    if mine is None or theirs is None:
        return None, None
    at = (int(mine["epoch"]), int(mine["batch"]))
    if at != (int(theirs["epoch"]), int(theirs["batch"])):
        return None, None
    if divergent is not None and at[0] >= divergent:
        return None, None
    names = [k for k in mine if k[0] in "Wb" and k[1:].isdigit()]
    weights = {k: mine[k] for k in names}
    return at[0], _same_bits(weights, {k: theirs[k] for k in names if k in theirs})


def spec_differences(this: dict, other: dict, prefix: str = "") -> list[FieldDiff]:
    """The fields whose values differ, by dotted path; objects are compared key by key,
    lists (a structure) and other values whole."""
    found = []
    for key in list(this) + [k for k in other if k not in this]:
        path = f"{prefix}{key}"
        mine, theirs = this.get(key), other.get(key)
        if isinstance(mine, dict) and isinstance(theirs, dict):
            found += spec_differences(mine, theirs, f"{path}.")
        elif mine != theirs:
            found.append(FieldDiff(path, mine, theirs))
    return found


def _measured(row) -> dict:
    return {name: getattr(row, name) for name in COMPARED}


def _same_bits(mine: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> bool:
    if mine.keys() != theirs.keys():
        return False
    return all(
        mine[k].dtype == theirs[k].dtype
        and mine[k].shape == theirs[k].shape
        and mine[k].tobytes() == theirs[k].tobytes()
        for k in mine
    )
