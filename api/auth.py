"""Bearer tokens: every /v1 request names its tenant through its token.

A token's tenant is kept per process for AUTH_CACHE_SECONDS after a database lookup, so the
hot path of polling clients costs no database round trip for authentication. A revoked
token therefore stops working within AUTH_CACHE_SECONDS; an expiry is checked on every
request. Unknown tokens are never cached (there are endlessly many); instead, failed
lookups are counted per client address (AUTH_FAILURE_LIMIT). Past its limit an address's
tokens are no longer looked up one by one: they are checked against the set of every live
token (``KnownTokens``, one query at most once a second per process), so made-up tokens cost
no database work while a valid token from that address is still answered. The client's
address is the connection's, or X-Forwarded-For's behind TRUSTED_PROXIES proxies.
The reason to change is how a request proves its tenant, by token or by session.

Authentication runs before the rate limiter, so requests are counted per tenant (all its
tokens together) and a request with a bad token is never counted against anybody's tenant.
"""

from __future__ import annotations

from datetime import timedelta

from flask import g, request, session

from store import tokens
from store.models import utcnow

from .problems import ApiProblem
from .services import services
from .token_cache import FailureLimit, Identity

CHALLENGE = 'Bearer realm="backprop-jobs"'


SESSION_METHODS = ("GET", "HEAD")
SESSION_COOKIE = "backprop_session"  # the dashboard's signed session


def authenticate() -> None:
    """before_request for /v1: sets g.tenant, or answers 401 with WWW-Authenticate (429
    when the client's address has failed too often).

    A read (GET, HEAD) without an Authorization header may instead come from the
    dashboard's signed session cookie, which keeps the hash of the token signed in with:
    that is how the dashboard's pages read jobs, models and event streams. Writes always
    need the bearer token (the dashboard's own forms carry a CSRF token)."""
    if not request.path.startswith("/v1/"):
        return
    header = request.headers.get("Authorization")
    if header is None and request.method in SESSION_METHODS and session.get("token"):
        identity = lookup(session["token"])
        if identity is None:
            raise _unauthorized("the dashboard's token is expired or revoked: sign in again")
        g.tenant, g.token_id = identity.tenant, identity.token_id
        return
    scheme, _, token = (header or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("send Authorization: Bearer <token>")
    failures = services().auth_failures
    identity = lookup(tokens.hash_token(token), failures)
    if identity is None:
        failures.count(request.remote_addr)
        raise _unauthorized("the token is unknown, expired or revoked", 'error="invalid_token"')
    g.tenant, g.token_id = identity.tenant, identity.token_id


def _unauthorized(detail: str, error: str | None = None) -> ApiProblem:
    challenge = f"{CHALLENGE}, {error}" if error else CHALLENGE
    return ApiProblem(401, detail, slug="unauthorized", headers={"WWW-Authenticate": challenge})


def lookup(digest: str, failures: FailureLimit | None = None) -> Identity | None:
    """The live Identity of a token's hash, from this process's cache or the database; None
    when unknown, expired or revoked. With ``failures``, a client address past its failure
    limit is answered from ``KnownTokens`` instead of a lookup of its own, and a miss there
    is refused (429)."""
    s = services()
    identity = s.tokens.get(digest)
    if identity is not None and (identity.expires_at is None or identity.expires_at > utcnow()):
        return identity
    if failures is not None and failures.exceeded(request.remote_addr):
        identity = s.known_tokens.get(digest, _live_tokens)
        if identity is None:
            raise failures.refusal(request.remote_addr)
    else:
        with s.db.reading() as db_session:
            row = tokens.by_digest(db_session, digest)
            identity = row and Identity(row.tenant, row.id, row.expires_at)
    if identity is not None:
        s.tokens.put(digest, identity)
    return identity


def _live_tokens() -> dict[str, Identity]:
    with services().db.reading() as db_session:
        return {
            digest: Identity(tenant, token_id, expires_at)
            for digest, tenant, token_id, expires_at in tokens.live(db_session)
        }


def init_session(app, settings) -> None:
    """The signed session cookie the dashboard signs in with and GET requests may carry
    (``authenticate``): HttpOnly, SameSite=Lax, signed with SECRET_KEY."""
    app.secret_key = settings.session_key()
    app.config.update(
        SESSION_COOKIE_NAME=SESSION_COOKIE,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.cookie_secure,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.session_hours),
    )
