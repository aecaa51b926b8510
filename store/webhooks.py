"""Job callbacks: each tenant's signing secret, and what a callback says."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy.orm import Session

from .models import Job, WebhookSecret, utcnow

SIGNATURE_HEADER = "X-Backprop-Signature"
TIMESTAMP_HEADER = "X-Backprop-Timestamp"


def secret_for(session: Session, tenant: str, rotate: bool = False) -> str:
    """The tenant's secret (made on first use); ``rotate`` replaces it."""
    row = session.get(WebhookSecret, tenant)
    if row is None or rotate:
        value = "whsec_" + secrets.token_hex(24)
        if row is None:
            session.add(WebhookSecret(tenant=tenant, secret=value, created_at=utcnow()))
        else:
            row.secret, row.created_at = value, utcnow()
        session.flush()
        return value
    return row.secret


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``v1=`` and the hex HMAC-SHA256 of "<timestamp>.<body>", as Stripe signs."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def payload(job: Job) -> dict:
    """A callback's body: the job's final state (``api.schemas.CallbackPayload``)."""
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


def _iso(moment) -> str | None:
    return moment.isoformat() if moment else None
