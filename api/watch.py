"""Long polls: a request waits for "job X changed" instead of asking the database again.

Each API process keeps one Redis connection subscribed to ``worker.notify.CHANNEL`` in a
background thread, started on the first long poll (after gunicorn's fork). A waiting
request registers an event under its job id; a message for that job sets it. Messages are
hints: the waiting request always reads the job again from the database, and it also does
so every ``RECHECK_SECONDS`` in case a message was lost (Redis down, a reconnect).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from contextlib import contextmanager

from backprop.settings import Settings
from worker.notify import CHANNEL, broker_redis

from .problems import ApiProblem

log = logging.getLogger("backprop.api")

RECHECK_SECONDS = 2.0


class JobWatcher:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._waiters: dict[str, set[threading.Event]] = defaultdict(set)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._subscribed = threading.Event()

    @contextmanager
    def watching(self, job_id: str):
        """An event that is set when a change of the job is announced."""
        self._ensure_listening()
        event = threading.Event()
        with self._lock:
            self._waiters[job_id].add(event)
        try:
            yield event
        finally:
            with self._lock:
                waiting = self._waiters.get(job_id)
                if waiting is not None:
                    waiting.discard(event)
                    if not waiting:
                        del self._waiters[job_id]

    def _listening(self) -> bool:
        """This process's listener runs (a forked child starts its own)."""
        return self._pid == os.getpid() and self._thread is not None and self._thread.is_alive()

    def _ensure_listening(self) -> None:
        if self._listening():
            return
        with self._lock:
            if not self._listening():
                self._pid = os.getpid()
                self._subscribed.clear()
                self._thread = threading.Thread(
                    target=self._listen, name="job-watcher", daemon=True
                )
                self._thread.start()
        # the first poll must not miss a change announced while the subscription starts
        self._subscribed.wait(self.settings.broker_timeout_seconds)

    def _listen(self) -> None:
        backoff = 0.1
        while True:
            try:
                # no read timeout: the subscription waits for messages
                client = broker_redis(self.settings, socket_timeout=None, health_check_interval=30)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CHANNEL)
                while True:
                    message = pubsub.get_message(timeout=5.0)
                    self._subscribed.set()
                    if message is not None and message["type"] == "message":
                        self._wake(message["data"].decode())
                    backoff = 0.1
            except Exception as exc:  # Redis away: waiters fall back to RECHECK_SECONDS
                self._subscribed.clear()
                log.debug("job watcher: %s; reconnecting in %.1fs", exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _wake(self, job_id: str) -> None:
        with self._lock:
            waiting = list(self._waiters.get(job_id, ()))
        for event in waiting:
            event.set()


class WaitSlots:
    """Requests that wait (long polls, event streams), counted per API process: at most
    ``per_process`` at once, so that the other threads stay for ordinary requests, and at
    most ``per_tenant`` of one tenant's, so that one tenant cannot take them all. A request
    past either gets 429 with Retry-After instead of a thread."""

    RETRY_AFTER = "2"

    def __init__(self, per_process: int, per_tenant: int):
        self.per_process, self.per_tenant = per_process, per_tenant
        self._by_tenant: dict[str, int] = defaultdict(int)
        self._total = 0
        self._lock = threading.Lock()

    def take(self, tenant: str):
        """A slot for the tenant, or ApiProblem 429; returns the function that gives it back
        (exactly once, however often it is called)."""
        with self._lock:
            if self._by_tenant[tenant] >= self.per_tenant:
                detail = (
                    f"the tenant already holds {self.per_tenant} long polls and event streams "
                    "on this server process (MAX_WAITS_PER_TENANT); close one or poll without "
                    "?wait="
                )
            elif self._total >= self.per_process:
                detail = (
                    f"this server process already holds {self.per_process} long polls and "
                    "event streams (MAX_WAITS_PER_PROCESS); retry, or poll without ?wait="
                )
            else:
                self._by_tenant[tenant] += 1
                self._total += 1
                detail = None
        if detail is not None:
            raise ApiProblem(
                429, detail, slug="too-many-waits", headers={"Retry-After": self.RETRY_AFTER}
            )
        given = threading.Event()

        def give_back() -> None:
            with self._lock:
                if given.is_set():
                    return
                given.set()
                self._by_tenant[tenant] -= 1
                self._total -= 1
                if not self._by_tenant[tenant]:
                    del self._by_tenant[tenant]

        return give_back
