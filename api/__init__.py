"""The Flask application: ``create_app()`` wires settings, database, dispatcher and blueprints.
The reason to change is what the app is built from, and the order of its request hooks.

gunicorn 'web:create_app()' (the API with the dashboard)
"""

from __future__ import annotations

import logging
import time
import uuid

from flask import Flask, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

from backprop.settings import Settings, get_settings
from messaging.dispatch import Dispatcher
from store.db import get_database

from . import (
    auth,
    body,
    datasets,
    docs,
    errors,
    health,
    job_models,
    jobs,
    limits,
    metrics,
    problems,
    sweeps,
    usage,
    webhooks,
)
from .auth import authenticate
from .services import ModelCache, Services
from .slots import TRANSFERS, WAITS, Slots, give_back_transfer, hold_transfer_for_large_bodies
from .token_cache import FailureLimit, KnownTokens, TokenCache
from .watch import JobWatcher

log = logging.getLogger("backprop.api")


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or get_settings()
    app = Flask("backprop_jobs")
    # Werkzeug enforces this on the body stream, chunked or not: 413 past it
    app.config["MAX_CONTENT_LENGTH"] = settings.max_content_length
    app.extensions["backprop"] = Services(
        settings=settings,
        db=get_database(settings.sqlalchemy_url),
        dispatcher=Dispatcher(settings),
        watcher=JobWatcher(settings),
        tokens=TokenCache(settings.auth_cache_seconds),
        known_tokens=KnownTokens(settings.auth_cache_seconds),
        models=ModelCache(settings.model_cache_bytes),
        waits=Slots(WAITS, settings.max_waits_per_process, settings.max_waits_per_tenant),
        transfers=Slots(
            TRANSFERS, settings.max_transfers_per_process, settings.max_transfers_per_tenant
        ),
    )
    if settings.trusted_proxies:
        # the client's address (failure limits, logs) from X-Forwarded-For, as set by this
        # many proxies in front of the API; without them the header is not believed
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies)
    auth.init_session(app, settings)
    problems.init_app(app)
    errors.init_app(app)
    body.init_app(app)
    # before_request hooks run in this order: request id, token, rate limit
    _request_ids_and_logs(app)
    metrics.init_app(app)
    app.before_request(authenticate)
    limiter = limits.init_app(app, settings)
    app.extensions["limiter"] = limiter
    app.extensions["backprop"].auth_failures = FailureLimit(
        lambda: limiter.limiter, settings.auth_failure_limit
    )
    app.before_request(hold_transfer_for_large_bodies)
    app.teardown_request(give_back_transfer)
    app.register_blueprint(jobs.bp)
    app.register_blueprint(job_models.bp)
    app.register_blueprint(sweeps.bp)
    app.register_blueprint(datasets.bp)
    app.register_blueprint(usage.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(docs.bp)
    app.register_blueprint(docs.docs)
    return app


def _request_ids_and_logs(app: Flask) -> None:
    @app.before_request
    def _start():
        given = request.headers.get("X-Request-Id", "")
        g.request_id = given if 0 < len(given) <= 64 and given.isprintable() else uuid.uuid4().hex
        g.started = time.perf_counter()

    @app.after_request
    def _finish(response):
        # runs after the rate limiter's hook (registered later, so called earlier), which
        # sets Retry-After on every answer: keep it where waiting helps, and keep a problem's
        # own value (a queue quota's) over the rate-limit window's
        own = g.get("retry_after")
        if own is not None:
            response.headers["Retry-After"] = own
        elif response.status_code not in (429, 503):
            response.headers.pop("Retry-After", None)
        response.headers["X-Request-Id"] = g.get("request_id", "")
        # every answer, /docs and problems included, is taken for what its type says
        response.headers["X-Content-Type-Options"] = "nosniff"
        # one line per request: never the body, never the token
        took = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
        log.info(
            "request_id=%s tenant=%s job_id=%s method=%s path=%s status=%s ms=%.1f",
            g.get("request_id"),
            g.get("tenant", "-"),
            g.get("job_id", "-"),
            request.method,
            _printable(request.path),
            response.status_code,
            took,
        )
        return response


def _printable(text: str) -> str:
    """``text`` with every control character escaped (``%0A`` in a path decodes to a line
    break, which would forge a line of the log)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
