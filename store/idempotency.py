"""Idempotent submits with Stripe's semantics: the first answer to a key is kept and replayed.

A record is written in the same transaction as the job it answers, so a retried request either
finds the record (and gets the same job back) or finds nothing (and nothing was created).
The reason to change is how an idempotency record is kept, matched or expired.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .db import Database
from .models import IdempotencyRecord

# a submit's statements, built once and bound per call (Core: a fraction of the ORM's cost)
_RECORD = IdempotencyRecord.__table__
_FIND = select(
    _RECORD.c.request_hash,
    _RECORD.c.status_code,
    _RECORD.c.response,
    _RECORD.c.job_id,
    _RECORD.c.expires_at,
).where(_RECORD.c.tenant == bindparam("tenant"), _RECORD.c.key == bindparam("key"))


def _keep(insert):
    """The record inserted, or put in place of an expired one of the same key; no row when a
    live one holds the key."""
    columns = [column.key for column in _RECORD.columns]
    new = insert(_RECORD).values({c: bindparam(c, type_=_RECORD.c[c].type) for c in columns})
    return new.on_conflict_do_update(
        index_elements=[_RECORD.c.tenant, _RECORD.c.key],
        set_={c: new.excluded[c] for c in columns if c not in ("tenant", "key")},
        where=_RECORD.c.expires_at <= new.excluded.created_at,
    ).returning(_RECORD.c.key)


_KEEP = {"postgresql": _keep(postgresql.insert), "sqlite": _keep(sqlite.insert)}


@dataclass(frozen=True)
class Replay:
    status_code: int
    response: dict
    job_id: str | None


class KeyReused(ValueError):
    """The key was first used with a different request body."""


class KeyTaken(Exception):
    """A live record holds the key: a concurrent twin's, committed first."""


def lookup(
    session: Session, db: Database, tenant: str, key: str, request_hash: str
) -> Replay | None:
    record = session.execute(_FIND, {"tenant": tenant, "key": key}).first()
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
    now: datetime | None = None,
) -> None:
    """Keep the key's answer, in place of an expired record of the same key. A live record
    of the key (a concurrent twin's) raises KeyTaken, before any commit. ``now``: the
    database's clock if the caller read it in this transaction."""
    now = now or db.now(session)
    kept = session.execute(
        _KEEP[session.get_bind().dialect.name],
        dict(
            tenant=tenant,
            key=key,
            request_hash=request_hash,
            status_code=status_code,
            response=response,
            job_id=job_id,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_seconds),
        ),
    ).first()
    if kept is None:
        raise KeyTaken(key)


def purge_expired(session: Session, db: Database) -> int:
    now = db.now(session)
    return session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= now)
    ).rowcount
