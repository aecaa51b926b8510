"""Long polls: a request waits for "job X changed" instead of asking the database again.

Each API process keeps one Redis connection subscribed to ``messaging.notify.CHANNEL`` in a
background thread, started on the first long poll (after gunicorn's fork). A waiting
request registers an event under its job id; a message for that job sets it. Messages are
hints: the waiting request always reads the job again from the database, and it also does
so every ``RECHECK_SECONDS`` in case a message was lost (Redis down, a reconnect).
The reason to change is how a long poll learns that its job changed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from contextlib import contextmanager

from backprop.settings import Settings
from messaging.broker import broker_redis
from messaging.notify import CHANNEL

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
