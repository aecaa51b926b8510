"""Celery tasks: thin, they take an id and delegate.
The reason to change is a task, or what a worker process does as it starts, forks or stops."""

from __future__ import annotations

import os
import socket
from dataclasses import asdict
from functools import lru_cache

import optuna  # noqa: F401  (imported by the parent once: each training process inherits it)
from billiard.exceptions import WorkerLostError
from celery import shared_task
from celery.signals import (
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from celery.utils.log import get_task_logger
from celery.worker.request import Request
from threadpoolctl import threadpool_limits

from backprop import metrics
from backprop.settings import get_settings
from messaging.celery_app import (
    DELIVER_SWEEP_TASK,
    DELIVER_TASK,
    RECONCILE_TASK,
    TRAIN_TASK,
    silence_the_connection_loss_warning,
)
from messaging.dispatch import Dispatcher
from messaging.notify import Notifier
from service import callbacks
from store import recovery
from store.db import get_database

from . import metrics as metrics_port
from . import webhooks
from .reconciler import reconcile as reconcile_jobs
from .training import run_job

log = get_task_logger(__name__)


def worker_name(pid: int | None = None) -> str:
    """How a training process names itself in leases (``<worker>#<attempt>``)."""
    return f"{socket.gethostname()}:{pid or os.getpid()}"


def _database():
    return get_database(get_settings().sqlalchemy_url)


@lru_cache(maxsize=1)
def _dispatcher() -> Dispatcher:
    return Dispatcher(get_settings())


@lru_cache(maxsize=1)
def _notifier() -> Notifier:
    return Notifier(get_settings())


class TrainRequest(Request):
    """A training message as the worker's main process sees it.

    When the pool process running it dies (SIGKILL, the OOM killer), Celery reports a
    WorkerLostError here, in the parent, which is still alive: the lease of the job that the
    dead process held is released at once and the job is offered again ahead of the queue,
    instead of waiting LEASE_SECONDS for the lease to expire. If the release cannot be made
    (the database is away, or the process died before it claimed the job), Celery's own
    handling requeues the message, and the lease expiry remains the fallback.
    """

    def on_failure(self, exc_info, send_failed_event=True, return_ok=False):
        exc = exc_info.exception
        exc = getattr(exc, "exc", exc)  # billiard wraps it in ExceptionWithTraceback
        if isinstance(exc, WorkerLostError):
            if self._release_the_dead_process_s_job(exc):
                self.acknowledge()
                return
            try:  # Celery puts the message back in the queue: it waits there again
                _dispatcher().mark_waiting(self.args[0], self.id)
            except Exception:
                log.warning("job %s: could not mark its message as waiting", self.args[0])
        return super().on_failure(exc_info, send_failed_event, return_ok)

    def _release_the_dead_process_s_job(self, exc) -> bool:
        job_id, pid = self.args[0], self.worker_pid
        if not pid:
            return False
        reason = f"training process {pid} died ({exc})"
        try:
            with _database().session() as session:
                owner = worker_name(pid)
                released = recovery.release_lost(session, _database(), job_id, owner, reason)
            if released:
                metrics.worker_metrics().lease_releases.inc()
                _dispatcher().send(job_id, first=True)
        except Exception:  # the database or the broker is away: the lease expires instead
            log.warning("job %s: could not release it after %s", job_id, reason, exc_info=True)
            return False
        log.warning("job %s: %s; released and offered again", job_id, reason)
        return released


@shared_task(name=TRAIN_TASK, ignore_result=True, Request=TrainRequest)
def train(job_id: str) -> str:
    """Train one job; a message for a job someone else holds, or that ended, is a no-op."""
    _dispatcher().taken(job_id)  # no message for it waits in the queue any more
    outcome = run_job(
        job_id,
        db=_database(),
        settings=get_settings(),
        worker=worker_name(),
        send=_dispatcher().send,
        notify=_notifier(),
    )
    log.info("job %s: %s %s", job_id, outcome.status, outcome.detail)
    # the trial's end may have ended its sweep
    ended_sweep = outcome.sweep_id and outcome.status not in ("skipped", "lost")
    callbacks.ended_here(
        _database(),
        _dispatcher(),
        job_ids=[job_id] if outcome.callback else [],
        sweep_ids=[outcome.sweep_id] if ended_sweep else [],
    )
    return outcome.status


@shared_task(name=DELIVER_TASK, bind=True, ignore_result=True, max_retries=None)
def deliver_callback(self, job_id: str, attempt: int = 1) -> None:
    """POST a finished job's final state to its callback_url; retried with backoff."""
    _deliver(deliver_callback, webhooks.deliver, job_id, attempt)


@shared_task(name=DELIVER_SWEEP_TASK, bind=True, ignore_result=True, max_retries=None)
def deliver_sweep_callback(self, sweep_id: str, attempt: int = 1) -> None:
    """POST an ended sweep's state to its callback_url; retried with backoff."""
    _deliver(deliver_sweep_callback, webhooks.deliver_sweep, sweep_id, attempt)


def _deliver(task, deliver, target_id: str, attempt: int) -> None:
    """One attempt; the next is queued after WEBHOOK_BACKOFF_SECONDS, doubling each time."""
    settings = get_settings()
    if not deliver(_database(), settings, target_id, attempt):
        countdown = settings.webhook_backoff_seconds * 2 ** (attempt - 1)
        task.apply_async((target_id, attempt + 1), countdown=countdown)


@shared_task(name=RECONCILE_TASK, ignore_result=True)
def reconcile() -> dict:
    """Re-send lost jobs and re-queue expired leases (Celery beat runs this)."""
    settings = get_settings()
    return asdict(reconcile_jobs(_database(), settings, _dispatcher()))


_blas_threads: int | None = None


@worker_init.connect
def _share_the_cores(sender=None, **_) -> None:
    """Each training process gets its share of the cores for BLAS (WORKER_BLAS_THREADS, else
    cores / concurrency): two processes with a thread per core each would fight."""
    global _blas_threads
    concurrency = getattr(sender, "concurrency", None) or 1
    asked = get_settings().worker_blas_threads
    _blas_threads = asked or max(1, (os.cpu_count() or 1) // concurrency)


@worker_process_init.connect
def _fresh_connections_after_fork(**_) -> None:
    # a pool process must not share its parent's database connections
    _database().after_fork()
    if _blas_threads is not None:
        threadpool_limits(limits=_blas_threads)


@worker_ready.connect
def _reconcile_at_start(**_) -> None:
    silence_the_connection_loss_warning()
    try:
        reconcile()
    except Exception:
        log.exception("start-up reconcile failed; beat will try again")


@worker_init.connect
def _metrics_directory(**_) -> None:
    # before the pool forks: every training process writes in the worker's directory
    metrics_port.start(get_settings())


@worker_ready.connect
def _serve_metrics(**_) -> None:
    metrics_port.serve(get_settings())


@worker_process_shutdown.connect
def _process_metrics_done(pid=None, **_) -> None:
    metrics.process_died(pid)


@worker_shutdown.connect
def _stop_serving_metrics(**_) -> None:
    metrics_port.stop()
