"""RFC 9457 problem details for every error the API returns, and nothing else.

Every answer with status >= 400 is ``application/problem+json`` with a ``request_id``.
An unexpected exception becomes a 500 whose body says only that, with the request id; the
traceback goes to the log under the same id.
The reason to change is the problem body, or how an exception becomes one.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

from flask import Flask, Response, current_app, g, request
from pydantic import ValidationError
from sqlalchemy.exc import DataError
from werkzeug.exceptions import HTTPException

from store.dataset_writer import DatasetInvalid
from store.db import is_outage

from .field_errors import SpecError, validation_errors

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("backprop.api")


class ApiProblem(Exception):
    """Raise to answer with a problem: ``raise ApiProblem(409, "the job has not succeeded")``."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        errors: list[dict] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail)
        self.status, self.detail, self.slug = status, detail, slug
        self.errors, self.headers = errors, headers or {}


def problem(
    status: int,
    detail: str | None = None,
    *,
    slug: str | None = None,
    errors: list[dict] | None = None,
    headers: dict | None = None,
) -> Response:
    body = {
        "type": f"/problems/{slug}" if slug else "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    body["instance"] = request.path
    body["request_id"] = getattr(g, "request_id", None)
    if errors is not None:
        body["errors"] = errors
    if headers and "Retry-After" in headers:
        g.retry_after = headers["Retry-After"]
    return Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON, headers=headers)


def validation_problem(exc: ValidationError, where: tuple = ()) -> Response:
    """A pydantic error as a 422 naming each field."""
    errors = validation_errors(exc, where)
    summary = "; ".join(f"{e['field'] or 'body'}: {e['msg']}" for e in errors[:5])
    if len(errors) > 5:
        summary += f"; and {len(errors) - 5} more"
    return problem(422, summary, slug="validation-error", errors=errors)


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiProblem)
    def _api_problem(exc: ApiProblem):
        return problem(
            exc.status, exc.detail, slug=exc.slug, errors=exc.errors, headers=exc.headers
        )

    @app.errorhandler(SpecError)
    def _spec_error(exc: SpecError):
        return problem(422, str(exc), slug="validation-error", errors=exc.errors)

    @app.errorhandler(DatasetInvalid)
    def _dataset_invalid(exc: DatasetInvalid):
        slug = "validation-error" if exc.status == 422 else "malformed-upload"
        return problem(exc.status, str(exc), slug=slug, errors=exc.errors)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        # keep the exception's headers (Allow on a 405, WWW-Authenticate on a 401)
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        detail = exc.description
        if exc.code == 413:
            limit = request.max_content_length or current_app.config["MAX_CONTENT_LENGTH"]
            detail = f"the request body is too large: the limit is {limit} bytes"
        return problem(exc.code or 500, detail, headers=headers)

    @app.errorhandler(DataError)
    def _unstorable(exc: DataError):
        # a value the database refuses (out of its range or encoding): the client's input
        log.warning("database refused a value: %s", type(exc.orig).__name__)
        return problem(422, "a value in the request cannot be stored", slug="validation-error")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        if is_outage(exc):
            log.warning("database unavailable: %s", type(exc).__name__)
            return problem(
                503,
                "the database is unavailable; retry shortly",
                slug="database-unavailable",
                headers={"Retry-After": "5"},
            )
        log.exception("unexpected error (request %s)", getattr(g, "request_id", "-"))
        return problem(
            500,
            "an unexpected error occurred; quote the request_id to support",
            slug="internal-error",
        )
