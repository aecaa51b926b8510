"""Everything that reads or changes a job: the one place with the job table's rules.

The job row is the source of truth. A worker may write to a job only while it holds the job's
lease (``lease_owner``); every such write is one conditional UPDATE that names the owner, so a
worker that lost its lease (expired, and claimed by another) finds zero rows and stops
(``LeaseLost``). Celery messages only say "this job may be ready"; ``claim`` decides.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import and_, delete, func, or_, select, text, type_coerce, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, aliased

from core import validation_rows

from . import blobs, callbacks, datasets
from .db import Database, lock_rows
from .models import (
    CANCELLED,
    FAILED,
    FINAL_STATUSES,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Blob,
    BlobChunk,
    Dataset,
    EpochMetric,
    IdempotencyRecord,
    Job,
    JobEvent,
    Sweep,
    UTCDateTime,
    utcnow,
)

DATA_KINDS = ("inputs", "targets", "batch_sizes", "val_inputs", "val_targets")


class LeaseLost(Exception):
    """This worker no longer holds the job: another claimed it, or it ended."""


class JobInUse(Exception):
    """A running sweep starts its trials from this job's weights."""


class JobNotFound(LookupError):
    pass


class JobConflict(Exception):
    """The job is not in a state that allows the operation (e.g. cancel a finished job)."""


class TrialOfSweep(JobConflict):
    """A sweep's trial is deleted with its sweep, never on its own."""


class QueueFull(Exception):
    """The tenant already has ``limit`` queued jobs; ``queued`` is how many."""

    def __init__(self, queued: int, limit: int):
        super().__init__(f"{queued} queued jobs, the limit is {limit}")
        self.queued, self.limit = queued, limit


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
    spec: dict,
    arrays: dict[str, np.ndarray],
    name: str | None,
    labels: dict[str, str],
    chunk_bytes: int,
    max_queued: int | None = None,
    dispatching: bool = False,
    dataset_id: str | None = None,
    val_dataset_id: str | None = None,
    init_from: str | None = None,
    sweep_id: str | None = None,
    trial: int | None = None,
    params: dict | None = None,
) -> Job:
    """Store a validated job and its data in the caller's transaction, status queued.

    With ``dispatching``, the job is recorded as dispatched: the caller sends its task
    message after the commit.

    With ``max_queued``, raises ``QueueFull`` (and the caller's transaction rolls back) when
    the tenant would have more queued jobs than that. The count is exact under concurrent
    submissions: on PostgreSQL they take turns on an advisory lock per tenant for the last
    moment of the transaction; on SQLite the job's INSERT, the transaction's first statement,
    already holds the database's single write lock until the commit.
    """
    now = db.now(session)
    job = Job(
        id=str(uuid.uuid4()),
        tenant=tenant,
        name=name,
        labels=labels,
        spec=spec,
        status=QUEUED,
        epoch=0,
        epochs=spec["epochs"],
        attempts=0,
        cancel_requested=False,
        runtime_seconds=0.0,
        created_at=now,
        updated_at=now,
        # the task message is sent right after the commit; recording it here saves the submit
        # a transaction (a failed send clears it again: ``record_dispatch_failure``)
        dispatched_at=now if dispatching else None,
        dispatch_count=1 if dispatching else 0,
        dataset_id=dataset_id,
        val_dataset_id=val_dataset_id,
        sweep_id=sweep_id,
        trial=trial,
        params=params,
        stopped_early=False,
        callback_state=callbacks.WAITING if spec.get("callback_url") else None,
    )
    session.add(job)
    session.flush()
    blobs.write_npy_arrays(session, job.id, arrays, chunk_bytes)
    if init_from is not None:  # the weights it starts from, kept with it (the source may go)
        _copy_start_weights(session, init_from, job.id)
    samples = spec["data"].get("samples", len(arrays.get("inputs", ())))
    add_event(session, job.id, "queued", f"{samples} samples, {spec['epochs']} epochs", at=now)
    if dispatching:
        add_event(session, job.id, "dispatched", at=now)
    if max_queued is not None:
        if not db.is_sqlite:  # held until the commit, so the next count sees this job
            session.execute(
                text("SELECT pg_advisory_xact_lock(1, hashtext(:tenant))"), {"tenant": tenant}
            )
        queued = count_jobs(session, tenant, QUEUED)  # this job included
        if queued > max_queued:
            raise QueueFull(queued - 1, max_queued)
    return job


