"""Liveness and readiness, for load balancers and orchestrators (no token needed).
The reason to change is what a probe checks."""

from __future__ import annotations

from flask import Blueprint, Response

from .openapi import operation
from .problems import ApiProblem
from .schemas.health import Health, Readiness
from .services import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@operation("healthz", responses={200: Health}, secure=False)
def healthz():
    """The process is up."""
    return Response(Health(status="ok").model_dump_json(), mimetype="application/json")


@bp.get("/readyz")
@operation("readyz", responses={200: Readiness}, secure=False)
def readyz():
    """The database and the broker answer (else 503)."""
    s = services()
    checks = {}
    for name, probe in (("database", s.db.ping), ("broker", s.dispatcher.ping)):
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:  # any failure means "not ready"; say which
            checks[name] = f"unavailable ({type(exc).__name__})"
    if any(v != "ok" for v in checks.values()):
        detail = "; ".join(f"{k}: {v}" for k, v in checks.items())
        raise ApiProblem(503, detail, slug="not-ready", headers={"Retry-After": "5"})
    return Response(
        Readiness(status="ready", checks=checks).model_dump_json(), mimetype="application/json"
    )
