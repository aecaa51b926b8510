"""A Celery worker's metrics: observed by its processes, served by its main process.

When WORKER_METRICS_PORT is set, the worker's main process makes the instance's directory
under METRICS_DIR as it starts (``start``, before the pool forks, so every training process
writes there), serves the sum over its processes on that port once it is ready (``serve``),
and removes the directory as it stops (``stop``). With port 0 the metrics stay in memory and
nothing is served. The signals are connected in ``worker/tasks.py``. The reason to change is
where a worker's metrics are kept and how they are served.
"""

from __future__ import annotations

import logging
import shutil
from datetime import datetime

from prometheus_client import start_http_server

from backprop import metrics
from backprop.settings import Settings

log = logging.getLogger("backprop.metrics")
_served = None  # the HTTP server of this worker's metrics, in its main process


def start(settings: Settings) -> None:
    if settings.worker_metrics_port:
        metrics.use_directory(metrics.instance_directory(settings.metrics_root, "worker"))


def serve(settings: Settings) -> None:
    global _served
    if not settings.worker_metrics_port or metrics.directory() is None:
        return
    address, port = settings.worker_metrics_address, settings.worker_metrics_port
    try:
        _served, _ = start_http_server(port, address, registry=metrics.scrape_registry())
    except OSError as exc:  # another worker on this host has the port: train anyway
        log.warning("metrics not served: %s:%d is not free (%s)", address, port, exc)
        return
    log.info("metrics served on http://%s:%d/metrics", address, port)


def stop() -> None:
    if _served is not None:
        _served.shutdown()
        _served.server_close()
    path = metrics.directory()
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


def claimed(job) -> None:
    """A training process claimed the job: how long it waited, in the database's clock. A
    resumed job waited from its return to the queue (its last dispatch), if it was sent."""
    first = job.attempts <= 1 or job.dispatched_at is None
    waited_since: datetime = job.created_at if first else job.dispatched_at
    seconds = max(0.0, (job.updated_at - waited_since).total_seconds())
    kind = "first" if first else "resume"
    metrics.worker_metrics().claim_seconds.labels(kind).observe(seconds)


def ended(status: str, runtime_seconds: float, epochs: int) -> None:
    """A job ended in a worker after ``runtime_seconds`` of training over all its attempts."""
    m = metrics.worker_metrics()
    m.job_seconds.labels(status).observe(runtime_seconds)
    if runtime_seconds > 0:
        m.epochs_per_second.observe(epochs / runtime_seconds)


def webhook_attempt(event: str, delivered: bool) -> None:
    m = metrics.worker_metrics()
    m.webhook_deliveries.labels(event).inc()
    if not delivered:
        m.webhook_failures.labels(event).inc()
