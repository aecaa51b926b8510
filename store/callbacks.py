"""A callback's life on its row (a job's or a sweep's): taken once, queued, then settled.

``callback_state`` is "waiting" from submit while the row has a ``callback_url``, "queued"
once its delivery was queued, then "delivered" or "failed"; None without a callback.
``callback_at`` is when it was last queued or attempted. ``take_due`` marks the rows whose
callback is due as queued with one conditional UPDATE, so each is taken once whoever asks
(the worker where a job or a sweep ended, the API after a cancel, the reconciler's rounds
for the ones a crash or the broker left waiting); the caller then queues their delivery.
The reason to change is the states a callback passes through on its row.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from .db import Database

WAITING, QUEUED, DELIVERED, FAILED = "waiting", "queued", "delivered", "failed"


def take_due(
    session: Session,
    db: Database,
    model,
    ended,
    ids: list[str] | None = None,
    stale_before: datetime | None = None,
) -> list[str]:
    """The ids of ``model``'s rows (of ``ids``, or all) matching ``ended`` whose callback
    waits, now marked queued. ``stale_before``: also those queued with no delivery attempt
    since then (their task was lost with a process or the broker); such a callback may then
    be sent twice, so a callback comes at least once."""
    due = model.callback_state == WAITING
    if stale_before is not None:
        due = due | ((model.callback_state == QUEUED) & (model.callback_at < stale_before))
    statement = (
        update(model)
        .where(due, ended)
        .values(callback_state=QUEUED, callback_at=db.now(session))
        .returning(model.id)
        .execution_options(synchronize_session=False)
    )
    if ids is not None:
        statement = statement.where(model.id.in_(ids))
    return list(session.scalars(statement))


def not_queued(session: Session, model, row_id: str) -> None:
    """Its delivery could not be queued (the broker is away): the reconciler tries again."""
    session.execute(
        update(model)
        .where(model.id == row_id, model.callback_state == QUEUED)
        .values(callback_state=WAITING)
        .execution_options(synchronize_session=False)
    )


def attempted(session: Session, db: Database, row, *, delivered: bool, last: bool) -> None:
    """One delivery attempt on ``row``; a delivery, or the last attempt, settles it."""
    row.callback_at = db.now(session)  # an attempt: its delivery is alive
    if row.callback_state == DELIVERED:  # a second delivery chain's late failure
        return
    if delivered or last:
        row.callback_state = DELIVERED if delivered else FAILED
