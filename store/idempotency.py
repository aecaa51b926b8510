"""Idempotent submits with Stripe's semantics: the first answer to a key is kept and replayed.

A record is written in the same transaction as the job it answers, so a retried request either
finds the record (and gets the same job back) or finds nothing (and nothing was created).
The reason to change is how an idempotency record is kept, matched or expired.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session

from .db import Database
from .models import IdempotencyRecord


@dataclass(frozen=True)
class Replay:
    status_code: int
    response: dict
    job_id: str | None


class KeyReused(ValueError):
    """The key was first used with a different request body."""


def lookup(
    session: Session, db: Database, tenant: str, key: str, request_hash: str
) -> Replay | None:
    record = session.get(IdempotencyRecord, (tenant, key))
    if record is None or record.expires_at <= db.now(session):
        return None
    if record.request_hash != request_hash:
        raise KeyReused(key)
    return Replay(record.status_code, record.response, record.job_id)


def remember(
    session: Session,
    db: Database,
    *,
    tenant: str,
    key: str,
    request_hash: str,
    status_code: int,
    response: dict,
    job_id: str | None,
    ttl_seconds: int,
) -> None:
    now = db.now(session)
    # an expired record of the same key gives way
    session.execute(
        delete(IdempotencyRecord).where(
            IdempotencyRecord.tenant == tenant,
            IdempotencyRecord.key == key,
            IdempotencyRecord.expires_at <= now,
        )
    )
    session.add(
        IdempotencyRecord(
            tenant=tenant,
            key=key,
            request_hash=request_hash,
            status_code=status_code,
            response=response,
            job_id=job_id,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_seconds),
        )
    )
    session.flush()  # a concurrent twin fails here (primary key), before any commit


def purge_expired(session: Session, db: Database) -> int:
    now = db.now(session)
    return session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= now)
    ).rowcount