def mark_dispatched(session: Session, db: Database, job_id: str, message: str = "") -> bool:
    """Record a message about to be sent for a queued job, before it is sent (a worker may
    start it at once); False, recording nothing, if the job moved on meanwhile."""
    now = db.now(session)
    sent = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == QUEUED)
        .values(dispatched_at=now, dispatch_count=Job.dispatch_count + 1)
    ).rowcount
    if sent:
        add_event(session, job_id, "dispatched", message, at=now)
    return bool(sent)


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


def record_dispatch_failure(session: Session, db: Database, job_id: str, error: str) -> None:
    """No message exists for the job: the reconciler sends one (``stale_queued``)."""
    session.execute(
        update(Job).where(Job.id == job_id, Job.status == QUEUED).values(dispatched_at=None)
    )
    add_event(
        session,
        job_id,
        "dispatch_failed",
        f"the broker did not take the task ({error}); the reconciler will send it",
        at=db.now(session),
    )


# ---------------------------------------------------------------------------------- reads


def get_job(session: Session, tenant: str, job_id: str) -> Job:
    if not _is_job_id(job_id):  # ids are canonical UUIDs; anything else names no job
        raise JobNotFound(job_id)
    job = session.get(Job, job_id)
    if job is None or job.tenant != tenant:
        raise JobNotFound(job_id)
    return job


