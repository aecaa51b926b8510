"""Counts over whole tables, for operators' gauges (``api/metrics.py``): no tenant, no rows.
The reason to change is an operators' gauge counted over a whole table."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .models import STATUSES, Job


def jobs_by_status(session: Session) -> dict[str, int]:
    """Every status (those without jobs at 0): one grouped count on the status index."""
    counted = session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
    return dict.fromkeys(STATUSES, 0) | {status: count for status, count in counted}
