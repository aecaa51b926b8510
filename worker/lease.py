"""The worker's hold on the database while it trains: calls retried through outages, and the
heartbeat that renews the job's lease. The reason to change is how a worker survives a
database that goes away."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from backprop.settings import Settings
from store import leases
from store.db import Database, is_outage

log = logging.getLogger("backprop.worker")


class Store:
    """The worker's database calls, each in its own transaction, retried through outages."""

    def __init__(self, db: Database, settings: Settings):
        self.db, self.settings = db, settings
        self._retrying = Retrying(
            retry=retry_if_exception(is_outage),
            wait=wait_exponential(multiplier=0.2, max=5),
            stop=stop_after_delay(settings.db_retry_seconds),
            before_sleep=lambda state: log.warning(
                "database unavailable, retrying (%s)", type(state.outcome.exception()).__name__
            ),
            reraise=True,
        )

    def __call__(self, operation: Callable, *args, **kwargs):
        for attempt in self._retrying:
            with attempt, self.db.session() as session:
                return operation(session, self.db, *args, **kwargs)
        raise AssertionError("unreachable")

    def read(self, operation: Callable, *args):
        for attempt in self._retrying:
            with attempt, self.db.session() as session:
                return operation(session, *args)
        raise AssertionError("unreachable")


class LeaseKeeper(threading.Thread):
    """Renews the lease every heartbeat and watches for cancellation or a lost lease."""

    def __init__(self, store: Store, job_id: str, owner: str):
        super().__init__(name=f"lease-{job_id[:8]}", daemon=True)
        self.store, self.job_id, self.owner = store, job_id, owner
        self.stop_reason: str | None = None  # "cancel" or "lease_lost"
        self._done = threading.Event()

    def run(self) -> None:
        settings = self.store.settings
        renewed = time.monotonic()
        while not self._done.wait(settings.heartbeat_seconds):
            try:
                # one attempt per beat (no long retries here): the beat itself is the retry
                with self.store.db.session() as session:
                    cancel = leases.renew_lease(
                        session, self.store.db, self.job_id, self.owner, settings.lease_seconds
                    )
            except leases.LeaseLost:
                self.stop_reason = "lease_lost"
                return
            except Exception as exc:
                if time.monotonic() - renewed > settings.lease_seconds:
                    # the lease has run out by now: someone else may resume the job, so this
                    # worker stops instead of training a copy nobody will keep
                    log.warning(
                        "job %s: lease not renewed for %.0fs (%s); stopping",
                        self.job_id,
                        settings.lease_seconds,
                        type(exc).__name__,
                    )
                    self.stop_reason = "lease_lost"
                    return
                continue
            renewed = time.monotonic()
            if cancel:
                self.stop_reason = "cancel"

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=5)
