"""Bearer tokens: every /v1 request names its tenant through its token.

A token's tenant is kept per process for AUTH_CACHE_SECONDS after a database lookup, so the
hot path of polling clients costs no database round trip for authentication. A revoked
token therefore stops working within AUTH_CACHE_SECONDS; an expiry is checked on every
request. Unknown tokens are never cached (there are endlessly many).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime

from cachetools import TTLCache
from flask import g, request

from store import tokens
from store.models import utcnow

from .problems import ApiProblem
from .services import services

CHALLENGE = 'Bearer realm="backprop-jobs"'


@dataclass(frozen=True)
class Identity:
    tenant: str
    token_id: int
    expires_at: datetime | None


class TokenCache:
    """Token hash -> Identity for ``ttl`` seconds, bounded in size, safe across threads."""

    def __init__(self, ttl: float, size: int = 4096):
        self._entries: TTLCache | None = TTLCache(size, ttl) if ttl > 0 else None
        self._lock = threading.Lock()

    def get(self, digest: str) -> Identity | None:
        if self._entries is None:
            return None
        with self._lock:
            return self._entries.get(digest)

    def put(self, digest: str, identity: Identity) -> None:
        if self._entries is not None:
            with self._lock:
                self._entries[digest] = identity


def authenticate() -> None:
    """before_request for /v1: sets g.tenant, or answers 401 with WWW-Authenticate."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiProblem(
            401,
            "send Authorization: Bearer <token>",
            slug="unauthorized",
            headers={"WWW-Authenticate": CHALLENGE},
        )
    s = services()
    digest = tokens.hash_token(token)
    identity = s.tokens.get(digest)
    if identity is None or (identity.expires_at is not None and identity.expires_at <= utcnow()):
        with s.db.reading() as session:
            row = tokens.authenticate(session, token)
            identity = row and Identity(row.tenant, row.id, row.expires_at)
        if identity is None:
            raise ApiProblem(
                401,
                "the token is unknown, expired or revoked",
                slug="unauthorized",
                headers={"WWW-Authenticate": f'{CHALLENGE}, error="invalid_token"'},
            )
        s.tokens.put(digest, identity)
    g.tenant, g.token_id = identity.tenant, identity.token_id
