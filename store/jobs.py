"""The job rows: a job read, listed, cancelled and deleted, its history (events), and what
the tenant's jobs store; a job stored at submit and the quotas counted with it are
``store.job_submit``'s, offered here too. The reason to change is what a job row holds or
how it is read.

The job row is the source of truth. A worker writes to it only under the job's lease
(``store.leases``, ``store.progress``); this module's writes are the tenant's requests.
"""

from __future__ import annotations

import uuid

from sqlalchemy import Connection, bindparam, delete, func, select, true, update
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from backprop.spec import JobSpec

from . import callbacks
from .db import Database, lock_rows

# a job stored at submit, and the quotas counted with it (``store.job_submit``)
from .job_submit import Event as Event
from .job_submit import InitSourceGone as InitSourceGone
from .job_submit import NewJob as NewJob
from .job_submit import QueueFull as QueueFull
from .job_submit import add_job as add_job
from .job_submit import check_queue_quota as check_queue_quota
from .job_submit import count_jobs as count_jobs
from .job_submit import create_job as create_job
from .job_submit import job_bytes
from .job_submit import job_bytes_and_now as job_bytes_and_now
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


# the poll's statements, built once and bound per call (Core: a fraction of the ORM's cost)
_JOB, _EVENT = Job.__table__, JobEvent.__table__
_JOB_ROW = select(_JOB).where(_JOB.c.id == bindparam("id"), _JOB.c.tenant == bindparam("tenant"))
_HISTORY = (
    select(_EVENT.c.at, _EVENT.c.kind, _EVENT.c.message, _EVENT.c.worker)
    .where(_EVENT.c.job_id == bindparam("job_id"))
    .order_by(_EVENT.c.id.desc())
    .limit(bindparam("limit"))
)
# PostgreSQL: the job row with its newest events, each of their fields aggregated into an
# array in id order (NULL without events), in one round trip
_NEWEST = (
    select(_EVENT.c.id, _EVENT.c.at, _EVENT.c.kind, _EVENT.c.message, _EVENT.c.worker)
    .where(_EVENT.c.job_id == _JOB.c.id)
    .order_by(_EVENT.c.id.desc())
    .limit(bindparam("limit"))
    .correlate(_JOB)
    .lateral("e")
)
_HISTORY_ARRAYS = select(
    *[
        func.array_agg(aggregate_order_by(_NEWEST.c[name], _NEWEST.c.id)).label(f"history_{name}")
        for name in Event._fields
    ]
).lateral("h")
_JOB_WITH_HISTORY = (
    select(_JOB, *_HISTORY_ARRAYS.c)
    .select_from(_JOB.outerjoin(_HISTORY_ARRAYS, true()))
    .where(_JOB.c.id == bindparam("id"), _JOB.c.tenant == bindparam("tenant"))
)


def add_event(
    session: Session, job_id: str, kind: str, message: str = "", *, worker=None, at=None
) -> JobEvent:
    event = JobEvent(job_id=job_id, kind=kind, message=message, worker=worker, at=at or utcnow())
    session.add(event)
    return event


# ---------------------------------------------------------------------------------- reads


def get_job(session: Session, tenant: str, job_id: str) -> Job:
    if not is_row_id(job_id):  # ids are canonical UUIDs; anything else names no job
        raise JobNotFound(job_id)
    job = session.get(Job, job_id)
    if job is None or job.tenant != tenant:
        raise JobNotFound(job_id)
    return job


def job_with_history(
    session: Session | Connection, tenant: str, job_id: str, limit: int = 200
) -> tuple[Row, list[Event]]:
    """The tenant's job row (JobNotFound) and its newest ``limit`` events, oldest first: a
    row with the attribute names of ``Job`` and ``Event`` tuples, read on one connection
    (PostgreSQL: in one round trip), a session's or one of its own
    (``Database.reading_rows``)."""
    if not is_row_id(job_id):
        raise JobNotFound(job_id)
    connection = session.connection() if isinstance(session, Session) else session
    found = {"id": job_id, "tenant": tenant, "limit": limit}
    if connection.dialect.name == "postgresql":
        job = connection.execute(_JOB_WITH_HISTORY, found).first()
        if job is None:
            raise JobNotFound(job_id)
        arrays = [field or () for field in job[-len(Event._fields) :]]  # None: no events
        return job, list(map(Event, *arrays))
    job = connection.execute(_JOB_ROW, found).first()
    if job is None:
        raise JobNotFound(job_id)
    history = connection.execute(_HISTORY, {"job_id": job_id, "limit": limit}).all()
    return job, [Event(*event) for event in reversed(history)]


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
    """The tenant's jobs, newest first, as rows of the job table (the attribute names of
    ``Job``: no ORM objects to build for a page of them); ``cursor`` continues after the
    last page's end (``store.paging``; ValueError for a malformed one)."""
    query = select(_JOB).where(_JOB.c.tenant == tenant)
    if sweep_id is not None:
        query = query.where(_JOB.c.sweep_id == sweep_id)
    if statuses:
        query = query.where(_JOB.c.status.in_(statuses))
    for key, value in (labels or {}).items():  # in SQL: ->> on PostgreSQL, json_extract on SQLite
        query = query.where(_JOB.c.labels[key].as_string() == value)
    return page(session, query, _JOB.c, limit, cursor)


def events(session: Session, job_id: str, limit: int = 200) -> list[JobEvent]:
    newest = (
        select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id.desc()).limit(limit)
    )
    return list(reversed(session.scalars(newest).all()))


def metrics(session: Session, job_id: str, after: int = 0) -> list[EpochMetric]:
    """The job's metrics rows, in order; those past epoch ``after`` only."""
    query = select(EpochMetric).where(EpochMetric.job_id == job_id, EpochMetric.epoch > after)
    return list(session.scalars(query.order_by(EpochMetric.epoch)))


_NEXT_WAITING = (
    select(_JOB.c.id)
    .where(
        _JOB.c.tenant == bindparam("tenant"),
        _JOB.c.status == QUEUED,
        _JOB.c.dispatched_at.is_(None),
    )
    .order_by(_JOB.c.created_at)
    .limit(1)
)


def next_waiting(session: Session, tenant: str) -> str | None:
    """The tenant's oldest queued job that has no task message (``dispatched_at`` is
    cleared when a claim defers a job for the running-jobs limit), if any. Jobs whose
    message is still in the queue are not offered again: their message comes. (A Core
    statement built once: a job's end runs it.)"""
    return session.execute(_NEXT_WAITING, {"tenant": tenant}).scalar()


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
