"""Submits that happen once per Idempotency-Key (jobs and sweeps alike): the reason to
change is the replay rule."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store import idempotency
from store.idempotency import Replay

from .context import Context, Idempotency
from .errors import Refused

T = TypeVar("T", bound="Stored")


@dataclass(frozen=True)
class Stored:
    """What a submit stored: the id it made and the answer it gives (and remembers): a
    pydantic model (kept as its JSON form) or a JSON-able dict."""

    id: str
    answer: Any
    job_id: str | None  # the job the answer is about, kept with the key
    at: datetime | None = None  # the database's clock when it was stored, if read

    def answer_json(self) -> dict:
        dump = getattr(self.answer, "model_dump", None)
        return dump(mode="json") if dump is not None else self.answer


def once(ctx: Context, idem: Idempotency | None, store: Callable[[Session], T]) -> T | Replay:
    """``store`` in one transaction with the key's replay check before it and its answer
    remembered after it; a failure stores nothing, key included. A concurrent twin with the
    same key that committed first makes this one's record fail (KeyTaken, or the key's
    IntegrityError): its answer is replayed. An IntegrityError that is no twin's is raised
    for the caller to explain."""
    try:
        with ctx.db.session() as session:
            if idem is not None:
                replay = _lookup(session, ctx, idem)
                if replay is not None:
                    return replay
            stored = store(session)
            if idem is not None:
                idempotency.remember(
                    session,
                    ctx.db,
                    tenant=ctx.tenant,
                    key=idem.key,
                    request_hash=idem.request_hash,
                    status_code=202,
                    response=stored.answer_json(),
                    job_id=stored.job_id,
                    ttl_seconds=ctx.settings.idempotency_ttl_seconds,
                    now=stored.at,
                )
    except (IntegrityError, idempotency.KeyTaken):
        if idem is None:
            raise
        with ctx.db.session() as session:
            replay = _lookup(session, ctx, idem)
        if replay is None:
            raise
        return replay
    return stored


def _lookup(session: Session, ctx: Context, idem: Idempotency) -> Replay | None:
    try:
        return idempotency.lookup(session, ctx.db, ctx.tenant, idem.key, idem.request_hash)
    except idempotency.KeyReused:
        message = (
            f"{idem.key!r} was already used with a different request body; use a new key "
            "for a new job"
        )
        raise Refused(("header", "Idempotency-Key"), message, "idempotency_key_reused") from None
