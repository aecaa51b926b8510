"""Operations declared once, with their pydantic models: the same declaration parses each
request and writes the OpenAPI 3.1 document served at ``/openapi.json``.

``@operation(...)`` on a view names its request body and query models and its responses; the
wrapper parses and validates the request (``api/body.py``) and calls the view with ``body=``
and ``query=``. ``build_document`` walks the app's URL map and documents every operation,
adding the problem responses that each kind of operation can answer. The reason to change is
what the document says about an operation.

We write this rather than use flask-openapi3 or spectree: both turn malformed JSON into 422
and label problem responses ``application/json``, and both parse with ``json.loads`` +
``model_validate`` anyway (see the README's "Libraries" section).
"""

from __future__ import annotations

import functools
import inspect
import re
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from store.webhooks import (
    EVENT_HEADER,
    JOB_ENDED,
    SIGNATURE_HEADER,
    SWEEP_ENDED,
    TIMESTAMP_HEADER,
)

from .auth import SESSION_COOKIE, SESSION_METHODS
from .body import parse_body, parse_query
from .problems import PROBLEM_JSON
from .schemas.common import Problem
from .schemas.job_views import CallbackPayload
from .schemas.sweeps import SweepCallbackPayload


@dataclass(frozen=True)
class Rule:
    """A rule JSON Schema cannot state (it spans fields, or the stored job): a request that
    breaks it is schema-valid and still gets 422, with ``type`` in each field error."""

    type: str
    text: str  # may name settings: "{max_job_cost:.3g}"


@dataclass
class Operation:
    operation_id: str
    summary: str
    responses: dict[int, type[BaseModel] | None]
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    secure: bool = True
    links: dict[int, dict] = field(default_factory=dict)
    binary: dict[int, str] = field(default_factory=dict)  # status -> the only media type
    headers: dict[str, dict] = field(default_factory=dict)  # request header -> parameter
    response_headers: dict[int, dict[str, dict]] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    description: str = ""
    # bodies the view reads itself (streamed): media type -> a model, or a schema
    raw_bodies: dict[str, Any] = field(default_factory=dict)
    # status -> the media type object of a binary answer (an event stream's itemSchema)
    media_schemas: dict[int, dict] = field(default_factory=dict)


def operation(
    operation_id: str,
    *,
    responses: dict,
    body=None,
    query=None,
    secure=True,
    links=None,
    binary=None,
    headers=None,
    response_headers=None,
    rules=(),
    raw_bodies=None,
    media_schemas=None,
):
    """Declare a view as an API operation (see the module docstring)."""
    op = Operation(
        operation_id,
        "",
        responses,
        body,
        query,
        secure,
        links or {},
        binary or {},
        headers or {},
        response_headers or {},
        tuple(rules),
        raw_bodies=raw_bodies or {},
        media_schemas=media_schemas or {},
    )

    def decorate(view):
        summary, _, rest = inspect.cleandoc(view.__doc__ or "").partition("\n")
        op.summary, op.description = summary, rest.strip()

        @functools.wraps(view)
        def wrapper(**kwargs):
            if body is not None:
                kwargs["body"] = parse_body(body)
            if query is not None:
                kwargs["query"] = parse_query(query)
            return view(**kwargs)

        wrapper.openapi = op
        return wrapper

    return decorate


