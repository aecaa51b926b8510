"""Request rate per tenant (flask-limiter, counted in Redis) and job quotas per tenant.
The reason to change is how requests are counted, or how a full queue is refused."""

from __future__ import annotations

from flask import Flask, g, request
from flask_limiter import Limiter

from backprop.settings import Settings
from store import jobs

from . import rate_window
from .problems import ApiProblem


def _rate_key() -> str:
    """Who is counted: the tenant (authentication ran first), all its tokens together."""
    tenant = g.get("tenant")
    if tenant is not None:
        return "tenant:" + tenant
    return "addr:" + (request.remote_addr or "unknown")


def init_app(app: Flask, settings: Settings) -> Limiter:
    """Register after authentication (before_request hooks run in order)."""
    return Limiter(
        _rate_key,
        app=app,
        default_limits=[settings.rate_limit],
        default_limits_exempt_when=lambda: not request.path.startswith("/v1/"),
        storage_uri=settings.limiter_storage_url,
        storage_options={
            "socket_connect_timeout": settings.broker_timeout_seconds,
            "socket_timeout": settings.broker_timeout_seconds,
        },
        key_prefix="backprop-rate",
        headers_enabled=True,  # X-RateLimit-*; Retry-After is kept to 429 (see api/__init__)
        # Redis down: count in memory per process instead of refusing every request
        swallow_errors=True,
        in_memory_fallback_enabled=True,
        # the sliding-window counter, counted and read for the headers in one round trip
        strategy=rate_window.NAME,
    )


def queue_full(exc: jobs.QueueFull) -> ApiProblem:
    return ApiProblem(
        429,
        f"the tenant has {exc.queued} queued jobs, the limit is {exc.limit}; "
        "retry when some have started",
        slug="queue-quota",
        headers={"Retry-After": "30"},
    )
