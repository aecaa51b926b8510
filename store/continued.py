"""A job continued from another's final state: the new job row with copies of what it
carries on from (its parent's data, final state and metrics rows). The reason to change is
what a continued job starts with.

Everything is copied inside the database (``INSERT ... SELECT``), never read into this
process, and the parent's row is share-locked first so that a delete of it either waits
for this commit or has gone before (``ParentGone``).
"""

from __future__ import annotations

from sqlalchemy import insert, literal, select
from sqlalchemy.orm import Session

from backprop.spec import JobSpec

from . import blobs
from .db import Database
from .job_data import DATA_KINDS
from .jobs import add_event, create_job
from .models import PAUSED, EpochMetric, Job
from .progress import METRIC_FIELDS, metric_dict


class ParentGone(LookupError):
    """The job being continued was deleted, or lost its final state, meanwhile."""


def continue_job(
    session: Session,
    db: Database,
    *,
    tenant: str,
    parent_id: str,
    spec: JobSpec,
    epoch: int,
    name: str | None,
    labels: dict[str, str],
    max_queued: int | None = None,
    params: dict | None = None,
    held: bool = False,
) -> Job:
    """A queued job (recorded as dispatched) that continues ``parent_id`` from its final
    state at ``epoch`` finished epochs: the parent's inline data, its state (as the new job's
    checkpoint, which the worker resumes from) and its metrics rows up to that epoch are
    copied, so the new job's record is the whole run's. ``spec`` is the new job's (its
    ``epochs`` the whole run's). A sweep's extension (``spec.sweep``) is ``held`` for its
    sweep to release (``store.sweep_trials``) instead of queued. Raises ParentGone, or
    QueueFull with ``max_queued``."""
    locked = session.scalar(select(Job.id).where(Job.id == parent_id).with_for_update(read=True))
    found = blobs.find_blobs(session, parent_id, DATA_KINDS + ("checkpoint",)) if locked else {}
    state = found.pop("checkpoint", None)
    if state is None:
        raise ParentGone(parent_id)
    job = create_job(
        session, db, tenant=tenant, spec=spec, arrays={}, name=name, labels=labels,
        chunk_bytes=2**20, dispatching=not held, copy_start_weights=False,
        max_queued=max_queued, params=params,
    )  # fmt: skip
    if held:
        job.status = PAUSED
    for kind, blob in found.items():
        blobs.copy_blob(session, blob, job.id, kind)
    blobs.copy_blob(session, state, job.id, "checkpoint")
    columns = list(METRIC_FIELDS)
    rows = select(
        literal(job.id), *[getattr(EpochMetric, c) for c in columns], EpochMetric.recorded_at
    ).where(EpochMetric.job_id == parent_id, EpochMetric.epoch <= epoch)
    session.execute(insert(EpochMetric).from_select(["job_id", *columns, "recorded_at"], rows))
    latest = session.scalar(
        select(EpochMetric).where(EpochMetric.job_id == job.id, EpochMetric.epoch == epoch)
    )
    job.epoch = epoch
    job.latest_metrics = latest and metric_dict(latest)
    add_event(
        session, job.id, "continued",
        f"continues job {parent_id} from its final state after epoch {epoch}",
        at=db.now(session),
    )  # fmt: skip
    return job
