"""Lost workers' jobs taken back: leases released when a worker process is known dead, leases
that expired, and queued jobs whose task message may be lost (the reconciler's work). The
reason to change is how a job whose worker or message went missing is recovered; the claim
and the lease themselves are ``store.leases``.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from .db import Database
from .jobs import add_event
from .models import CANCELLED, QUEUED, RUNNING, Job


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