def _is_job_id(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except (ValueError, TypeError):
        return False


@dataclass(frozen=True)
class Page:
    jobs: list[Job]
    next_cursor: str | None


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CURSOR = re.compile(r"([0-9]{1,17})\.([0-9a-f]{32})")


def encode_cursor(job: Job) -> str:
    """A page's end as "<created_at in microseconds since 1970>.<job id as 32 hex digits>":
    every string of that form is a position, so any cursor of that form is valid."""
    created = (
        job.created_at.replace(tzinfo=UTC) if job.created_at.tzinfo is None else job.created_at
    )
    micros = (created - EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{uuid.UUID(job.id).hex}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raises ValueError for a string not of the cursor's form."""
    found = CURSOR.fullmatch(cursor)
    if found is None:
        raise ValueError("expected a next_cursor of this API: <digits>.<32 hex digits>")
    micros, job_id = found.groups()
    return EPOCH + timedelta(microseconds=int(micros)), str(uuid.UUID(job_id))


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
    """The tenant's jobs, newest first; ``cursor`` continues after the last page's end."""
    query = select(Job).where(Job.tenant == tenant)
    if sweep_id is not None:
        query = query.where(Job.sweep_id == sweep_id)
    if statuses:
        query = query.where(Job.status.in_(statuses))
    if cursor:
        created_at, job_id = decode_cursor(cursor)
        query = query.where(
            or_(Job.created_at < created_at, and_(Job.created_at == created_at, Job.id < job_id))
        )
    for key, value in (labels or {}).items():  # in SQL: ->> on PostgreSQL, json_extract on SQLite
        query = query.where(Job.labels[key].as_string() == value)
    query = query.order_by(Job.created_at.desc(), Job.id.desc())
    found = list(session.scalars(query.limit(limit + 1)))
    more = len(found) > limit
    found = found[:limit]
    return Page(found, encode_cursor(found[-1]) if more and found else None)


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


def load_model(session: Session, job_id: str) -> dict[str, np.ndarray]:
    blob = blobs.find_blob(session, job_id, "model")
    if blob is None:
        raise JobConflict("the job has no model")
    return blobs.read_arrays(session, blob)


class InitSourceGone(LookupError):
    """The job whose weights another starts from was deleted while that one was stored."""


def _copy_start_weights(session: Session, source_id: str, job_id: str) -> None:
    """The source job's model, copied inside the database as the job's ``init`` blob. The
    source's row is share-locked first: a delete of it (which locks the row, ``delete_job``)
    either waits for this commit or has gone before, and then InitSourceGone."""
    held = session.scalar(select(Job.id).where(Job.id == source_id).with_for_update(read=True))
    model = blobs.find_blob(session, source_id, "model") if held else None
    if model is None:
        raise InitSourceGone(source_id)
    blobs.copy_blob(session, model, job_id, "init")


def sweeps_starting_from(session: Session, tenant: str, job_ids: list[str]) -> list[str]:
    """The tenant's running sweeps whose trials start from one of these jobs' weights."""
    wanted, found = set(job_ids), []
    running = select(Sweep.id, Sweep.spec).where(Sweep.tenant == tenant, Sweep.status == RUNNING)
    for sweep_id, spec in session.execute(running):
        sources = {spec["base"].get("init_from")}
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
        raise JobConflict(f"the job is {job.status}: cancel it first, then delete it")
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


def load_data(session: Session, job_id: str) -> dict[str, np.ndarray]:
    """The job's training (and validation) arrays, each read once into place."""
    return _read_data(session, blobs.find_blobs(session, job_id, DATA_KINDS))


def _read_data(session: Session, found: dict) -> dict[str, np.ndarray]:
    return {kind: blobs.read_array(session, blob) for kind, blob in found.items()}


def load_data_and_checkpoint(
    session: Session, job: Job
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """What a claimed job needs to train: its arrays and its checkpoint (one lookup)."""
    found = blobs.find_blobs(session, job.id, DATA_KINDS + ("checkpoint", "init"))
    checkpoint = found.pop("checkpoint", None)
    init = found.pop("init", None)
    arrays = _read_data(session, found)
    if init is not None:
        arrays["init"] = blobs.read_arrays(session, init)
    if job.spec["data"]["form"] == "dataset":
        arrays |= load_dataset_arrays(session, job.spec)
    return arrays, checkpoint and blobs.read_arrays(session, checkpoint)


def load_dataset_arrays(session: Session, spec: dict) -> dict[str, np.ndarray]:
    """A data set job's arrays in the job's dtype, each row read once into its place: the
    training rows, and the validation rows of its split or of its validation data set."""
    dtype = spec["options"]["dtype"]
    layout = spec["data"]
    dataset = session.get(Dataset, layout["dataset_id"])
    if dataset is None:
        raise ValueError(f"data set {layout['dataset_id']} is gone")
    arrays = {}
    fraction = spec["options"].get("validation_split")
    if fraction:
        targets = datasets.read_member(session, dataset, "targets", dtype)
        split = validation_rows(targets, fraction, spec["seed"])
        arrays["inputs"], arrays["val_inputs"] = datasets.read_member(
            session, dataset, "inputs", dtype, split=split
        )
        arrays["targets"], arrays["val_targets"] = targets[~split], targets[split]
        return arrays
    arrays["inputs"] = datasets.read_member(session, dataset, "inputs", dtype)
    arrays["targets"] = datasets.read_member(session, dataset, "targets", dtype)
    val_id = (spec.get("validation") or {}).get("dataset_id")
    if val_id:
        val = session.get(Dataset, val_id)
        arrays["val_inputs"] = datasets.read_member(session, val, "inputs", dtype)
        arrays["val_targets"] = datasets.read_member(session, val, "targets", dtype)
    return arrays


def load_checkpoint(session: Session, job_id: str) -> dict[str, np.ndarray] | None:
    blob = blobs.find_blob(session, job_id, "checkpoint")
    return None if blob is None else blobs.read_arrays(session, blob)


# ---------------------------------------------------------------------------------- cancel


def request_cancel(session: Session, db: Database, tenant: str, job_id: str) -> Job:
    """Cancel a queued job now; ask a running job's worker to stop at its next mini-batch."""
    job = get_job(session, tenant, job_id)
    now = db.now(session)
    done = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == QUEUED)
        .values(status=CANCELLED, cancel_requested=True, finished_at=now, updated_at=now)
    ).rowcount
    asked = 0
    if done:
        add_event(session, job_id, "cancelled", "cancelled while queued", at=now)
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
        raise JobConflict(f"the job already ended: {job.status}")
    return job


# ---------------------------------------------------------------------------------- worker


def _claimable(now: datetime):
    return or_(
        Job.status == QUEUED,
        and_(Job.status == RUNNING, Job.lease_expires_at < now),
    )


def claim(
    session: Session,
    db: Database,
    job_id: str,
    owner: str,
    *,
    lease_seconds: float,
    max_attempts: int,
    worker: str,
    max_running: int | None = None,
) -> Job | None:
    """Take the job if nobody holds it: one atomic conditional UPDATE.

    Claimable: queued, or running under an expired lease. On PostgreSQL the row is picked with
    ``FOR UPDATE SKIP LOCKED`` (a competing claim skips it instead of waiting); SQLite runs
    the same statement as a compare-and-set under its single-writer lock. Returns the
    claimed job, or None (someone else holds it, it ended, it was cancelled or it ran out of
    attempts; the last two are recorded). With ``max_running``, a job whose tenant already has
    that many jobs running stays queued (offered again when one of them ends); on PostgreSQL
    claims of one tenant take turns on an advisory lock so that the count is exact.
    """
    held = session.execute(select(Job.tenant, Job.lease_owner).where(Job.id == job_id)).first()
    if held is None:
        return None
    if held.lease_owner == owner:  # a retried claim whose first commit went through
        return session.get(Job, job_id, populate_existing=True)
    if max_running is not None and not db.is_sqlite:
        # held to the commit: a claim counted before this one committed would not see it.
        # The caller commits right after (worker.training.claim), before any data loads
        session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:tenant))"), {"tenant": held.tenant}
        )
    for _ in range(CLAIM_TRIES):
        now = db.now(session)
        conditions = _claim_conditions(job_id, now, max_attempts, max_running)
        job = session.scalars(
            _claim_statement(conditions, owner, now, lease_seconds),
            execution_options={"populate_existing": True},
        ).first()
        if job is not None:
            add_event(session, job_id, "claimed", f"attempt {job.attempts}", worker=worker, at=now)
            return job
        if session.execute(select(Job.id).where(*conditions)).first() is None:
            if max_running is not None and _deferred(session, job_id, now, max_attempts):
                return None
            break
        # SKIP LOCKED passed over a row that another transaction was writing (the API
        # recording the dispatch, a cancel request): busy is not taken, so look again
        time.sleep(CLAIM_RETRY_SECONDS)
    _end_unclaimable(session, job_id, db.now(session), max_attempts, worker)
    return None


