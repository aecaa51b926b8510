"""The job rows: a job stored at submit, read, listed, cancelled and deleted, its history
(events), and what the tenant's jobs count and store. The reason to change is what a job row
holds or how it is read.

The job row is the source of truth. A worker writes to it only under the job's lease
(``store.leases``, ``store.progress``); this module's writes are the tenant's requests.
"""

from __future__ import annotations

import uuid

import numpy as np
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from backprop.spec import JobSpec

from . import blobs, callbacks
from .db import Database, lock_rows
from .models import (
    CANCELLED,
    FINAL_STATUSES,
    PAUSED,
    QUEUED,
    RUNNING,
    Blob,
    BlobChunk,
    Dataset,
    EpochMetric,
    IdempotencyRecord,
    Job,
    JobEvent,
    Sweep,
    utcnow,
)
from .paging import Page, page


class JobInUse(Exception):
    """A running sweep starts its trials from this job's weights."""


class JobNotFound(LookupError):
    pass


class JobConflict(Exception):
    """The job is not in a state that allows the operation (e.g. cancel a finished job)."""


class JobEnded(JobConflict):
    """The job already ended: it cannot be cancelled."""


class JobNotEnded(JobConflict):
    """The job is queued or running: it cannot be deleted yet."""


class TrialOfSweep(JobConflict):
    """A sweep's trial is deleted with its sweep, never on its own."""


class QueueFull(Exception):
    """The tenant already has ``limit`` queued jobs; ``queued`` is how many."""

    def __init__(self, queued: int, limit: int):
        super().__init__(f"{queued} queued jobs, the limit is {limit}")
        self.queued, self.limit = queued, limit


class InitSourceGone(LookupError):
    """The job whose weights another starts from was deleted while that one was stored."""


def add_event(
    session: Session, job_id: str, kind: str, message: str = "", *, worker=None, at=None
) -> JobEvent:
    event = JobEvent(job_id=job_id, kind=kind, message=message, worker=worker, at=at or utcnow())
    session.add(event)
    return event


# ---------------------------------------------------------------------------------- submit


def create_job(
    session: Session,
    db: Database,
    *,
    tenant: str,
    spec: JobSpec,
    arrays: dict[str, np.ndarray],
    name: str | None,
    labels: dict[str, str],
    chunk_bytes: int,
    max_queued: int | None = None,
    dispatching: bool = False,
    params: dict | None = None,
    copy_start_weights: bool = True,
) -> Job:
    """Store a validated job and its data in the caller's transaction, status queued. The
    spec says which data sets it trains and validates on, whose weights it starts from
    (copied here) and, for a sweep's trial, its sweep and number; ``params`` are a trial's
    searched values.

    With ``dispatching``, the job is recorded as dispatched: the caller sends its task
    message after the commit.

    With ``max_queued``, raises ``QueueFull`` (and the caller's transaction rolls back) when
    the tenant would have more queued jobs than that (``check_queue_quota``).
    """
    now, trial = db.now(session), spec.sweep
    job = Job(
        id=str(uuid.uuid4()),
        tenant=tenant,
        name=name,
        labels=labels,
        spec=spec,
        status=QUEUED,
        epoch=0,
        epochs=spec.epochs,
        attempts=0,
        cancel_requested=False,
        runtime_seconds=0.0,
        created_at=now,
        updated_at=now,
        # the task message is sent right after the commit; recording it here saves the submit
        # a transaction (a failed send clears it again: ``leases.record_dispatch_failure``)
        dispatched_at=now if dispatching else None,
        dispatch_count=1 if dispatching else 0,
        dataset_id=spec.data.dataset_id,
        val_dataset_id=spec.val_dataset_id,
        sweep_id=trial.id if trial else None,
        trial=trial.trial if trial else None,
        params=params,
        stopped_early=False,
        callback_state=callbacks.WAITING if spec.callback_url else None,
    )
    session.add(job)
    session.flush()
    blobs.write_npy_arrays(session, job.id, arrays, chunk_bytes)
    if spec.init_from is not None and copy_start_weights:  # kept with it (the source may go)
        _copy_start_weights(session, spec.init_from, job.id)
    message = f"{spec.data.samples} samples, {spec.epochs} epochs"
    add_event(session, job.id, "queued", message, at=now)
    if dispatching:
        add_event(session, job.id, "dispatched", at=now)
    if max_queued is not None:
        check_queue_quota(session, db, tenant, max_queued, stored=1)
    return job


