"""A job stored at submit: its row, its data, the history it starts with, and the tenant's
quotas counted in the same transaction (queued jobs, stored bytes). ``store.jobs`` offers
these with the rest of a job's rows. The reason to change is what a new job stores, or how
its quotas are counted.

The submit's statements are Core on the tables, built once and bound per call: a fraction
of the ORM's cost per statement on the API's hottest write.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np
from sqlalchemy import BigInteger, DateTime, bindparam, func, insert, select, text
from sqlalchemy.orm import Session, make_transient_to_detached

from backprop.spec import JobSpec

from . import blobs, callbacks
from .db import Database
from .models import QUEUED, Blob, Job, JobEvent, TenantUsage, utcnow


class QueueFull(Exception):
    """The tenant already has ``limit`` queued jobs; ``queued`` is how many."""

    def __init__(self, queued: int, limit: int):
        super().__init__(f"{queued} queued jobs, the limit is {limit}")
        self.queued, self.limit = queued, limit


class InitSourceGone(LookupError):
    """The job whose weights another starts from was deleted while that one was stored."""


_JOB, _EVENT, _BLOB = Job.__table__, JobEvent.__table__, Blob.__table__
_USAGE = TenantUsage.__table__
_INSERT_JOB = insert(_JOB)
_INSERT_EVENT = insert(_EVENT)
_COUNT = (
    select(func.count())
    .select_from(_JOB)
    .where(_JOB.c.tenant == bindparam("tenant"), _JOB.c.status == bindparam("status"))
)
_TENANT_LOCK = text("SELECT pg_advisory_xact_lock(1, hashtext(:tenant))")
# one row, kept by the database's triggers on blob: it does not grow with the tenant's jobs
_JOB_BYTES = select(
    func.coalesce(
        select(_USAGE.c.job_bytes).where(_USAGE.c.tenant == bindparam("tenant")).scalar_subquery(),
        0,
    )
)
# the same, with the database's clock read in the same round trip (``Database.now``)
_JOB_BYTES_NOW = _JOB_BYTES.add_columns(func.clock_timestamp(type_=DateTime(timezone=True)))
#: every column of a job row unset: what a new job's object holds where the submit set nothing
_UNSET = dict.fromkeys(column.key for column in _JOB.columns)
#: the columns a submit sets (the others stay NULL)
_SET = (
    "id", "tenant", "name", "labels", "spec", "status", "epoch", "epochs", "attempts",
    "cancel_requested", "runtime_seconds", "created_at", "updated_at", "dispatched_at",
    "dispatch_count", "dataset_id", "val_dataset_id", "sweep_id", "trial", "params",
    "stopped_early", "callback_state",
)  # fmt: skip
#: the columns of a submit's row the database's clock fills
_TIMES = ("created_at", "updated_at", "dispatched_at")
# PostgreSQL: the job row, its history, its small arrays' blobs and chunks and, with a queue
# quota, the tenant's lock, in one statement that answers with its clock (aware UTC once
# read) and what the tenant's jobs stored before it (``job_bytes``). Its data-modifying
# parts and that sum see one snapshot, taken before its inserts; the foreign keys are
# checked at its end, when the job row is there. The blobs come in the order given.
_VALUES = {c: f":{c}" for c in _SET} | {
    "created_at": "clock.now",
    "updated_at": "clock.now",
    "dispatched_at": "CASE WHEN :dispatching THEN clock.now END",
}
_STORE_JOB = (
    text(
        f"""
WITH clock AS (
  SELECT clock_timestamp() AT TIME ZONE 'UTC' AS now
), job_row AS (
  INSERT INTO job ({", ".join(_SET)}) SELECT {", ".join(_VALUES[c] for c in _SET)} FROM clock
), history AS (
  INSERT INTO job_event (job_id, at, kind, message, worker)
  SELECT :id, clock.now, e.kind, e.message, NULL
  FROM clock, unnest(CAST(:event_kinds AS text[]), CAST(:event_messages AS text[]))
    WITH ORDINALITY AS e(kind, message, n)
  ORDER BY e.n
), {blobs.one_chunk_blobs_sql(":id", ":tenant", "npy")}
SELECT clock.now,
  coalesce((SELECT job_bytes FROM tenant_usage WHERE tenant = :tenant), 0) AS used,
  CASE WHEN :lock THEN pg_advisory_xact_lock(1, hashtext(:tenant)) END AS locked
FROM clock
"""
    )
    .bindparams(
        *[bindparam(name, type_=_JOB.c[name].type) for name in _SET if name not in _TIMES],
        bindparam("blobs_at", type_=_BLOB.c.created_at.type),
    )
    .columns(now=_JOB.c.created_at.type, used=BigInteger())
)


class Event(NamedTuple):
    """One entry of a job's history, as its view shows it."""

    at: datetime
    kind: str
    message: str
    worker: str | None


class NewJob(NamedTuple):
    """A job just stored (in the session, as persistent) and the history stored with it."""

    job: Job
    history: list[Event]


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
    """Store a validated job and its data in the caller's transaction, status queued
    (``add_job``, whose history this leaves out)."""
    return add_job(
        session, db, tenant=tenant, spec=spec, arrays=arrays, name=name, labels=labels,
        chunk_bytes=chunk_bytes, max_queued=max_queued, dispatching=dispatching,
        params=params, copy_start_weights=copy_start_weights,
    ).job  # fmt: skip


