"""Who runs a job: the task messages that offer it, the claim that takes its lease, the
renewals that keep it (a lease's recovery when its worker stops renewing it or dies:
``store.recovery``). The reason to change is how jobs are handed to workers.

A worker may write to a job only while it holds the job's lease (``lease_owner``); every
such write is one conditional UPDATE that names the owner (``guarded``), so a worker that
lost its lease (expired, and claimed by another) finds zero rows and stops (``LeaseLost``).
Celery messages only say "this job may be ready"; ``claim`` decides.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from sqlalchemy import (
    Interval,
    String,
    and_,
    bindparam,
    cast,
    func,
    insert,
    literal,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.orm import Session, make_transient_to_detached

from .db import Database
from .jobs import add_event
from .models import CANCELLED, FAILED, QUEUED, RUNNING, Job, JobEvent, UTCDateTime


class LeaseLost(Exception):
    """This worker no longer holds the job: another claimed it, or it ended."""


# ---------------------------------------------------------------------------------- task messages


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


# ---------------------------------------------------------------------------------- claim


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

    The statements are built once (``_HELD``, ``_CLAIM``, ``EVENT``); on PostgreSQL the
    advisory lock is taken by the SELECT that reads the tenant, and the UPDATE reads the
    database's clock itself (``statement_timestamp()``, one value for the whole statement)
    and records the "claimed" event in the same statement.
    The returned job is built from the UPDATE's RETURNING row, detached from any session.
    """
    server_clock = not db.is_sqlite
    limited = max_running is not None
    held = session.execute(_HELD[limited and server_clock], {"job_id": job_id}).first()
    if held is None:
        return None
    if held.lease_owner == owner:  # a retried claim whose first commit went through
        return session.get(Job, job_id, populate_existing=True)
    # on PostgreSQL with ``limited``, _HELD took the tenant's advisory lock, held to the
    # commit: a claim counted before this one committed would not see it. The caller
    # commits right after (worker.training.claim), before any data loads
    claim_statement, claimable = _CLAIM[limited, server_clock]
    values = dict(job_id=job_id, max_attempts=max_attempts, max_running=max_running)
    lease = timedelta(seconds=lease_seconds)
    for _ in range(CLAIM_TRIES):
        if server_clock:  # the UPDATE records its "claimed" event itself
            bound = dict(values, owner=owner, lease=lease, worker=worker)
            row = session.execute(claim_statement, bound).first()
        else:
            now = db.now(session)
            bound = dict(values, now=now, owner=owner, expires=now + lease)
            row = session.execute(claim_statement, bound).first()
            if row is not None:
                record_event(
                    session, job_id, "claimed", f"attempt {row.attempts}", worker=worker,
                    at=row.updated_at,
                )  # fmt: skip
        if row is not None:
            job = Job(**row._mapping)
            make_transient_to_detached(job)  # as if loaded by a session that has closed
            return job
        now = db.now(session)
        if session.execute(claimable, dict(values, now=now)).first() is None:
            if limited and _deferred(session, job_id, now, max_attempts):
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
    waiting = _claim_conditions(job_id, now, max_attempts) + [Job.status == QUEUED]
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


def _claim_conditions(job_id: str, now, max_attempts: int) -> list:
    """What makes the job claimable but for the running-jobs limit (``_deferred``)."""
    return [
        Job.id == job_id,
        _claimable(now),
        Job.cancel_requested.is_(False),
        Job.attempts < max_attempts,
    ]


_job, _event = Job.__table__, JobEvent.__table__

#: the job's tenant and lease owner; on PostgreSQL with the running-jobs limit (``True``) the
#: same SELECT takes the tenant's advisory lock, held to the commit
_HELD = {
    False: select(_job.c.tenant, _job.c.lease_owner).where(_job.c.id == bindparam("job_id")),
    True: select(
        _job.c.tenant,
        _job.c.lease_owner,
        func.pg_advisory_xact_lock(func.hashtext(_job.c.tenant)).label("turn"),
    ).where(_job.c.id == bindparam("job_id")),
}

#: the database's clock inside a PostgreSQL statement: one value for all its uses there
#: (``clock_timestamp()`` would give each use its own), as naive UTC like the columns
SERVER_NOW = type_coerce(func.timezone("UTC", func.statement_timestamp()), UTCDateTime)


