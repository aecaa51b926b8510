"""/openapi.json (generated from the operations' models) and interactive docs at /docs.

The service's limits are settings, so the document states them from the settings it runs
with: most as ``maximum``/``maxItems`` on the schema, the rest in the operations' rules. The
reason to change is how the document and its interactive page are served.
"""

from __future__ import annotations

from importlib.metadata import version

from flask import Blueprint, current_app, jsonify
from flask_swagger_ui import get_swaggerui_blueprint

from .openapi import build_document
from .services import services

bp = Blueprint("openapi", __name__)

DESCRIPTION = (
    "Train neural networks over HTTP. Submit a job (structure, data, epochs, learning rate), "
    "poll it, read its metrics and model, predict. Every error is an RFC 9457 problem "
    "(application/problem+json) with the request's id; a 422 names each bad field in errors[]."
    "\n\nLimits of this server: at most {max_layers} layers of at most {max_layer_width} units, "
    "{max_parameters} weights and biases, "
    "{max_epochs} epochs, {max_runtime_seconds} s of training, a compute budget of "
    "{max_job_cost:.3g} (samples x epochs x parameters), {max_content_length} bytes of body, "
    "{max_queued_jobs_per_tenant} queued jobs per tenant, {rate_limit} per tenant, and "
    "{auth_failure_limit} failed authentications per client address."
)


@bp.get("/openapi.json")
def openapi_json():
    document = current_app.extensions.get("openapi")
    if document is None:
        settings = services().settings.model_dump()
        document = build_document(
            current_app,
            title="backprop-jobs",
            version=version("backprop-jobs"),
            description=DESCRIPTION.format(**settings),
            settings=settings,
        )
        state_limits(document["components"]["schemas"], settings)
        current_app.extensions["openapi"] = document
    return jsonify(document)


def state_limits(schemas: dict, settings: dict) -> None:
    """Write the settings' limits into the request schemas, where JSON Schema can say them."""
    job = schemas["JobCreate"]["properties"]
    job["structure"]["maxItems"] = settings["max_layers"]
    job["structure"]["items"]["maximum"] = settings["max_layer_width"]
    job["epochs"]["maximum"] = settings["max_epochs"]
    runtime = schemas["Options"]["properties"]["max_runtime_seconds"]
    next(s for s in runtime["anyOf"] if s.get("type") == "integer")["maximum"] = settings[
        "max_runtime_seconds"
    ]


docs = get_swaggerui_blueprint("/docs", "/openapi.json", config={"app_name": "backprop-jobs"})

# swagger-ui's page: its scripts and styles from this site, one inline script (its
# configuration) and inline styles; nothing from elsewhere, no framing
DOCS_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


@docs.after_request
def _docs_headers(response):
    response.headers["Content-Security-Policy"] = DOCS_SECURITY_POLICY
    return response
