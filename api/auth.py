"""Bearer tokens: every /v1 request names its tenant through its token.

A token's tenant is kept per process for AUTH_CACHE_SECONDS after a database lookup, so the
hot path of polling clients costs no database round trip for authentication. A revoked
token therefore stops working within AUTH_CACHE_SECONDS; an expiry is checked on every
request. Unknown tokens are never cached (there are endlessly many); instead, failed
lookups are counted per client address (AUTH_FAILURE_LIMIT). Past its limit an address's
tokens are no longer looked up one by one: they are checked against the set of every live
token (``KnownTokens``, one query at most once a second per process), so made-up tokens cost
no database work while a valid token from that address is still answered. The client's
address is the connection's, or X-Forwarded-For's behind TRUSTED_PROXIES proxies.

Authentication runs before the rate limiter, so requests are counted per tenant (all its
tokens together) and a request with a bad token is never counted against anybody's tenant.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from cachetools import TTLCache
from flask import g, request, session
from limits import parse
from limits.errors import StorageError
from limits.strategies import RateLimiter
from redis import RedisError

from store import tokens
from store.models import utcnow

from .problems import ApiProblem
from .services import services

CHALLENGE = 'Bearer realm="backprop-jobs"'
STORAGE_ERRORS = (RedisError, StorageError, OSError)


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


SESSION_METHODS = ("GET", "HEAD")
SESSION_COOKIE = "backprop_session"  # the dashboard's signed session


def authenticate() -> None:
    """before_request for /v1: sets g.tenant, or answers 401 with WWW-Authenticate (429
    when the client's address has failed too often).

    A read (GET, HEAD) without an Authorization header may instead come from the
    dashboard's signed session cookie, which keeps the hash of the token signed in with:
    that is how the dashboard's pages read jobs, models and event streams. Writes always
    need the bearer token (the dashboard's own forms carry a CSRF token)."""
    if not request.path.startswith("/v1/"):
        return
    header = request.headers.get("Authorization")
    if header is None and request.method in SESSION_METHODS and session.get("token"):
        identity = lookup(session["token"])
        if identity is None:
            raise _unauthorized("the dashboard's token is expired or revoked: sign in again")
        g.tenant, g.token_id = identity.tenant, identity.token_id
        return
    scheme, _, token = (header or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("send Authorization: Bearer <token>")
    failures = services().auth_failures
    identity = lookup(tokens.hash_token(token), failures)
    if identity is None:
        failures.count(request.remote_addr)
        raise _unauthorized("the token is unknown, expired or revoked", 'error="invalid_token"')
    g.tenant, g.token_id = identity.tenant, identity.token_id


def _unauthorized(detail: str, error: str | None = None) -> ApiProblem:
    challenge = f"{CHALLENGE}, {error}" if error else CHALLENGE
    return ApiProblem(401, detail, slug="unauthorized", headers={"WWW-Authenticate": challenge})


def lookup(digest: str, failures: FailureLimit | None = None) -> Identity | None:
    """The live Identity of a token's hash, from this process's cache or the database; None
    when unknown, expired or revoked. With ``failures``, a client address past its failure
    limit is answered from ``KnownTokens`` instead of a lookup of its own, and a miss there
    is refused (429)."""
    s = services()
    identity = s.tokens.get(digest)
    if identity is not None and (identity.expires_at is None or identity.expires_at > utcnow()):
        return identity
    if failures is not None and failures.exceeded(request.remote_addr):
        identity = s.known_tokens.get(digest, _live_tokens)
        if identity is None:
            raise failures.refusal(request.remote_addr)
    else:
        with s.db.reading() as db_session:
            row = tokens.by_digest(db_session, digest)
            identity = row and Identity(row.tenant, row.id, row.expires_at)
    if identity is not None:
        s.tokens.put(digest, identity)
    return identity


def _live_tokens() -> dict[str, Identity]:
    with services().db.reading() as db_session:
        return {
            digest: Identity(tenant, token_id, expires_at)
            for digest, tenant, token_id, expires_at in tokens.live(db_session)
        }


class KnownTokens:
    """Every live token's Identity by hash, loaded in one query: what a lookup from an
    address past its failure limit is answered from. It is loaded again when a hash is not
    in it and the last load is a second old or more (so a flood of made-up tokens costs one
    query a second per process, and a token made since is found within a second), and
    whenever it is older than ``max_age`` (a revocation takes effect as with the cache)."""

    RELOAD_SECONDS = 1.0

    def __init__(self, max_age: float):
        self.max_age = max(max_age, self.RELOAD_SECONDS)
        self._by_digest: dict[str, Identity] = {}
        self._loaded = -float("inf")
        self._lock = threading.Lock()

    def get(self, digest: str, load: Callable[[], dict[str, Identity]]) -> Identity | None:
        with self._lock:
            age = time.monotonic() - self._loaded
            if age >= self.max_age or (
                age >= self.RELOAD_SECONDS and digest not in self._by_digest
            ):
                self._by_digest, self._loaded = load(), time.monotonic()
            identity = self._by_digest.get(digest)
        if identity is None or (
            identity.expires_at is not None and identity.expires_at <= utcnow()
        ):
            return None
        return identity


class FailureLimit:
    """Failed token lookups per client address, counted with the rate limiter's strategy
    and storage (``limits``), so in memory too when Redis is away; a storage error lets the
    lookup through rather than refuse a client for our outage."""

    def __init__(self, strategy: Callable[[], RateLimiter], limit: str):
        self._strategy, self._item = strategy, parse(limit)

    def exceeded(self, address: str | None) -> bool:
        """True when the address has used up its failures (a storage error says no)."""
        try:
            return not self._strategy().test(self._item, "auth-failures", address or "unknown")
        except STORAGE_ERRORS:
            return False

    def refusal(self, address: str | None) -> ApiProblem:
        try:
            stats = self._strategy().get_window_stats(
                self._item, "auth-failures", address or "unknown"
            )
            wait = max(1, int(stats.reset_time - time.time()) + 1)
        except STORAGE_ERRORS:
            wait = 60
        return ApiProblem(
            429,
            f"too many failed authentications from this address (the limit is "
            f"{self._item}); retry in {wait} s with a valid token",
            slug="too-many-auth-failures",
            headers={"Retry-After": str(wait)},
        )

    def count(self, address: str | None) -> None:
        try:
            self._strategy().hit(self._item, "auth-failures", address or "unknown")
        except STORAGE_ERRORS:
            pass
