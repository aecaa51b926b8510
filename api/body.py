"""How a request's body and query string are read: strict JSON (RFC 8259, UTF-8 without a
byte order mark, no NaN or Infinity, no duplicate keys, no unpaired surrogates, I-JSON's RFC
7493) validated by a pydantic model, with 400 for text that is not such JSON, 413 for a body
over the limit, 415 for another content type and 422 naming each bad field. The reason to
change is what the API accepts as a request's JSON.
"""

from __future__ import annotations

import hashlib
import json
import re

from flask import Flask, current_app, g, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from .problems import ApiProblem, validation_problem


class _NotStrictJson(ValueError):
    pass


def _reject_duplicates(pairs):
    result = {}
    for key, value in pairs:
        if key in result:
            raise _NotStrictJson(f"duplicate key {key!r} in a JSON object")
        result[key] = value
    return result


def _reject_constant(name: str):
    raise _NotStrictJson(f"{name} is not a JSON value (RFC 8259 has no NaN or Infinity)")


def _integer(text: str) -> int | float:
    # past Python's int parsing limit: a number too large for any field, not a parse error
    return int(text) if len(text) <= 4000 else float("inf")


LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _loads(raw: bytes):
    """Strict JSON: UTF-8 without a byte order mark (RFC 8259), no NaN or Infinity, no
    duplicate keys, no unpaired surrogates (I-JSON, RFC 7493). Raises _NotStrictJson."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raise _NotStrictJson("the body starts with a byte order mark; send UTF-8 without one")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _NotStrictJson(f"the body is not UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(
            text,
            object_pairs_hook=_reject_duplicates,
            parse_constant=_reject_constant,
            parse_int=_integer,
        )
    except RecursionError:
        raise _NotStrictJson("nested too deeply") from None
    except _NotStrictJson:
        raise
    except ValueError as exc:  # json.JSONDecodeError: "Expecting value: line 1 column 1"
        raise _NotStrictJson(str(exc)) from None
    if "\\u" in text and _has_lone_surrogate(data):
        raise _NotStrictJson("a string holds an unpaired surrogate (\\ud800 to \\udfff)")
    return data


def _has_lone_surrogate(value) -> bool:
    if isinstance(value, str):
        return LONE_SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def parse_body(model: type[BaseModel]) -> BaseModel:
    """The request's JSON body as ``model``; raises what answers 400, 413, 415 or 422."""
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
        data = _loads(raw)
    except _NotStrictJson as exc:
        raise ApiProblem(400, f"malformed JSON: {exc}", slug="malformed-json") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _Invalid(exc) from None


def parse_query(model: type[BaseModel]) -> BaseModel:
    """The query string as ``model``; a bad parameter answers 422 naming it."""
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise _Invalid(exc, ("query",)) from None


class _Invalid(Exception):
    def __init__(self, exc: ValidationError, where: tuple = ()):
        self.exc, self.where = exc, where


def init_app(app: Flask) -> None:
    app.register_error_handler(_Invalid, lambda e: validation_problem(e.exc, e.where))
