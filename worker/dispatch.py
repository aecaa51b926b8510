"""Sending "job X may be ready" to the training queue. The message carries the id only.

Beside each message, a marker key in the same Redis says "a message for job X is waiting"
(``MARKER``): it is set before the message is sent and deleted by the worker that takes the
message. The reconciler re-sends a queued job only when its marker is gone, that is when
no message for it can be waiting: a job that merely waits behind busy workers is never sent
twice. Markers live and die with the messages: a Redis restarted empty or a FLUSHALL loses
both, and the reconciler then re-sends every queued job.

A message a worker fetched but never started (the worker was killed whole just after
fetching it) keeps its marker, and Redis gives the message back only after
VISIBILITY_TIMEOUT. ``stranded`` finds such jobs in the transport's set of fetched,
unacknowledged messages, so the reconciler sends them again instead of waiting for it.
"""

from __future__ import annotations

import json
import re
import time

import redis

from backprop.settings import Settings

from .celery_app import NEW_PRIORITY, RESUME_PRIORITY, TRAIN_TASK, make_celery
from .notify import broker_redis
from .webhooks import DELIVER_TASK

MARKER = "backprop:waiting:"
# kombu's Redis transport keeps every fetched, unacknowledged message in this hash (by
# delivery tag) and the time it was fetched in this sorted set
UNACKED, UNACKED_INDEX = "unacked", "unacked_index"
JOB_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Dispatcher:
    def __init__(self, settings: Settings):
        self.celery = make_celery(settings)
        self.queue = settings.training_queue
        self.control_queue = settings.control_queue
        self.timeout = settings.broker_timeout_seconds
        # A marker outlives its message only when a worker died holding a message it had not
        # started yet (a moment's state, with one message per training process): Redis gives
        # such a message back after VISIBILITY_TIMEOUT, which is when the marker expires too.
        self.marker_seconds = settings.visibility_timeout
        self.redis = broker_redis(settings)

    def send(self, job_id: str, *, first: bool = False) -> None:
        """Publish the task; raises (kombu's OperationalError or a RedisError) within about a
        second when the broker is down or hung. ``first``: a job that already ran and lost its
        worker goes ahead of every job that never started (the highest priority)."""
        # the marker first: a worker that takes the message at once finds it to delete
        self.mark_waiting(job_id)
        try:
            self.celery.send_task(
                TRAIN_TASK,
                args=[job_id],
                queue=self.queue,
                retry=False,
                priority=RESUME_PRIORITY if first else NEW_PRIORITY,
            )
        except Exception:
            self.taken(job_id)
            raise

    def callback(self, job_id: str) -> None:
        """Queue the delivery of a finished job's callback (worker.webhooks)."""
        self.celery.send_task(DELIVER_TASK, args=[job_id], queue=self.control_queue, retry=False)

    def mark_waiting(self, job_id: str) -> None:
        """A message for the job is (again) in the queue."""
        self.redis.set(MARKER + job_id, 1, ex=self.marker_seconds)

    def taken(self, job_id: str) -> None:
        """The message for the job left the queue (a worker took it)."""
        try:
            self.redis.delete(MARKER + job_id)
        except redis.RedisError:
            pass  # the reconciler then believes a message waits: re-sent once it expires

    def waiting(self, job_ids: list[str]) -> set[str]:
        """Those of the jobs whose message is still in the queue."""
        if not job_ids:
            return set()
        found = self.redis.mget([MARKER + job_id for job_id in job_ids])
        return {job_id for job_id, mark in zip(job_ids, found) if mark is not None}

    def stranded(self, job_ids: list[str], older_than: float) -> set[str]:
        """Those of the jobs (queued, their marker set) whose training message a worker
        fetched more than ``older_than`` seconds ago and still holds unacknowledged. A
        living worker starts a fetched message at once (prefetch one per process) or soon
        after: held that long by a queued job, the message is with a dead worker (or one
        that fetched ahead, behind a long job). Sending another is harmless either way:
        the claim lets one delivery in."""
        if not job_ids:
            return set()
        wanted = set(job_ids)
        tags = self.redis.zrangebyscore(UNACKED_INDEX, 0, time.time() - older_than)
        found = set()
        for raw in self.redis.hmget(UNACKED, tags) if tags else ():
            try:
                payload = json.loads(raw)[0]
                headers = payload.get("headers") or {}
            except (TypeError, ValueError, IndexError, AttributeError):
                continue  # not a message of ours
            if headers.get("task") != TRAIN_TASK:
                continue
            found.update(wanted.intersection(JOB_ID.findall(str(headers.get("argsrepr", "")))))
        return found

    def ping(self) -> None:
        """Raises when the broker cannot be reached."""
        with self.celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=self.timeout)
            connection.default_channel.client.ping()
