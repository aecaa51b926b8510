"""Operations declared once, with their pydantic models: the same declaration parses each
request and writes the OpenAPI 3.1 document served at ``/openapi.json``.

``@operation(...)`` on a view names its request body and query models and its responses; the
wrapper parses and validates the request (400 for text that is not JSON, 413 for a body over
the limit, 415 for another content type, 422 naming each bad field) and calls the view with
``body=`` and ``query=``. ``build_document`` walks the app's URL map and documents every
operation, adding the problem responses that each kind of operation can answer.

We write this (about 250 lines) rather than use flask-openapi3 or spectree: both turn malformed
JSON into 422 and label problem responses ``application/json``, and both parse with
``json.loads`` + ``model_validate`` anyway (see the README's "Libraries" section).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from flask import Flask, current_app, g, request
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from werkzeug.exceptions import RequestEntityTooLarge

from .problems import PROBLEM_JSON, ApiProblem, validation_problem
from .schemas import Problem


@dataclass
class Operation:
    operation_id: str
    summary: str
    responses: dict[int, type[BaseModel] | None]
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    secure: bool = True
    links: dict[int, dict] = field(default_factory=dict)
    binary: dict[int, str] = field(default_factory=dict)  # status -> extra media type
    headers: dict[str, str] = field(default_factory=dict)  # optional request headers


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
):
    """Declare a view as an API operation (see the module docstring)."""
    op = Operation(
        operation_id, "", responses, body, query, secure, links or {}, binary or {}, headers or {}
    )

    def decorate(view):
        op.summary = (view.__doc__ or "").strip().splitlines()[0] if view.__doc__ else ""

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


class _Duplicate(ValueError):
    pass


def _reject_duplicates(pairs):
    result = {}
    for key, value in pairs:
        if key in result:
            raise _Duplicate(f"duplicate key {key!r} in a JSON object")
        result[key] = value
    return result


def parse_body(model: type[BaseModel]) -> BaseModel:
    if request.mimetype != "application/json":
        raise ApiProblem(
            415,
            f"send the body as application/json, not {request.mimetype or 'nothing'!r}",
            slug="unsupported-media-type",
        )
    raw = request.get_data(cache=False)  # 413 past MAX_CONTENT_LENGTH (Content-Length)
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is None and limit and len(raw) >= limit:
        # a chunked body stops at the limit without an error: is there more behind it?
        if request.environ["wsgi.input"].read(1):
            raise RequestEntityTooLarge()
    g.body_sha256 = hashlib.sha256(raw).hexdigest()  # what an Idempotency-Key is bound to
    try:
        data = json.loads(raw, object_pairs_hook=_reject_duplicates)
    except _Duplicate as exc:
        raise ApiProblem(400, f"malformed JSON: {exc}", slug="malformed-json") from None
    except RecursionError:
        raise ApiProblem(400, "malformed JSON: nested too deeply", slug="malformed-json") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiProblem(400, f"malformed JSON: {exc}", slug="malformed-json") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _Invalid(exc) from None


def parse_query(model: type[BaseModel]) -> BaseModel:
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise _Invalid(exc, ("query",)) from None


class _Invalid(Exception):
    def __init__(self, exc: ValidationError, where: tuple = ()):
        self.exc, self.where = exc, where


def init_app(app: Flask) -> None:
    app.register_error_handler(_Invalid, lambda e: validation_problem(e.exc, e.where))


# ---------------------------------------------------------------------------------- document

COMMON = {503: "The database is unavailable", 500: "Unexpected error (see request_id)"}
SECURE = {401: "Missing, unknown, expired or revoked token", 429: "Too many requests"}
WITH_BODY = {
    400: "Malformed JSON",
    413: "Body too large",
    415: "Not application/json",
    422: "Invalid field(s)",
}


def build_document(app: Flask, *, title: str, version: str, description: str) -> dict:
    operations = []
    for rule in app.url_map.iter_rules():
        op = getattr(app.view_functions[rule.endpoint], "openapi", None)
        if op is not None:
            methods = sorted(rule.methods - {"HEAD", "OPTIONS"})
            path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
            operations.append((path, methods[0].lower(), op, list(rule.arguments)))

    models = {Problem}
    for _, _, op, _ in operations:
        models |= {m for m in (op.body, op.query, *op.responses.values()) if m is not None}
    modes = [
        (m, "validation" if m in _request_models(operations) else "serialization")
        for m in sorted(models, key=lambda m: m.__name__)
    ]
    _, defs = models_json_schema(modes, ref_template="#/components/schemas/{model}")

    paths: dict[str, dict] = {}
    for path, method, op, arguments in operations:
        paths.setdefault(path, {})[method] = _operation(op, arguments)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
    }


def _request_models(operations) -> set:
    return {m for _, _, op, _ in operations for m in (op.body, op.query) if m is not None}


def _ref(model) -> dict:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _operation(op: Operation, arguments: list[str]) -> dict:
    doc: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary}
    params = [
        {"name": a, "in": "path", "required": True, "schema": {"type": "string"}}
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
        {
            "name": name,
            "in": "header",
            "required": False,
            "description": text,
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": 255,
                "pattern": "^[\\x21-\\x7e]+$",
            },
        }
        for name, text in op.headers.items()
    ]
    if params:
        doc["parameters"] = params
    if op.body is not None:
        doc["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _ref(op.body)}},
        }
    doc["security"] = [{"bearerAuth": []}] if op.secure else []

    errors = dict(COMMON)
    if op.secure:
        errors |= SECURE
    if op.body is not None:
        errors |= WITH_BODY
    if op.query is not None:
        errors[422] = "Invalid query parameter(s)"
    if arguments:
        errors[404] = "No such job for this tenant"
    responses: dict[str, Any] = {}
    for status in sorted(set(op.responses) | set(errors)):
        model = op.responses.get(status, Problem)
        desc = errors.get(status) or HTTPStatus(status).phrase
        response: dict[str, Any] = {"description": desc}
        if model is not None:
            media = PROBLEM_JSON if model is Problem else "application/json"
            response["content"] = {media: {"schema": _ref(model)}}
        if status in op.binary:
            response.setdefault("content", {})[op.binary[status]] = {
                "schema": {"type": "string", "contentMediaType": op.binary[status]}
            }
        if status in op.links:
            response["links"] = op.links[status]
        if status == 401:
            response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        if status in (429, 503):
            response["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
        responses[str(status)] = response
    doc["responses"] = responses
    return doc
