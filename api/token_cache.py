"""What an API process keeps to answer tokens quickly and to refuse guessing: the token
cache, every live token's identity, and the failed lookups per client address. The reason
to change is how these are kept (their sizes, ages and storage); ``api.auth`` uses them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from cachetools import TTLCache
from limits import parse
from limits.errors import StorageError
from limits.strategies import RateLimiter
from redis import RedisError

from store.models import utcnow

from .problems import ApiProblem

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