COMMON = {
    414: "The URL is longer than the server's request line limit (4,094 bytes)",
    431: "The request's headers are too large",
    500: "Unexpected error (see request_id)",
    503: "The database is unavailable; retry after Retry-After",
}
SECURE = {
    401: "Missing, unknown, expired or revoked token",
    429: "Too many requests: the tenant's rate limit (RATE_LIMIT), or too many failed "
    "authentications from this client address (AUTH_FAILURE_LIMIT), or the tenant's queue "
    "quota (MAX_QUEUED_JOBS_PER_TENANT, on submit); wait Retry-After seconds",
}
WITH_BODY = {
    400: "Not strict JSON (RFC 8259, UTF-8, no NaN or Infinity, no duplicate keys)",
    413: "Body too large (MAX_CONTENT_LENGTH)",
    415: "Not application/json",
    422: "Invalid field(s): each one is named in errors[]",
}
RAW_BODY = {
    400: "A malformed body: a truncated or broken .npz, CSV that is not UTF-8 text, JSON that "
    "is not strict",
    413: "The body is over MAX_DATASET_BYTES, or the tenant's stored data sets would be over "
    "MAX_DATASET_STORAGE_BYTES",
    415: "Not one of the documented media types",
}
INTEGER = {"type": "integer"}
ALWAYS = {
    "X-Request-Id": {
        "description": "The request's id: the client's X-Request-Id if it sent a usable one, "
        "else a new one; quoted in logs and in problem details",
        "required": True,
        "schema": {"type": "string"},
    }
}
RATE_LIMIT = {
    "X-RateLimit-Limit": {"description": "Requests allowed per window", "schema": INTEGER},
    "X-RateLimit-Remaining": {"description": "Requests left in this window", "schema": INTEGER},
    "X-RateLimit-Reset": {"description": "When the window resets (Unix time)", "schema": INTEGER},
}
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying",
        "required": True,
        "schema": INTEGER,
    }
}
WWW_AUTHENTICATE = {
    "WWW-Authenticate": {
        "description": "The bearer challenge (RFC 6750)",
        "required": True,
        "schema": {"type": "string"},
    }
}


def build_document(
    app: Flask, *, title: str, version: str, description: str, settings: dict
) -> dict:
    """``settings`` fill in the limits that rules' texts name."""
    operations = []
    for rule in app.url_map.iter_rules():
        op = getattr(app.view_functions[rule.endpoint], "openapi", None)
        if op is not None:
            methods = sorted(rule.methods - {"HEAD", "OPTIONS"})
            path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
            operations.append((path, methods[0].lower(), op, list(rule.arguments)))

    models = {Problem, CallbackPayload, SweepCallbackPayload}
    for _, _, op, _ in operations:
        models |= {m for m in (op.body, op.query, *op.responses.values()) if m is not None}
        models |= {m for m in op.raw_bodies.values() if isinstance(m, type)}
    modes = [
        (m, "validation" if m in _request_models(operations) else "serialization")
        for m in sorted(models, key=lambda m: m.__name__)
    ]
    _, defs = models_json_schema(modes, ref_template="#/components/schemas/{model}")

    paths: dict[str, dict] = {}
    for path, method, op, arguments in operations:
        paths.setdefault(path, {})[method] = _operation(op, arguments, settings, method)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "webhooks": _webhooks(),
        "components": {
            "schemas": defs.get("$defs", {}),
            "headers": ALWAYS | RATE_LIMIT | RETRY_AFTER | WWW_AUTHENTICATE,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                "dashboardSession": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": SESSION_COOKIE,
                    "description": "The dashboard's signed session, set by signing in at "
                    "/sign-in with a token: reads (GET, HEAD) only; every write needs the "
                    "bearer token",
                },
            },
        },
    }


def _webhooks() -> dict:
    """What the service POSTs to a job's and to a sweep's callback_url (worker/webhooks.py)."""
    return {
        "jobFinished": _webhook(
            "jobFinished",
            "A job ended: its final state, sent to the job's callback_url",
            JOB_ENDED,
            CallbackPayload,
        ),
        "sweepFinished": _webhook(
            "sweepFinished",
            "A sweep ended and none of its trials still runs: its state, sent to the "
            "sweep's callback_url",
            SWEEP_ENDED,
            SweepCallbackPayload,
        ),
    }


def _webhook(operation_id: str, summary: str, event: str, body) -> dict:
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "description": "Signed: the signature header is `v1=` and the hex HMAC-SHA256 of "
            "`<timestamp>.<body>` with the tenant's webhook secret (POST /v1/webhooks/secret). "
            "Any 2xx answer is a delivery; other answers and no answer are retried with a "
            "doubling backoff, WEBHOOK_ATTEMPTS times in all. Redirects are not followed.",
            "parameters": [
                {
                    "name": TIMESTAMP_HEADER,
                    "in": "header",
                    "required": True,
                    "description": "Unix seconds when it was signed",
                    "schema": {"type": "string", "pattern": "^[0-9]+$"},
                },
                {
                    "name": SIGNATURE_HEADER,
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^v1=[0-9a-f]{64}$"},
                },
                {
                    "name": EVENT_HEADER,
                    "in": "header",
                    "required": True,
                    "description": "Which callback this is",
                    "schema": {"type": "string", "const": event},
                },
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(body)}},
            },
            "responses": {"2XX": {"description": "Received; not sent again"}},
            "security": [],
        }
    }


