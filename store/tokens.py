"""API tokens: random, shown once, stored as SHA-256, compared in constant time.
The reason to change is how a token is made, stored or checked."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from .models import ApiToken, utcnow

PREFIX = "bpj_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class NewToken:
    id: int
    tenant: str
    token: str  # the only time the secret exists outside the client


def create_token(
    session: Session, tenant: str, *, name: str = "", expires_at: datetime | None = None
) -> NewToken:
    # 32 random bytes: a hash without salt is enough, nobody can enumerate the space
    token = PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        tenant=tenant,
        name=name,
        token_hash=hash_token(token),
        prefix=token[: len(PREFIX) + 4],
        created_at=utcnow(),
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    return NewToken(row.id, tenant, token)


def authenticate(session: Session, token: str) -> ApiToken | None:
    """The live token row for a presented token, or None (unknown, revoked or expired)."""
    return by_digest(session, hash_token(token))


def by_digest(session: Session, digest: str) -> ApiToken | None:
    """The live token row of a token's hash (as a dashboard session keeps it), or None."""
    row = session.scalars(select(ApiToken).where(ApiToken.token_hash == digest)).first()
    # the lookup is by hash, so timing reveals nothing of the token; compare anyway
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    now = utcnow()
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        return None
    return row


def live(session: Session) -> list[tuple[str, str, int, datetime | None]]:
    """(hash, tenant, id, expires_at) of every token neither revoked nor expired."""
    now = utcnow()
    query = select(ApiToken.token_hash, ApiToken.tenant, ApiToken.id, ApiToken.expires_at).where(
        ApiToken.revoked_at.is_(None),
        or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now),
    )
    return [tuple(row) for row in session.execute(query)]


def list_tokens(session: Session, tenant: str | None = None) -> list[ApiToken]:
    query = select(ApiToken).order_by(ApiToken.id)
    if tenant:
        query = query.where(ApiToken.tenant == tenant)
    return list(session.scalars(query))


def revoke_token(session: Session, token_id: int) -> bool:
    done = session.execute(
        update(ApiToken)
        .where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    ).rowcount
    return done == 1