def _deferred(session: Session, job_id: str, now, max_attempts: int) -> bool:
    """The job is claimable but for its tenant's running-jobs limit: it stays queued with no
    message (``dispatched_at`` cleared), and the tenant's next ending offers it again."""
    waiting = _claim_conditions(job_id, now, max_attempts, None) + [Job.status == QUEUED]
    deferred = session.execute(
        update(Job)
        .where(*waiting)
        .values(dispatched_at=None)
        .execution_options(synchronize_session=False)
    ).rowcount
    if deferred:
        last = session.scalar(
            select(JobEvent.kind).where(JobEvent.job_id == job_id).order_by(JobEvent.id.desc())
        )
        if last != "deferred":  # once per wait, not once per offer
            add_event(
                session, job_id, "deferred",
                "the tenant runs as many jobs as it may (MAX_RUNNING_JOBS_PER_TENANT); "
                "offered again when one ends", at=now,
            )  # fmt: skip
    return bool(deferred)


CLAIM_TRIES, CLAIM_RETRY_SECONDS = 40, 0.05


def _claim_conditions(job_id: str, now, max_attempts: int, max_running: int | None) -> list:
    conditions = [
        Job.id == job_id,
        _claimable(now),
        Job.cancel_requested.is_(False),
        Job.attempts < max_attempts,
    ]
    if max_running is not None:
        other = aliased(Job)
        running = (
            select(func.count())
            .select_from(other)
            .where(
                other.tenant == Job.tenant, other.status == RUNNING, other.lease_expires_at > now
            )
            .scalar_subquery()
        )
        conditions.append(running < max_running)
    return conditions


