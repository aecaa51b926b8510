"""Repairs what the broker lost: the database says which jobs should be moving.

Runs every RECONCILE_SECONDS under Celery beat and once when a worker starts. Running jobs
whose lease expired go back to the queue; queued jobs whose task message is missing (never
sent because the broker was down at submit, lost in a Redis restart, or taken by a worker
that died) are sent again. A queued job whose message still waits in the queue (its marker
is there, see ``messaging/dispatch.py``) is left alone, however long it waits. Sending twice is
harmless anyway: the claim lets one worker in. A queued job whose message a worker took
and never started (killed whole right after fetching it) is sent again too, without waiting
for VISIBILITY_TIMEOUT (``Dispatcher.stranded``). Running sweeps whose trials ended outside a
worker (cancelled while queued, ended by a lease expiry) release their next trials here, and
ended sweeps whose callback still waits (the broker was away) have it queued. Expired
idempotency records are deleted on the way.
The reason to change is a new kind of lost work to repair.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from backprop import metrics
from backprop.settings import Settings
from service.callbacks import queue_job_callbacks, queue_sweep_callbacks, stale_callback_seconds
from store import idempotency, leases, recovery, scheduling
from store.db import Database

log = logging.getLogger("backprop.reconciler")


@dataclass
class Report:
    requeued: int = 0
    sent: int = 0
    send_failed: int = 0
    purged_keys: int = 0  # idempotency records past their 24 hours
    released: int = 0  # sweeps' trials released here (their last trial ended outside a worker)
    job_callbacks: int = 0  # ended jobs' callbacks queued here (they still waited)
    sweep_callbacks: int = 0  # ended sweeps' callbacks queued here (they still waited)
    waiting: int = 0  # queued long, but their message is still in the queue: not re-sent
    stranded: int = 0  # their message went with a dead worker that never started it: re-sent


def reconcile(db: Database, settings: Settings, dispatcher) -> Report:
    report = Report()
    with db.session() as session:
        requeued = recovery.requeue_expired(session, db)
    report.requeued = len(requeued)
    metrics.worker_metrics().lease_expiries.inc(len(requeued))
    with db.session() as session:
        stale = recovery.stale_queued(
            session, db, settings.requeue_after_seconds, longest=settings.visibility_timeout
        )
    try:  # a job whose message still waits in the queue is not sent again
        marked = dispatcher.waiting(stale)
        # ... unless it went with a worker that died before it started it
        stranded = dispatcher.stranded(marked, settings.requeue_after_seconds)
        waiting = set(marked) - stranded
        report.stranded = len(stranded)
    except Exception as exc:  # the broker is down: nothing can be sent this round anyway
        log.warning("reconciler: broker unavailable (%s); jobs wait for the next round", exc)
        report.send_failed += 1
        waiting = set(stale)
    report.waiting = len(waiting)
    # a job whose lease just expired goes out now; the others by age
    for job_id in dict.fromkeys(requeued + [j for j in stale if j not in waiting]):
        with db.session() as session:  # recorded first: a worker may start it at once
            if not leases.mark_dispatched(session, db, job_id, "re-sent by the reconciler"):
                continue  # it moved on meanwhile
        try:
            dispatcher.send(job_id)
        except Exception as exc:  # the broker is down: the next round tries again
            with db.session() as session:
                leases.record_dispatch_failure(session, db, job_id, type(exc).__name__)
            report.send_failed += 1
            log.warning("reconciler: broker unavailable (%s); jobs wait for the next round", exc)
            break
        report.sent += 1
    with db.session() as session:  # trials cancelled while queued, or lost, move sweeps on
        released = scheduling.advance_running(session, db)
    for job_id in released:
        try:
            dispatcher.send(job_id)
        except Exception:  # recorded as dispatched: re-sent by a later round
            report.send_failed += 1
            break
        report.released += 1
    stale_seconds = stale_callback_seconds(settings)
    report.job_callbacks = queue_job_callbacks(db, dispatcher, stale_seconds=stale_seconds)
    report.sweep_callbacks = queue_sweep_callbacks(db, dispatcher, stale_seconds=stale_seconds)
    with db.session() as session:
        report.purged_keys = idempotency.purge_expired(session, db)
    if (
        report.requeued
        or report.sent
        or report.send_failed
        or report.released
        or report.job_callbacks
        or report.sweep_callbacks
    ):
        log.info("reconciler: %s", report)
    metrics.worker_metrics().reconciler_passes.inc()
    return report