def _request_models(operations) -> set:
    models = {m for _, _, op, _ in operations for m in (op.body, op.query) if m is not None}
    return models | {
        m for _, _, op, _ in operations for m in op.raw_bodies.values() if isinstance(m, type)
    }


def _ref(model) -> dict:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _operation(op: Operation, arguments: list[str], settings: dict, method: str) -> dict:
    doc: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary}
    text = op.description
    if op.rules:
        rules = [{"type": r.type, "description": r.text.format(**settings)} for r in op.rules]
        listed = "\n".join(f"- `{r['type']}`: {r['description']}" for r in rules)
        text += (
            "\n\nRules the schema cannot state: a request that breaks one gets 422, and the "
            "`type` of each error in `errors[]` names the rule.\n\n" + listed
        )
        doc["x-rules"] = rules
    if text.strip():
        doc["description"] = text.strip()
    params = [
        {
            "name": a,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "minLength": 1, "maxLength": 36},
        }
        for a in sorted(arguments)
    ]
    if op.query is not None:
        schema = op.query.model_json_schema()
        params += [
            {
                "name": name,
                "in": "query",
                "required": name in schema.get("required", []),
                "schema": prop,
            }
            for name, prop in schema["properties"].items()
        ]
    params += [
        {"name": name, "in": "header", "required": False, **parameter}
        for name, parameter in op.headers.items()
    ]
    if params:
        doc["parameters"] = params
    if op.body is not None:
        doc["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(op.body)}},
        }
    elif op.raw_bodies:
        doc["requestBody"] = {
            "required": True,
            "content": {
                media: {"schema": _ref(m) if isinstance(m, type) else m}
                for media, m in op.raw_bodies.items()
            },
        }
    doc["security"] = []
    if op.secure:
        doc["security"] = [{"bearerAuth": []}]
        if method.upper() in SESSION_METHODS:  # the dashboard's pages read through the API
            doc["security"].append({"dashboardSession": []})

    errors = dict(COMMON)
    if op.secure:
        errors |= SECURE
    if op.body is not None or op.raw_bodies:
        errors |= WITH_BODY
    if op.raw_bodies:
        errors |= RAW_BODY
    if op.query is not None:
        errors.setdefault(422, "Invalid query parameter(s): each one is named in errors[]")
    if arguments:
        errors[404] = "No such job or data set for this tenant"
    responses: dict[str, Any] = {}
    for status in sorted(set(op.responses) | set(errors)):
        model = op.responses.get(status)
        if status >= 400:
            model = Problem  # every error is problem+json
        desc = errors.get(status) or HTTPStatus(status).phrase
        response: dict[str, Any] = {"description": desc}
        if status in op.binary:
            media = op.binary[status]
            schema = {"type": "string", "format": "binary", "contentMediaType": media}
            response["content"] = {media: op.media_schemas.get(status, {"schema": schema})}
        elif model is not None:
            media = PROBLEM_JSON if model is Problem else "application/json"
            response["content"] = {media: {"schema": _ref(model)}}
        if status in op.links:
            response["links"] = op.links[status]
        shared = list(ALWAYS)
        if op.secure and status not in (401, 414, 431):
            shared += list(RATE_LIMIT)
        if status == 401:
            shared += list(WWW_AUTHENTICATE)
        if status in (429, 503):
            shared += list(RETRY_AFTER)
        headers = {name: {"$ref": f"#/components/headers/{name}"} for name in shared}
        response["headers"] = headers | op.response_headers.get(status, {})
        responses[str(status)] = response
    doc["responses"] = responses
    return doc