def add_job(
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
    storage: Callable[[int], None] | None = None,
) -> NewJob:
    """Store a validated job and its data in the caller's transaction, status queued, at
    the database's clock (``Database.now``). The spec says which data sets it trains and
    validates on, whose weights it starts from (copied here) and, for a sweep's trial, its
    sweep and number; ``params`` are a trial's searched values. Returns the job, in the
    session as a persistent object (later changes of it are flushed as usual), and the
    history stored with it: what its view shows without reading it back.

    With ``dispatching``, the job is recorded as dispatched: the caller sends its task
    message after the commit.

    ``storage`` is given what the tenant's jobs stored before this one (``job_bytes``, read
    in this transaction): raising there (a storage quota) rolls the caller's transaction
    back. With ``max_queued``, raises ``QueueFull`` (and the caller's transaction rolls
    back) when the tenant would have more queued jobs than that (``check_queue_quota``).
    """
    trial = spec.sweep
    row = dict(
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
        # the task message is sent right after the commit; recording it here saves the submit
        # a transaction (a failed send clears it again: ``leases.record_dispatch_failure``)
        dispatch_count=1 if dispatching else 0,
        dataset_id=spec.data.dataset_id,
        val_dataset_id=spec.val_dataset_id,
        sweep_id=trial.id if trial else None,
        trial=trial.trial if trial else None,
        params=params,
        stopped_early=False,
        callback_state=callbacks.WAITING if spec.callback_url else None,
    )
    events = [("queued", f"{spec.data.samples} samples, {spec.epochs} epochs")]
    if dispatching:
        events.append(("dispatched", ""))
    small, large = blobs.npy_bytes(arrays, chunk_bytes)
    copying = spec.init_from is not None and copy_start_weights
    session.flush()  # rows the ORM holds go first (a trial's sweep)
    at_once = not (db.is_sqlite or large or copying)
    locked = at_once and max_queued is not None
    if at_once:
        now, used = _store_at_once(session, row, events, small, dispatching, locked=locked)
    elif storage is not None:
        used, now = job_bytes_and_now(session, db, tenant)
    else:
        now = db.now(session)
    if storage is not None:
        storage(used)
    row |= dict(created_at=now, updated_at=now, dispatched_at=now if dispatching else None)
    history = [Event(now, kind, message, None) for kind, message in events]
    if not at_once:
        _store_apart(session, row, history, small, large, chunk_bytes, copying)
    job = _persistent(session, row)
    if max_queued is not None:
        check_queue_quota(session, db, tenant, max_queued, stored=1, locked=locked)
    return NewJob(job, history)


def _store_apart(session, row, history, small, large, chunk_bytes, copying) -> None:
    """The job row, its data, the start weights it copies and its history, a statement each."""
    session.execute(_INSERT_JOB, row)
    blobs.write_npy_parts(session, row["id"], small, large, chunk_bytes)
    if copying:  # kept with it (the source may go)
        _copy_start_weights(session, row["spec"].init_from, row["id"])
    session.execute(_INSERT_EVENT, [dict(event._asdict(), job_id=row["id"]) for event in history])


def _store_at_once(session, row, events, small, dispatching, *, locked: bool):
    """The job row, its history and its small arrays, and the tenant's lock if ``locked``,
    in one statement (PostgreSQL). Returns its clock and ``job_bytes`` before it."""
    kinds, messages = zip(*events)
    stored = session.execute(
        _STORE_JOB,
        row
        | dict(
            dispatching=dispatching,
            event_kinds=list(kinds),
            event_messages=list(messages),
            blob_kinds=list(small),
            blob_sizes=[len(data) for data in small.values()],
            blob_data=list(small.values()),
            blobs_at=utcnow(),
            lock=locked,
        ),
    ).one()
    return stored.now, int(stored.used)


def _persistent(session: Session, row: dict) -> Job:
    """The job object of a row just inserted, in the session as if loaded from it: the
    columns the insert left out are None, as the database holds them."""
    job = Job(**(_UNSET | row))
    make_transient_to_detached(job)
    session.add(job)
    return job


def check_queue_quota(
    session: Session,
    db: Database,
    tenant: str,
    max_queued: int,
    *,
    stored: int,
    locked: bool = False,
) -> None:
    """Raise ``QueueFull`` when the tenant has more than ``max_queued`` queued jobs, ``stored``
    of them made by the caller's transaction (a job, or a sweep's first trials), which then
    rolls back. Call it last in the transaction: the count is exact under concurrent
    submissions of jobs and sweeps alike. On PostgreSQL they take turns on an advisory lock
    per tenant, held until the commit, so the next count sees these jobs; on SQLite the
    transaction's INSERT already holds the database's single write lock until the commit.
    ``locked``: the caller's transaction took the tenant's lock in an earlier statement."""
    if not (db.is_sqlite or locked):
        session.execute(_TENANT_LOCK, {"tenant": tenant})
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


def count_jobs(session: Session, tenant: str, status: str) -> int:
    return session.execute(_COUNT, {"tenant": tenant, "status": status}).scalar_one()


def job_bytes(session: Session, tenant: str) -> int:
    """What the tenant's jobs store: their blobs (data, checkpoints, models), as the row
    ``TenantUsage`` keeps it. On PostgreSQL its triggers count a transaction's blobs when
    it commits, so this transaction's own writes are not in it yet."""
    return int(session.execute(_JOB_BYTES, {"tenant": tenant}).scalar_one() or 0)


def job_bytes_and_now(session: Session, db: Database, tenant: str) -> tuple[int, datetime]:
    """``job_bytes`` and the database's clock (``Database.now``), in one round trip."""
    if db.is_sqlite:  # the clock is this machine's: no round trip for it
        return job_bytes(session, tenant), db.now(session)
    used, now = session.execute(_JOB_BYTES_NOW, {"tenant": tenant}).one()
    return int(used or 0), now.astimezone(UTC)