def check_queue_quota(
    session: Session, db: Database, tenant: str, max_queued: int, *, stored: int
) -> None:
    """Raise ``QueueFull`` when the tenant has more than ``max_queued`` queued jobs, ``stored``
    of them made by the caller's transaction (a job, or a sweep's first trials), which then
    rolls back. Call it last in the transaction: the count is exact under concurrent
    submissions of jobs and sweeps alike. On PostgreSQL they take turns on an advisory lock
    per tenant, held until the commit, so the next count sees these jobs; on SQLite the
    transaction's INSERT already holds the database's single write lock until the commit."""
    if not db.is_sqlite:
        session.execute(
            text("SELECT pg_advisory_xact_lock(1, hashtext(:tenant))"), {"tenant": tenant}
        )
    queued = count_jobs(session, tenant, QUEUED)  # the caller's own included
    if queued > max_queued:
        raise QueueFull(queued - stored, max_queued)


def _copy_start_weights(session: Session, source_id: str, job_id: str) -> None:
    """The source job's model, copied inside the database as the job's ``init`` blob. The
    source's row is share-locked first: a delete of it (which locks the row, ``delete_job``)
    either waits for this commit or has gone before, and then InitSourceGone."""
    held = session.scalar(select(Job.id).where(Job.id == source_id).with_for_update(read=True))
    model = blobs.find_blob(session, source_id, "model") if held else None
    if model is None:
        raise InitSourceGone(source_id)
    blobs.copy_blob(session, model, job_id, "init")


# ---------------------------------------------------------------------------------- reads


def get_job(session: Session, tenant: str, job_id: str) -> Job:
    if not is_row_id(job_id):  # ids are canonical UUIDs; anything else names no job
        raise JobNotFound(job_id)
    job = session.get(Job, job_id)
    if job is None or job.tenant != tenant:
        raise JobNotFound(job_id)
    return job


def is_row_id(text: str) -> bool:
    """Ids of jobs and sweeps are canonical UUIDs; anything else names no row."""
    try:
        return str(uuid.UUID(text)) == text
    except (ValueError, TypeError):
        return False


def list_jobs(
    session: Session,
    tenant: str,
    *,
    statuses: list[str] | None = None,
    labels: dict[str, str] | None = None,
    limit: int = 50,
    cursor: str | None = None,
    sweep_id: str | None = None,
) -> Page:
    """The tenant's jobs, newest first; ``cursor`` continues after the last page's end
    (``store.paging``; ValueError for a malformed one)."""
    query = select(Job).where(Job.tenant == tenant)
    if sweep_id is not None:
        query = query.where(Job.sweep_id == sweep_id)
    if statuses:
        query = query.where(Job.status.in_(statuses))
    for key, value in (labels or {}).items():  # in SQL: ->> on PostgreSQL, json_extract on SQLite
        query = query.where(Job.labels[key].as_string() == value)
    return page(session, query, Job, limit, cursor)


def events(session: Session, job_id: str, limit: int = 200) -> list[JobEvent]:
    newest = (
        select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id.desc()).limit(limit)
    )
    return list(reversed(session.scalars(newest).all()))


def metrics(session: Session, job_id: str, after: int = 0) -> list[EpochMetric]:
    """The job's metrics rows, in order; those past epoch ``after`` only."""
    query = select(EpochMetric).where(EpochMetric.job_id == job_id, EpochMetric.epoch > after)
    return list(session.scalars(query.order_by(EpochMetric.epoch)))


def next_waiting(session: Session, tenant: str) -> str | None:
    """The tenant's oldest queued job that has no task message (``dispatched_at`` is
    cleared when a claim defers a job for the running-jobs limit), if any. Jobs whose
    message is still in the queue are not offered again: their message comes."""
    return session.scalars(
        select(Job.id)
        .where(Job.tenant == tenant, Job.status == QUEUED, Job.dispatched_at.is_(None))
        .order_by(Job.created_at)
        .limit(1)
    ).first()


def count_jobs(session: Session, tenant: str, status: str) -> int:
    return session.scalar(
        select(func.count()).select_from(Job).where(Job.tenant == tenant, Job.status == status)
    )


# ---------------------------------------------------------------------------------- callbacks


def take_due_callbacks(
    session: Session, db: Database, job_ids: list[str] | None = None, stale_before=None
) -> list[str]:
    """The ended jobs (of ``job_ids``, or all) whose callback is due, now marked queued,
    each once (``store.callbacks.take_due``)."""
    ended = Job.status.in_(FINAL_STATUSES)
    return callbacks.take_due(session, db, Job, ended, job_ids, stale_before)


def callback_not_queued(session: Session, job_id: str) -> None:
    callbacks.not_queued(session, Job, job_id)


