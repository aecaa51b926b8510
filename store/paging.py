"""Pages of a tenant's rows, newest first, and the cursor that continues a listing (jobs,
sweeps and data sets alike). The reason to change is how a listing is paged.

A cursor is the last row's position, "<created_at in microseconds since 1970>.<id as 32 hex
digits>": every string of that form is a position, so any cursor of that form is valid
(the API's schemas accept exactly that form).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from sqlalchemy import and_, or_
from sqlalchemy.orm import Session

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CURSOR = re.compile(r"([0-9]{1,17})\.([0-9a-f]{32})")


class Page(NamedTuple):
    rows: list
    next_cursor: str | None  # None on the last page


def encode_cursor(row) -> str:
    """The position of ``row`` (anything with ``created_at`` and a UUID ``id``)."""
    created = (
        row.created_at.replace(tzinfo=UTC) if row.created_at.tzinfo is None else row.created_at
    )
    micros = (created - EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{uuid.UUID(row.id).hex}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(created_at, id) of a cursor; raises ValueError for a string not of its form."""
    found = CURSOR.fullmatch(cursor)
    if found is None:
        raise ValueError("expected a next_cursor of this API: <digits>.<32 hex digits>")
    micros, row_id = found.groups()
    return EPOCH + timedelta(microseconds=int(micros)), str(uuid.UUID(row_id))


def page(session: Session, query, model, limit: int, cursor: str | None) -> Page:
    """``query`` newest first: ``limit`` rows after the ``cursor``'s position, or from the
    newest without one. ``query`` selects ``model``'s objects (an ORM class), or the rows of
    a table whose columns ``model`` is (``table.c``): then the page holds those rows."""
    if cursor:
        created_at, row_id = decode_cursor(cursor)
        query = query.where(
            or_(
                model.created_at < created_at,
                and_(model.created_at == created_at, model.id < row_id),
            )
        )
    query = query.order_by(model.created_at.desc(), model.id.desc())
    query = query.limit(limit + 1)
    found = list(session.scalars(query) if isinstance(model, type) else session.execute(query))
    more = len(found) > limit
    found = found[:limit]
    return Page(found, encode_cursor(found[-1]) if more and found else None)
