"""Celery tasks: thin, they take an id and delegate."""

from __future__ import annotations

import os
import socket
from dataclasses import asdict
from functools import lru_cache

from celery import shared_task
from celery.signals import worker_init, worker_process_init, worker_ready
from celery.utils.log import get_task_logger
from threadpoolctl import threadpool_limits

from backprop.settings import get_settings
from store.db import get_database

from .celery_app import RECONCILE_TASK, TRAIN_TASK, silence_the_connection_loss_warning
from .dispatch import Dispatcher
from .notify import Notifier
from .reconciler import reconcile as reconcile_jobs
from .training import run_job

log = get_task_logger(__name__)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _database():
    return get_database(get_settings().sqlalchemy_url)


@lru_cache(maxsize=1)
def _dispatcher() -> Dispatcher:
    return Dispatcher(get_settings())


@lru_cache(maxsize=1)
def _notifier() -> Notifier:
    return Notifier(get_settings())


@shared_task(name=TRAIN_TASK, ignore_result=True)
def train(job_id: str) -> str:
    """Train one job; a message for a job someone else holds, or that ended, is a no-op."""
    outcome = run_job(
        job_id,
        db=_database(),
        settings=get_settings(),
        worker=worker_name(),
        send=_dispatcher().send,
        notify=_notifier(),
    )
    log.info("job %s: %s %s", job_id, outcome.status, outcome.detail)
    return outcome.status


@shared_task(name=RECONCILE_TASK, ignore_result=True)
def reconcile() -> dict:
    """Re-send lost jobs and re-queue expired leases (Celery beat runs this)."""
    settings = get_settings()
    return asdict(reconcile_jobs(_database(), settings, _dispatcher().send))


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