def record_callback(
    session: Session, db: Database, job_id: str, message: str, *, delivered: bool, last: bool
) -> None:
    """One delivery attempt of the job's callback, in its history; the last one (or a
    delivery) settles it."""
    job = session.get(Job, job_id)
    if job is None:
        return
    add_event(session, job_id, "callback", message, at=db.now(session))
    callbacks.attempted(session, db, job, delivered=delivered, last=last)


# ------------------------------------------------------------------------ cancel and delete


def request_cancel(session: Session, db: Database, tenant: str, job_id: str) -> Job:
    """Cancel a queued (or paused) job now; ask a running job's worker to stop at its next
    mini-batch."""
    job = get_job(session, tenant, job_id)
    now = db.now(session)
    done = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_((QUEUED, PAUSED)))
        .values(status=CANCELLED, cancel_requested=True, finished_at=now, updated_at=now)
    ).rowcount
    asked = 0
    if done:
        add_event(session, job_id, "cancelled", f"cancelled while {job.status}", at=now)
    else:
        asked = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == RUNNING, Job.cancel_requested.is_(False))
            .values(cancel_requested=True, updated_at=now)
        ).rowcount
        if asked:
            add_event(
                session, job_id, "cancel_requested", "the worker stops at its next batch", at=now
            )
    session.flush()
    session.refresh(job)  # what the updates left, not what was read before them
    if not (done or asked) and job.status in FINAL_STATUSES:
        raise JobEnded(f"the job already ended: {job.status}")
    return job


def sweeps_starting_from(session: Session, tenant: str, job_ids: list[str]) -> list[str]:
    """The tenant's running sweeps whose trials start from one of these jobs' weights."""
    wanted, found = set(job_ids), []
    running = select(Sweep.id, Sweep.spec).where(Sweep.tenant == tenant, Sweep.status == RUNNING)
    for sweep_id, spec in session.execute(running):
        sources = {JobSpec.from_json(spec["base"]).init_from}
        sources.update(spec["search"].get("init_from", {}).get("choice", []))
        if sources & wanted:
            found.append(sweep_id)
    return found


def delete_job(session: Session, tenant: str, job_id: str) -> None:
    """Remove a finished job with everything it stored (its inline data, checkpoints,
    metrics, history and model; never a data set). Raises JobConflict while it is queued
    or running or a running sweep starts trials from it, JobNotFound for another tenant's."""
    job = get_job(session, tenant, job_id)
    if job.sweep_id:
        raise TrialOfSweep(
            f"the job is trial {job.trial} of sweep {job.sweep_id}: trials go with their "
            "sweep (DELETE /v1/sweeps/{sweep_id})"
        )
    if job.status not in FINAL_STATUSES:
        raise JobNotEnded(f"the job is {job.status}: cancel it first, then delete it")
    lock_rows(session, Job.status, [job_id])
    starting = sweeps_starting_from(session, tenant, [job_id])
    if starting:
        raise JobInUse(
            f"running sweep {starting[0]} starts its trials from this job's weights: "
            "delete it once the sweep ended"
        )
    delete_rows(session, job_id)


def delete_rows(session: Session, job_id: str) -> None:
    """Remove a job's row and every row it owns (the caller checked that it may go)."""
    ids = list(session.scalars(select(Blob.id).where(Blob.job_id == job_id)))
    if ids:
        session.execute(delete(BlobChunk).where(BlobChunk.blob_id.in_(ids)))
        session.execute(delete(Blob).where(Blob.id.in_(ids)))
    session.execute(delete(EpochMetric).where(EpochMetric.job_id == job_id))
    session.execute(delete(JobEvent).where(JobEvent.job_id == job_id))
    session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.job_id == job_id))
    session.execute(delete(Job).where(Job.id == job_id))


# ---------------------------------------------------------------------------------- storage


def job_bytes(session: Session, tenant: str) -> int:
    """What the tenant's jobs store: their blobs (data, checkpoints, models)."""
    return int(
        session.scalar(
            select(func.coalesce(func.sum(Blob.size), 0))
            .join(Job, Job.id == Blob.job_id)
            .where(Job.tenant == tenant)
        )
        or 0
    )


def usage(session: Session, tenant: str) -> dict:
    """What the tenant stores: jobs (their blobs: data, checkpoints, models) and data sets."""
    jobs_count = session.scalar(select(func.count()).select_from(Job).where(Job.tenant == tenant))
    stored = job_bytes(session, tenant)
    sets = session.execute(
        select(func.count(), func.coalesce(func.sum(Dataset.bytes), 0)).where(
            Dataset.tenant == tenant
        )
    ).one()
    return {
        "jobs": {"count": int(jobs_count), "bytes": stored},
        "datasets": {"count": int(sets[0]), "bytes": int(sets[1] or 0)},
    }
