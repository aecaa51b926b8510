"""The worker's hold on the database while it trains: calls retried through outages, and the
heartbeat that renews the job's lease. The reason to change is how a worker survives a
database that goes away."""

from __future__ import annotations

import logging
import os
import queue
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


class LeaseKeeper:
    """Renews the lease every heartbeat and watches for cancellation or a lost lease.

    The renewals run on a heartbeat thread of their own, one per keeper at a time; a thread
    whose keeper stopped waits for the process's next keeper (``_BeatThread``), so a job does
    not pay for starting one."""

    def __init__(self, store: Store, job_id: str, owner: str):
        self.store, self.job_id, self.owner = store, job_id, owner
        self.stop_reason: str | None = None  # "cancel" or "lease_lost"
        self._done = threading.Event()  # stop() was called
        self._ended = threading.Event()  # no renewal runs, nor will

    def start(self) -> None:
        _BeatThread.serve(self)

    def run(self) -> None:
        """The renewals, on the heartbeat thread, until ``stop`` or the lease is lost."""
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
        """No renewal after this returns (a renewal under way is waited for, 5 s at most)."""
        self._done.set()
        self._ended.wait(timeout=5)


class _BeatThread(threading.Thread):
    """A daemon thread that runs one keeper's renewals at a time (``LeaseKeeper.run``), then
    waits, idle, for the next keeper. ``serve`` hands a keeper to an idle thread, or to a new
    one when every thread has a keeper (jobs trained side by side in one process)."""

    _idle: list[_BeatThread] = []
    _lock = threading.Lock()

    def __init__(self):
        super().__init__(name="lease-heartbeat", daemon=True)
        self._keepers: queue.SimpleQueue[LeaseKeeper] = queue.SimpleQueue()

    @classmethod
    def serve(cls, keeper: LeaseKeeper) -> None:
        with cls._lock:
            thread = cls._idle.pop() if cls._idle else None
        if thread is None:
            thread = cls()
            thread.start()
        thread._keepers.put(keeper)

    def run(self) -> None:
        while True:
            keeper = self._keepers.get()
            try:
                keeper.run()
            except Exception:  # a keeper's fault must not end the thread with it in use
                log.exception("job %s: the lease's heartbeat failed", keeper.job_id)
            finally:
                with self._lock:
                    self._idle.append(self)  # idle before the keeper's stop() returns
                keeper._ended.set()

    @classmethod
    def _after_fork(cls) -> None:
        # a forked child has none of its parent's threads
        cls._idle = []
        cls._lock = threading.Lock()


os.register_at_fork(after_in_child=_BeatThread._after_fork)
