"""Repairs what the broker lost: the database says which jobs should be moving.

Runs every RECONCILE_SECONDS under Celery beat and once when a worker starts. Running jobs
whose lease expired go back to the queue; queued jobs whose task message is missing or old
(never sent because the broker was down at submit, lost in a Redis restart, or sent to a worker
that died) are sent again. Sending twice is harmless: the claim lets one worker in. Expired
idempotency records are deleted on the way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from backprop.settings import Settings
from store import idempotency, jobs
from store.db import Database

log = logging.getLogger("backprop.reconciler")


@dataclass
class Report:
    requeued: int = 0
    sent: int = 0
    send_failed: int = 0
    purged_keys: int = 0  # idempotency records past their 24 hours


def reconcile(db: Database, settings: Settings, send) -> Report:
    report = Report()
    with db.session() as session:
        requeued = jobs.requeue_expired(session, db)
    report.requeued = len(requeued)
    with db.session() as session:
        stale = jobs.stale_queued(
            session, db, settings.requeue_after_seconds, longest=settings.visibility_timeout
        )
    # a job whose lease just expired goes out now; the others by age
    for job_id in dict.fromkeys(requeued + stale):
        try:
            send(job_id)
        except Exception as exc:  # the broker is down: the next round tries again
            report.send_failed += 1
            log.warning("reconciler: broker unavailable (%s); jobs wait for the next round", exc)
            break
        with db.session() as session:
            jobs.mark_dispatched(session, db, job_id, "re-sent by the reconciler")
        report.sent += 1
    with db.session() as session:
        report.purged_keys = idempotency.purge_expired(session, db)
    if report.requeued or report.sent or report.send_failed:
        log.info("reconciler: %s", report)
    return report
