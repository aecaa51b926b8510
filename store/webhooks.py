"""Callbacks of jobs and sweeps: each tenant's signing secret, and what a callback says.
The reason to change is how a callback is signed or what its body says."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from . import sweeps
from .models import Job, Sweep, WebhookSecret, utcnow

SIGNATURE_HEADER = "X-Backprop-Signature"
TIMESTAMP_HEADER = "X-Backprop-Timestamp"
EVENT_HEADER = "X-Backprop-Event"  # which callback it is: JOB_ENDED or SWEEP_ENDED
JOB_ENDED, SWEEP_ENDED = "job.ended", "sweep.ended"


def secret_for(session: Session, tenant: str, rotate: bool = False) -> str:
    """The tenant's secret (made on first use); ``rotate`` replaces it.

    Made with INSERT ... ON CONFLICT: deliveries of one tenant's callbacks run at once on
    several threads and hosts, and the first use by each must end with the same secret, not
    with a unique-key error for all but one (``rotate`` overwrites instead)."""
    _secret = WebhookSecret.__table__
    secret = session.execute(select(_secret.c.secret).where(_secret.c.tenant == tenant)).scalar()
    if secret is not None and not rotate:
        return secret
    dialect_insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    value, now = "whsec_" + secrets.token_hex(24), utcnow()
    made = dialect_insert(_secret).values(tenant=tenant, secret=value, created_at=now)
    if rotate:
        made = made.on_conflict_do_update(
            index_elements=[_secret.c.tenant], set_={"secret": value, "created_at": now}
        )
    else:  # another delivery may have made it meanwhile: its secret is the one
        made = made.on_conflict_do_nothing(index_elements=[_secret.c.tenant])
    session.execute(made)
    return session.execute(select(_secret.c.secret).where(_secret.c.tenant == tenant)).scalar_one()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``v1=`` and the hex HMAC-SHA256 of "<timestamp>.<body>", as Stripe signs."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def payload(job: Job) -> dict:
    """A callback's body: the job's final state (``api.schemas.job_views.CallbackPayload``)."""
    return {
        "id": job.id,
        "name": job.name,
        "labels": job.labels,
        "status": job.status,
        "progress": {"epoch": job.epoch, "epochs": job.epochs},
        "metrics": job.latest_metrics,
        "error": {"type": job.error_type, "message": job.error_message} if job.error_type else None,
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "runtime_seconds": job.runtime_seconds,
        "sweep_id": job.sweep_id,
        "trial": job.trial,
        "stopped_early": bool(job.stopped_early),
    }


def sweep_payload(session: Session, sweep: Sweep) -> dict:
    """A sweep's callback body: its state as it ended
    (``api.schemas.sweeps.SweepCallbackPayload``)."""
    trials = sweeps.trials_of(session, sweep.id)
    metric = sweep.spec["objective"]["metric"]
    best = sweeps.best_trial(sweep, trials)
    run, full = sum(t.epoch for t in trials), sum(t.epochs for t in trials)
    return {
        "id": sweep.id,
        "name": sweep.name,
        "labels": sweep.labels,
        "status": sweep.status,
        "trials": sweep.trials,
        "counts": sweeps.counts(session, sweep),
        "objective": sweep.spec["objective"],
        "best": None
        if best is None
        else {
            "trial": best.trial,
            "job_id": best.id,
            "params": best.params or {},
            "objective": sweeps.objective(best, metric),
        },
        "epochs": {"run": run, "full": full, "saved": 1 - run / full if full else 0.0},
        "created_at": _iso(sweep.created_at),
        "finished_at": _iso(sweep.finished_at),
    }


def _iso(moment) -> str | None:
    return moment.isoformat() if moment else None