def _claim_statement(conditions: list, owner: str, now, lease_seconds: float):
    target = select(Job.id).where(*conditions).with_for_update(skip_locked=True)
    return (
        update(Job)
        .where(Job.id == target.scalar_subquery())
        .values(
            status=RUNNING,
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=Job.attempts + 1,
            # typed, or PostgreSQL reads the bare parameter as timestamptz in its own zone
            started_at=func.coalesce(Job.started_at, type_coerce(now, UTCDateTime)),
            updated_at=now,
        )
        .returning(Job)
        .execution_options(synchronize_session=False)
    )


def _end_unclaimable(session: Session, job_id: str, now, max_attempts: int, worker) -> None:
    """A claimable job that is cancelled or out of attempts ends here instead of running."""
    cancelled = session.execute(
        update(Job)
        .where(Job.id == job_id, _claimable(now), Job.cancel_requested.is_(True))
        .values(status=CANCELLED, lease_owner=None, finished_at=now, updated_at=now)
    ).rowcount
    if cancelled:
        add_event(session, job_id, "cancelled", "cancelled before a worker resumed it", at=now)
        return
    exhausted = session.execute(
        update(Job)
        .where(Job.id == job_id, _claimable(now), Job.attempts >= max_attempts)
        .values(
            status=FAILED,
            lease_owner=None,
            finished_at=now,
            updated_at=now,
            error_type="attempts_exhausted",
            error_message=f"the job was started {max_attempts} times and never finished "
            "(its worker died or lost the job each time); it will not be retried",
        )
    ).rowcount
    if exhausted:
        add_event(session, job_id, "failed", f"attempts exhausted ({max_attempts})", at=now)


def _guarded(job_id: str, owner: str):
    return (
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == owner, Job.status == RUNNING)
        .execution_options(synchronize_session=False)
    )


def renew_lease(
    session: Session, db: Database, job_id: str, owner: str, lease_seconds: float
) -> bool:
    """Extend the lease; returns cancel_requested. Raises LeaseLost if it is gone."""
    now = db.now(session)
    row = session.execute(
        _guarded(job_id, owner)
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
        .returning(Job.cancel_requested)
    ).first()
    if row is None:
        raise LeaseLost(job_id)
    return bool(row[0])


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
    if session.execute(_guarded(job_id, owner).values(**values)).rowcount != 1:
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
    if session.execute(_guarded(job_id, owner).values(**values)).rowcount != 1:
        raise LeaseLost(job_id)


METRIC_FIELDS = ("epoch", "cost", "accuracy", "val_cost", "val_accuracy", "seconds")


def metric_dict(row: EpochMetric) -> dict:
    return {name: getattr(row, name) for name in METRIC_FIELDS}


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
    ``next_waiting``), which the caller offers to the workers.
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
    tenant = session.execute(
        _guarded(job_id, owner).values(**values).returning(Job.tenant)
    ).scalar()
    if tenant is None:
        ended = session.execute(select(Job.status, Job.lease_owner).where(Job.id == job_id)).first()
        if ended is not None and ended.status == status and ended.lease_owner is None:
            return None  # a retry of a finish whose first commit went through
        raise LeaseLost(job_id)
    _write_metrics(session, job_id, metrics or [], now)
    if checkpoint is not None:
        _replace_checkpoint(session, job_id, checkpoint, chunk_bytes, now, worker)
    if model is not None:
        blobs.write_arrays(session, job_id, "model", model, chunk_bytes)
    add_event(session, job_id, status, message, worker=worker, at=now)
    return next_waiting(session, tenant)


# ---------------------------------------------------------------------------------- reconciler