def _claim_statements(limited: bool, server_clock: bool):
    """The claim's UPDATE and its "still claimable?" SELECT, built once (``_CLAIM``) and
    bound per call: job_id, max_attempts, owner, and the time: ``lease`` (a timedelta) with
    ``server_clock`` (PostgreSQL: the UPDATE reads the clock itself), else ``now`` and
    ``expires`` (and max_running when ``limited``). The SELECT is always bound with ``now``.
    The parameters are typed, or PostgreSQL reads a bare timestamp parameter as timestamptz
    in its own zone. The UPDATE returns the claimed row, every column; with
    ``server_clock`` it records the claim's event too (bound: ``worker``)."""

    def conditions(now):
        found = [
            _job.c.id == bindparam("job_id"),
            or_(
                _job.c.status == QUEUED,
                and_(_job.c.status == RUNNING, _job.c.lease_expires_at < now),
            ),
            _job.c.cancel_requested.is_(False),
            _job.c.attempts < bindparam("max_attempts"),
        ]
        if limited:
            other = _job.alias("other")
            running = (
                select(func.count())
                .select_from(other)
                .where(
                    other.c.tenant == _job.c.tenant,
                    other.c.status == RUNNING,
                    other.c.lease_expires_at > now,
                )
                .scalar_subquery()
            )
            found.append(running < bindparam("max_running"))
        return found

    bound_now = bindparam("now", type_=UTCDateTime)
    if server_clock:
        now, expires = SERVER_NOW, SERVER_NOW + bindparam("lease", type_=Interval)
    else:
        now, expires = bound_now, bindparam("expires", type_=UTCDateTime)
    target = select(_job.c.id).where(*conditions(now)).with_for_update(skip_locked=True)
    update_ = (
        update(_job)
        .where(_job.c.id == target.scalar_subquery())
        .values(
            status=RUNNING,
            lease_owner=bindparam("owner"),
            lease_expires_at=expires,
            attempts=_job.c.attempts + 1,
            started_at=func.coalesce(_job.c.started_at, now),
            updated_at=now,
        )
        .returning(*_job.c)
    )
    claimable = select(_job.c.id).where(*conditions(bound_now))
    if not server_clock:
        return update_, claimable
    # PostgreSQL: the claimed row's event in the same statement, from the UPDATE's RETURNING
    # row (its new attempt count, its time)
    claimed = update_.cte("claimed")
    history = insert(_event).from_select(
        ["job_id", "at", "kind", "message", "worker"],
        select(
            claimed.c.id,
            claimed.c.updated_at,
            literal("claimed"),
            literal("attempt ") + cast(claimed.c.attempts, String),
            bindparam("worker", type_=String),
        ),
    )
    return select(claimed).add_cte(history.cte("history")), claimable


#: (the claim, whether it is still claimable), by (the running-jobs limit, the server's clock)
_CLAIM = {
    (limited, server_clock): _claim_statements(limited, server_clock)
    for limited in (False, True)
    for server_clock in (False, True)
}

#: one history row, bound per call (``record_event``)
EVENT = insert(_event).values(
    job_id=bindparam("job_id"),
    at=bindparam("at", type_=UTCDateTime),
    kind=bindparam("kind"),
    message=bindparam("message"),
    worker=bindparam("worker"),
)


def record_event(
    session: Session, job_id: str, kind: str, message: str = "", *, worker=None, at
) -> None:
    """``jobs.add_event`` as one prebuilt INSERT, executed at once (not at the next flush):
    a transaction that records events this way records all of its events this way before
    any ORM one, so their ids keep their order."""
    session.execute(EVENT, dict(job_id=job_id, at=at, kind=kind, message=message, worker=worker))


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


# ---------------------------------------------------------------------------------- lease


def guarded():
    """An UPDATE of the job that finds its row only while ``owner`` holds the lease, to be
    built once and bound per call with ``job_id`` and ``owner``."""
    return update(_job).where(
        _job.c.id == bindparam("job_id"),
        _job.c.lease_owner == bindparam("owner"),
        _job.c.status == RUNNING,
    )


def renew_lease(
    session: Session, db: Database, job_id: str, owner: str, lease_seconds: float
) -> bool:
    """Extend the lease; returns cancel_requested. Raises LeaseLost if it is gone."""
    lease = timedelta(seconds=lease_seconds)
    values = {"job_id": job_id, "owner": owner}
    if db.is_sqlite:
        row = session.execute(_RENEW[False], dict(values, expires=db.now(session) + lease))
    else:
        row = session.execute(_RENEW[True], dict(values, lease=lease))
    row = row.first()
    if row is None:
        raise LeaseLost(job_id)
    return bool(row[0])


#: the heartbeat's guarded UPDATE, by whether it reads the server's clock (PostgreSQL)
_RENEW = {
    server_clock: guarded()
    .values(
        lease_expires_at=SERVER_NOW + bindparam("lease", type_=Interval)
        if server_clock
        else bindparam("expires", type_=UTCDateTime)
    )
    .returning(_job.c.cancel_requested)
    for server_clock in (False, True)
}
