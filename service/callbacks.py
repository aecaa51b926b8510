"""After a job or a sweep ended: queue the deliveries of its callbacks. The reason to
change is when a callback becomes due and who queues it.

A callback is due once, when its job or sweep ended (``store.callbacks``): its delivery is
queued where that happened (the worker, a cancel in the API) and, for one that a crash or
the broker left waiting, or whose queued task was lost, by the reconciler. So a callback
comes at least once: a receiver ignores a repeat of an ``id``.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from store import jobs, sweeps

log = logging.getLogger(__name__)


def stale_callback_seconds(settings) -> float:
    """How long a queued callback may go without an attempt before the reconciler
    queues it again: well past the longest wait between two attempts."""
    longest = settings.webhook_backoff_seconds * 2 ** max(settings.webhook_attempts - 2, 0)
    return max(1800.0, 2 * (longest + settings.webhook_timeout_seconds))


def ended_here(db, dispatcher, job_ids=(), sweep_ids=()) -> None:
    """Queue the callbacks of the jobs and sweeps that may have ended here (each only if it
    ended and has one waiting); with the database away, the reconciler queues them."""
    for queue, ids in ((queue_job_callbacks, job_ids), (queue_sweep_callbacks, sweep_ids)):
        if not ids:
            continue
        try:
            queue(db, dispatcher, list(ids))
        except Exception as exc:  # the database is away: the reconciler queues it
            log.warning("%s: its callback waits for the reconciler (%s)", ids[0], exc)


def queue_job_callbacks(
    db, dispatcher, job_ids: list[str] | None = None, stale_seconds: float | None = None
) -> int:
    """Queue the delivery of each ended job's callback (of ``job_ids``, or all) that waits:
    where a job ended (the worker, a cancel in the API), and in every reconciler round for
    the ones a crash or the broker left waiting; with ``stale_seconds``, again for one
    queued that long ago with no attempt since (its task was lost). Returns how many."""
    return _queue(db, jobs, dispatcher.callback, job_ids, stale_seconds)


def queue_sweep_callbacks(
    db, dispatcher, sweep_ids: list[str] | None = None, stale_seconds: float | None = None
) -> int:
    """As ``queue_job_callbacks``, for ended sweeps none of whose trials still runs."""
    return _queue(db, sweeps, dispatcher.sweep_callback, sweep_ids, stale_seconds)


def _queue(db, rows, send, ids: list[str] | None, stale_seconds: float | None) -> int:
    """Take the due callbacks of ``rows`` (``store.jobs`` or ``store.sweeps``) and queue
    them; one the broker did not take waits again for a reconciler round."""
    with db.session() as session:
        stale = None
        if stale_seconds is not None:
            stale = db.now(session) - timedelta(seconds=stale_seconds)
        due = rows.take_due_callbacks(session, db, ids, stale_before=stale)
    for number, row_id in enumerate(due):
        try:
            send(row_id)
        except Exception:  # the broker is away: a later reconciler round queues them
            log.warning("%s: could not queue its callback", row_id, exc_info=True)
            with db.session() as session:
                for unsent in due[number:]:
                    rows.callback_not_queued(session, unsent)
            return number
    return len(due)