def stale_queued(
    session: Session,
    db: Database,
    older_than: float,
    *,
    grace: float = 2.0,
    longest: float = 3600.0,
) -> list[str]:
    """Queued jobs whose message may be lost: never sent, or sent long enough ago.

    A job waiting behind busy workers still has its message in Redis, so re-sends back off:
    the k-th re-send waits ``older_than * 2**(k-1)`` seconds (at most ``longest``). A job
    submitted in the last ``grace`` seconds is left alone: its submit is still sending.
    """
    now = db.now(session)
    candidates = session.execute(
        select(Job.id, Job.dispatched_at, Job.dispatch_count)
        .where(Job.status == QUEUED)
        .where(
            or_(
                and_(Job.dispatched_at.is_(None), Job.updated_at < now - timedelta(seconds=grace)),
                Job.dispatched_at < now - timedelta(seconds=older_than),
            )
        )
        .order_by(Job.created_at)
    ).all()
    due = []
    for job_id, dispatched_at, count in candidates:
        wait = min(older_than * 2 ** max(count - 1, 0), longest)
        if dispatched_at is None or dispatched_at < now - timedelta(seconds=wait):
            due.append(job_id)
    return due


def release_lost(session: Session, db: Database, job_id: str, worker: str, reason: str) -> bool:
    """The job's worker process is known to be dead (its parent saw it die): release the lease
    now instead of waiting for it to expire. Only a lease held by that process is released
    (owners are ``<worker>#<attempt>``). True when the job goes back to the queue; the caller
    sends its message. A job whose cancel was requested ends cancelled instead."""
    now = db.now(session)
    held = (
        update(Job)
        .where(
            Job.id == job_id,
            Job.status == RUNNING,
            Job.lease_owner.startswith(f"{worker}#", autoescape=True),
        )
        .execution_options(synchronize_session=False)
    )
    released = dict(lease_owner=None, lease_expires_at=None, updated_at=now)
    if session.execute(
        held.where(Job.cancel_requested.is_(True)).values(
            status=CANCELLED, finished_at=now, **released
        )
    ).rowcount:
        add_event(session, job_id, "cancelled", f"{reason}, after a cancel request", at=now)
        return False
    done = session.execute(
        held.values(status=QUEUED, dispatched_at=now, dispatch_count=1, **released)
    ).rowcount
    if done:
        add_event(session, job_id, "worker_lost", f"{reason}; back to the queue", at=now)
        add_event(session, job_id, "dispatched", "ahead of the queue", at=now)
    return bool(done)


def requeue_expired(session: Session, db: Database) -> list[str]:
    """Running jobs whose worker stopped renewing its lease go back to the queue.

    A job whose cancel was requested ends cancelled instead: nobody is left to stop it.
    """
    now = db.now(session)
    expired = session.execute(
        select(Job.id, Job.lease_owner, Job.cancel_requested)
        .where(Job.status == RUNNING, Job.lease_expires_at < now)
        .with_for_update(skip_locked=True)
    ).all()
    requeued = []
    for job_id, owner, cancel_requested in expired:
        still_expired = update(Job).where(
            Job.id == job_id,
            Job.status == RUNNING,
            Job.lease_owner == owner,
            Job.lease_expires_at < now,
        )
        if cancel_requested:
            values = dict(status=CANCELLED, finished_at=now)
            kind, message = "cancelled", f"the lease of {owner} expired after a cancel request"
        else:
            values = dict(status=QUEUED, dispatched_at=None, dispatch_count=0)
            kind, message = "lease_expired", f"the lease of {owner} expired; back to the queue"
        done = session.execute(
            still_expired.values(lease_owner=None, lease_expires_at=None, updated_at=now, **values)
        ).rowcount
        if done:
            add_event(session, job_id, kind, message, at=now)
            if not cancel_requested:
                requeued.append(job_id)
    return requeued


__all__ = [
    "CANCELLED",
    "FAILED",
    "QUEUED",
    "RUNNING",
    "SUCCEEDED",
    "JobConflict",
    "JobNotFound",
    "LeaseLost",
]
