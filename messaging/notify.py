""" "Job X changed": a Redis pub/sub message that wakes long polls (``api/watch.py``).

The database stays the source of truth: a message carries the job id only, and a reader
that missed one still sees the change on its next read. Publishing is best effort and off
the caller's path: ``Notifier`` hands the id to a thread of its own, so a broker that is slow,
down or cut off costs the training loop nothing (measured: a worker cut from Redis alone
kept training at full speed) and never fails the transaction that the message follows.
The caller does wait for the send, up to HANDOFF_SECONDS: left to the thread's turn at
the interpreter, a message sent while the training process goes on with its work waited
for Python's thread switch interval (5 ms, 8 ms at the median measured) before it left.
The reason to change is how a job's change is announced.
"""

from __future__ import annotations

import logging
import os
import threading

import redis

from backprop.settings import Settings

from .broker import broker_redis

CHANNEL = "backprop:jobs"
MAX_PENDING = 1024  # distinct ids waiting to be published; past it a change goes unannounced
HANDOFF_SECONDS = 0.002  # longest a caller waits for its message to be sent

log = logging.getLogger("backprop.notify")


class Notifier:
    """Publishes job ids from a background thread; repeated ids waiting together go once."""

    def __init__(self, settings: Settings):
        self.client = broker_redis(settings)
        self._pid = -1

    def __call__(self, job_id: str) -> None:
        if self._pid != os.getpid():  # first use, or a forked child: state of its own
            self._start()
        with self._changed:
            if len(self._pending) < MAX_PENDING:
                self._pending[job_id] = None  # an ordered set
            self._queued += 1
            ticket = self._queued
            self._changed.notify_all()
            # hand the interpreter to the sender now (waiting releases it), not at the next
            # thread switch; a slow or absent broker costs the caller HANDOFF_SECONDS at most
            self._changed.wait_for(lambda: self._sent >= ticket, HANDOFF_SECONDS)

    def _start(self) -> None:
        self._pid = os.getpid()
        self._pending: dict[str, None] = {}
        self._queued = self._sent = 0  # ids handed over, and how many of them were sent
        self._changed = threading.Condition()
        threading.Thread(target=self._publish_forever, name="notify", daemon=True).start()

    def _publish_forever(self) -> None:
        while True:
            with self._changed:
                while not self._pending:
                    self._changed.wait()
                batch, upto = list(self._pending), self._queued
                self._pending.clear()
            for job_id in batch:
                try:
                    self.client.publish(CHANNEL, job_id)
                except (redis.RedisError, OSError) as exc:  # pollers fall back to their clock
                    log.debug("job %s: change not published (%s)", job_id, exc)
            with self._changed:
                self._sent = upto
                self._changed.notify_all()
