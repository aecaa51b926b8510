"""Sending "job X may be ready" to the training queue. The message carries the id only.

Beside each message, a marker key in the same Redis says "a message for job X is waiting"
(``MARKER``): it is set before the message is sent and deleted by the worker that takes the
message. The reconciler re-sends a queued job only when its marker is gone, that is when
no message for it can be waiting: a job that merely waits behind busy workers is never sent
twice. Markers live and die with the messages: a Redis restarted empty or a FLUSHALL loses
both, and the reconciler then re-sends every queued job.
"""

from __future__ import annotations

import redis

from backprop.settings import Settings

from .celery_app import NEW_PRIORITY, RESUME_PRIORITY, TRAIN_TASK, make_celery

MARKER = "backprop:waiting:"
MARKER_SECONDS = 86_400  # a safety net only: a marker is normally deleted within seconds


class Dispatcher:
    def __init__(self, settings: Settings):
        self.celery = make_celery(settings)
        self.queue = settings.training_queue
        self.timeout = settings.broker_timeout_seconds
        self.redis = redis.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=settings.broker_timeout_seconds,
            socket_timeout=settings.broker_timeout_seconds,
        )

    def send(self, job_id: str, *, first: bool = False) -> None:
        """Publish the task; raises (kombu's OperationalError or a RedisError) within about a
        second when the broker is down or hung. ``first``: a job that already ran and lost its
        worker goes ahead of every job that never started (the highest priority)."""
        # the marker first: a worker that takes the message at once finds it to delete
        self.redis.set(MARKER + job_id, 1, ex=MARKER_SECONDS)
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

    def taken(self, job_id: str) -> None:
        """The message for the job left the queue (a worker took it)."""
        try:
            self.redis.delete(MARKER + job_id)
        except redis.RedisError:
            pass  # the reconciler then believes a message waits: re-sent after MARKER_SECONDS

    def waiting(self, job_ids: list[str]) -> set[str]:
        """Those of the jobs whose message is still in the queue."""
        if not job_ids:
            return set()
        found = self.redis.mget([MARKER + job_id for job_id in job_ids])
        return {job_id for job_id, mark in zip(job_ids, found) if mark is not None}

    def ping(self) -> None:
        """Raises when the broker cannot be reached."""
        with self.celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=self.timeout)
            connection.default_channel.client.ping()
