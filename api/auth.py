"""Bearer tokens: every /v1 request names its tenant through its token."""

from __future__ import annotations

from flask import g, request

from store import tokens

from .problems import ApiProblem
from .services import services

CHALLENGE = 'Bearer realm="backprop-jobs"'


def authenticate() -> None:
    """before_request for /v1: sets g.tenant, or answers 401 with WWW-Authenticate."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiProblem(
            401,
            "send Authorization: Bearer <token>",
            slug="unauthorized",
            headers={"WWW-Authenticate": CHALLENGE},
        )
    with services().db.session() as session:
        row = tokens.authenticate(session, token.strip())
        if row is None:
            raise ApiProblem(
                401,
                "the token is unknown, expired or revoked",
                slug="unauthorized",
                headers={"WWW-Authenticate": f'{CHALLENGE}, error="invalid_token"'},
            )
        g.tenant, g.token_id = row.tenant, row.id
