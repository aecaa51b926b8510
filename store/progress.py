"""What a worker records of the job it holds, each write under its lease: finished epochs'
metrics, checkpoints, gradient checks, a resume's rewind to its checkpoint, and the job's
end. The reason to change is what a run records.

Every write here is one conditional UPDATE naming the lease's owner (``store.leases.guarded``):
a worker that lost the job writes nothing and gets ``LeaseLost``.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from . import blobs
from .db import Database
from .jobs import add_event, next_waiting
from .leases import LeaseLost, guarded
from .models import FAILED, EpochMetric, Job, JobEvent


def record_progress(
    session: Session,
    db: Database,
    job_id: str,
    owner: str,
    *,
    metrics: list[dict],
    runtime_seconds: float,
    checkpoint: dict[str, np.ndarray] | None = None,
    chunk_bytes: int,
    worker: str,
) -> None:
    """Buffered epochs' metrics rows, progress and (optionally) a checkpoint, atomically.

    The worker calls this on a clock (METRICS_FLUSH_SECONDS, CHECKPOINT_SECONDS), not once
    per epoch, so the number of transactions does not grow with the epochs. A checkpoint
    always travels with every metrics row up to its position: rows past the last checkpoint
    may exist, and a resume drops and recomputes them (``prepare_resume``).
    """
    now = db.now(session)
    values = dict(runtime_seconds=runtime_seconds, updated_at=now, **_progress(metrics))
    if session.execute(guarded(job_id, owner).values(**values)).rowcount != 1:
        raise LeaseLost(job_id)
    _write_metrics(session, job_id, metrics, now)
    if checkpoint is not None:
        _replace_checkpoint(session, job_id, checkpoint, chunk_bytes, now, worker)


def _progress(metrics: list[dict]) -> dict:
    """The job row's progress after these finished epochs (nothing when there are none)."""
    if not metrics:
        return {}
    return dict(epoch=metrics[-1]["epoch"], latest_metrics=metrics[-1])


def _write_metrics(session: Session, job_id: str, metrics: list[dict], now) -> None:
    if not metrics:
        return
    rows = [dict(m, job_id=job_id, recorded_at=now) for m in metrics]
    upsert = (sqlite_insert if session.bind.dialect.name == "sqlite" else pg_insert)(EpochMetric)
    # a retried transaction (an outage after the commit) must not insert the rows twice
    session.execute(
        upsert.on_conflict_do_update(
            index_elements=["job_id", "epoch"],
            set_={name: upsert.excluded[name] for name in METRIC_FIELDS + ("recorded_at",)},
        ),
        rows,
    )


def _replace_checkpoint(session, job_id, state, chunk_bytes, now, worker) -> None:
    blob = blobs.write_arrays(session, job_id, "checkpoint", state, chunk_bytes)
    blobs.delete_blobs(session, job_id, "checkpoint", keep=blob.id)
    epoch, batch = int(state["epoch"]), int(state["batch"])
    where = f"after epoch {epoch}" if batch == 0 else f"epoch {epoch + 1}, batch {batch}"
    # the history keeps the latest checkpoint only: a long job would drown it otherwise
    session.execute(
        delete(JobEvent).where(JobEvent.job_id == job_id, JobEvent.kind == "checkpoint")
    )
    add_event(session, job_id, "checkpoint", where, worker=worker, at=now)


def prepare_resume(session: Session, db: Database, job_id: str, owner: str, epoch: int) -> None:
    """Drop metrics rows past the checkpoint's epoch (the resumed run writes them again) and
    set the progress back to the checkpoint."""
    now = db.now(session)
    session.execute(
        delete(EpochMetric).where(EpochMetric.job_id == job_id, EpochMetric.epoch > epoch)
    )
    latest = session.scalar(
        select(EpochMetric).where(EpochMetric.job_id == job_id, EpochMetric.epoch == epoch)
    )
    values = dict(epoch=epoch, latest_metrics=latest and metric_dict(latest), updated_at=now)
    if session.execute(guarded(job_id, owner).values(**values)).rowcount != 1:
        raise LeaseLost(job_id)


METRIC_FIELDS = (
    "epoch",
    "cost",
    "accuracy",
    "val_cost",
    "val_accuracy",
    "seconds",
    "learning_rate",
)


def metric_dict(row: EpochMetric) -> dict:
    return {name: getattr(row, name) for name in METRIC_FIELDS}


def record_gradient_check(
    session: Session, db: Database, job_id: str, owner: str, when: str, check: dict, threshold
) -> None:
    """Store one gradient check (``when``: before or after training) under the lease."""
    job = session.get(Job, job_id)
    if job is None or job.lease_owner != owner:
        raise LeaseLost(job_id)
    record = dict(job.gradient_check or {"threshold": threshold, "warning": False})
    record[when] = check
    record["warning"] = bool(record["warning"] or check["worst_relative_error"] > threshold)
    job.gradient_check = record
    message = (
        f"{when} training: worst relative error {check['worst_relative_error']:.3g} over "
        f"{check['parameters']} parameters on {check['samples']} samples"
    )
    add_event(session, job_id, "gradient_check", message, at=db.now(session))
    if check["worst_relative_error"] > threshold:
        add_event(
            session, job_id, "gradient_check_warning",
            f"above the threshold {threshold:g}: backprop and finite differences disagree",
            at=db.now(session),
        )  # fmt: skip


def finish(
    session: Session,
    db: Database,
    job_id: str,
    owner: str,
    *,
    status: str,
    runtime_seconds: float,
    error_type: str | None = None,
    message: str = "",
    model: dict[str, np.ndarray] | None = None,
    metrics: list[dict] | None = None,
    checkpoint: dict[str, np.ndarray] | None = None,
    chunk_bytes: int = 2**20,
    worker: str | None = None,
    stopped_early: bool = False,
) -> str | None:
    """End the job (succeeded with its model, failed or cancelled) and release the lease.

    The last buffered metrics rows, and a checkpoint of a stopped job, are written in the
    same transaction. Returns the tenant's next job waiting without a task message (see
    ``jobs.next_waiting``), which the caller offers to the workers.
    """
    now = db.now(session)
    values = dict(
        status=status,
        lease_owner=None,
        lease_expires_at=None,
        finished_at=now,
        updated_at=now,
        runtime_seconds=runtime_seconds,
        error_type=error_type,
        error_message=message or None if status == FAILED else None,
        stopped_early=stopped_early,
        **_progress(metrics),
    )
    tenant = session.execute(guarded(job_id, owner).values(**values).returning(Job.tenant)).scalar()
    if tenant is None:
        ended = session.execute(select(Job.status, Job.lease_owner).where(Job.id == job_id)).first()
        if ended is not None and ended.status == status and ended.lease_owner is None:
            return None  # a retry of a finish whose first commit went through
        raise LeaseLost(job_id)
    _write_metrics(session, job_id, metrics or [], now)
    if checkpoint is not None and model is not None:
        # the final state and the model in one write; the end's own event says where
        ids = blobs.write_npz_blobs(
            session, job_id, {"checkpoint": checkpoint, "model": model}, chunk_bytes
        )
        blobs.delete_blobs(session, job_id, "checkpoint", keep=ids["checkpoint"])
    elif checkpoint is not None:  # a stopped job: its history says where it stopped
        _replace_checkpoint(session, job_id, checkpoint, chunk_bytes, now, worker)
    elif model is not None:
        blobs.write_arrays(session, job_id, "model", model, chunk_bytes)
    add_event(session, job_id, status, message, worker=worker, at=now)
    return next_waiting(session, tenant)
