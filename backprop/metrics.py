"""What operators watch: the Prometheus metrics of the API and the workers, defined once.

The API's gunicorn and a Celery worker each run several processes (gunicorn's workers, the
prefork pool's training processes), so their metrics are kept in prometheus_client's
multiprocess mode: each process writes its own files in the instance's directory under
METRICS_DIR (``instance_directory``), and a scrape sums them (``scrape_registry``). A process
whose instance named no directory (a test's app, the CLI) keeps its metrics in memory.
The reason to change is a metric's definition, or where a process keeps its values.

``api_metrics()`` and ``worker_metrics()`` make the metrics on first use, like
``get_settings()``: by then the process knows its directory (gunicorn's configuration and the
worker's start set it), whatever it imported before; and each page shows its own kind only.
Gauges of the database and the queues are not here: the API collects them at scrape time
(``api/metrics.py``).
"""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

# the variable prometheus_client's multiprocess mode reads: set from METRICS_DIR, never by hand
DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
WAIT_SECONDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
RUN_SECONDS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200)
EPOCHS_PER_SECOND = (1, 10, 50, 100, 500, 1000, 5000, 10_000, 50_000, 100_000)


# every metric of this process, read from memory when its instance has no directory
_IN_MEMORY = CollectorRegistry()


@dataclass(frozen=True)
class ApiMetrics:
    request_seconds: Histogram


@dataclass(frozen=True)
class WorkerMetrics:
    claim_seconds: Histogram
    job_seconds: Histogram
    epochs_per_second: Histogram
    lease_expiries: Counter
    lease_releases: Counter
    reconciler_passes: Counter
    webhook_deliveries: Counter
    webhook_failures: Counter


def _values_for_this_process() -> None:
    if os.environ.get(DIRECTORY_VARIABLE) and not values.ValueClass._multiprocess:
        # prometheus_client chose in-memory values when it was imported, before the process
        # knew its directory
        values.ValueClass = values.MultiProcessValue()


@lru_cache(maxsize=1)
def api_metrics() -> ApiMetrics:
    """The API process's metrics, made once."""
    _values_for_this_process()
    return ApiMetrics(
        request_seconds=Histogram(
            "backprop_http_request_duration_seconds",
            "API requests by route (the URL rule), method and status, until the answer starts",
            ["route", "method", "status"],
            buckets=SECONDS,
            registry=_IN_MEMORY,
        ),
    )


@lru_cache(maxsize=1)
def worker_metrics() -> WorkerMetrics:
    """A worker process's metrics, made once (and inherited by forked children, whose values
    then go to files of their own)."""
    _values_for_this_process()
    r = _IN_MEMORY
    return WorkerMetrics(
        claim_seconds=Histogram(
            "backprop_claim_latency_seconds",
            "From a job's submit (claim=first) or its return to the queue (claim=resume) to "
            "its claim by a training process",
            ["claim"],
            buckets=WAIT_SECONDS,
            registry=r,
        ),
        job_seconds=Histogram(
            "backprop_job_duration_seconds",
            "Training time of a job that ended in a worker (all its attempts), by status",
            ["status"],
            buckets=RUN_SECONDS,
            registry=r,
        ),
        epochs_per_second=Histogram(
            "backprop_job_epochs_per_second",
            "Epochs trained per second of training time, of a job that ended in a worker",
            buckets=EPOCHS_PER_SECOND,
            registry=r,
        ),
        lease_expiries=Counter(
            "backprop_lease_expiries",
            "Leases found expired by the reconciler, their job sent back to the queue",
            registry=r,
        ),
        lease_releases=Counter(
            "backprop_lease_releases",
            "Leases released at once because the training process holding them died",
            registry=r,
        ),
        reconciler_passes=Counter(
            "backprop_reconciler_passes", "Reconciler passes completed", registry=r
        ),
        webhook_deliveries=Counter(
            "backprop_webhook_deliveries",
            "Callback delivery attempts (POSTs), by event",
            ["event"],
            registry=r,
        ),
        webhook_failures=Counter(
            "backprop_webhook_delivery_failures",
            "Callback delivery attempts without a 2xx answer (refused, no answer, an error), "
            "by event",
            ["event"],
            registry=r,
        ),
    )


def directory() -> Path | None:
    """This process's multiprocess directory, if its instance has one."""
    path = os.environ.get(DIRECTORY_VARIABLE)
    return Path(path) if path else None


def use_directory(path: Path) -> None:
    """This process and the children it forks from now on keep their metrics in ``path``."""
    os.environ[DIRECTORY_VARIABLE] = str(path)


def instance_directory(root: Path, kind: str) -> Path:
    """A fresh directory for one instance (a gunicorn master and its workers, or a Celery
    worker and its pool) under ``root``: ``<kind>-<host>-<pid>``, so that instances on one
    host, or containers sharing a volume, never mix their files. The directories of this
    host's instances that died without removing theirs are removed on the way."""
    host = socket.gethostname()
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob(f"{kind}-{host}-*"):
        pid = old.name.rsplit("-", 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    path = root / f"{kind}-{host}-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)  # a dead instance's, under a reused pid
    path.mkdir()
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def process_died(pid: int) -> None:
    """A process of this instance exited: its live gauges go (its counts stay in the sums)."""
    path = directory()
    if path is not None:
        mark_process_dead(pid, str(path))


def scrape_registry() -> CollectorRegistry:
    """A registry to expose: the sum over the instance's processes, or this process's own."""
    registry = CollectorRegistry()
    path = directory()
    if path is not None:
        MultiProcessCollector(registry, path=str(path))
    else:
        registry.register(_IN_MEMORY)
    return registry
