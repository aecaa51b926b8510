"""Sending "job X may be ready" to the training queue. The message carries the id only.

Beside each message, a marker key in the same Redis says "a message for job X is waiting"
and names the message's task id (``MARKER``): it is set before the message is sent and
deleted by the worker that takes the message. The reconciler re-sends a queued job only when
its marker is gone, that is when no message for it can be waiting: a job that merely waits
behind busy workers is never sent twice. Markers live and die with the messages: a Redis
restarted empty or a FLUSHALL loses both, and the reconciler then re-sends every queued job.
The reason to change is how task messages are sent and their markers kept.

A worker killed whole just after it fetched a message leaves the marker behind: Redis gives
the message back only after VISIBILITY_TIMEOUT, or never when the worker died between taking
it off the queue and recording it as fetched. ``stranded`` finds such markers (their message
is not in the queue and no living worker holds it), and the reconciler sends those jobs
again instead of waiting for VISIBILITY_TIMEOUT.
"""

from __future__ import annotations

import json
import time

import redis
from kombu.utils.uuid import uuid

from backprop.settings import Settings

from .broker import broker_redis
from .celery_app import (
    DELIVER_SWEEP_TASK,
    DELIVER_TASK,
    NEW_PRIORITY,
    RESUME_PRIORITY,
    TRAIN_TASK,
    make_celery,
)

MARKER = "backprop:waiting:"
# kombu's Redis transport keeps every fetched, unacknowledged message in this hash (by
# delivery tag) and the time it was fetched in this sorted set
UNACKED, UNACKED_INDEX = "unacked", "unacked_index"
# how long living workers get to say which fetched messages they hold
ANSWER_SECONDS = 1.0
SCAN_CHUNK = 500  # messages read from a queue's list at a time


def _task_id(raw) -> str | None:
    """The task id of a message as kombu stores it in a queue's list or in ``unacked``."""
    try:
        message = json.loads(raw)
        return (message[0] if isinstance(message, list) else message)["headers"]["id"]
    except (TypeError, ValueError, LookupError):
        return None  # not a message of ours


def queue_keys(queue: str) -> list[str]:
    """The Redis lists that hold a queue's messages, one per priority step."""
    # kombu's Redis transport keeps a list per priority step (celery_app's priority_steps):
    # "<queue>" for the first, "<queue>\x06\x16<step>" for the others
    return [f"{queue}\x06\x16{step}" if step else queue for step in (RESUME_PRIORITY, NEW_PRIORITY)]


class Dispatcher:
    def __init__(self, settings: Settings):
        self.celery = make_celery(settings)
        self.queue = settings.training_queue
        self.control_queue = settings.control_queue
        self.callback_queue = settings.callbacks_queue
        self.timeout = settings.broker_timeout_seconds
        # A marker outlives its message only when a worker died holding a message it had not
        # started yet (a moment's state, with one message per training process): Redis gives
        # such a message back after VISIBILITY_TIMEOUT, which is when the marker expires too.
        self.marker_seconds = settings.visibility_timeout
        self.redis = broker_redis(settings)
        self.queue_keys = queue_keys(self.queue)

    def send(self, job_id: str, *, first: bool = False) -> None:
        """Publish the task; raises (kombu's OperationalError or a RedisError) within about a
        second when the broker is down or hung. ``first``: a job that already ran and lost its
        worker goes ahead of every job that never started (the highest priority)."""
        task_id = uuid()
        # the marker first: a worker that takes the message at once finds it to delete
        self.mark_waiting(job_id, task_id)
        try:
            self.celery.send_task(
                TRAIN_TASK,
                args=[job_id],
                task_id=task_id,
                queue=self.queue,
                retry=False,
                priority=RESUME_PRIORITY if first else NEW_PRIORITY,
            )
        except Exception:
            self.taken(job_id)
            raise

    def callback(self, job_id: str) -> None:
        """Queue the delivery of a finished job's callback (``worker/webhooks.py``)."""
        self.celery.send_task(DELIVER_TASK, args=[job_id], queue=self.callback_queue, retry=False)

    def sweep_callback(self, sweep_id: str) -> None:
        """Queue the delivery of an ended sweep's callback (``worker/webhooks.py``)."""
        self.celery.send_task(
            DELIVER_SWEEP_TASK, args=[sweep_id], queue=self.callback_queue, retry=False
        )

    def mark_waiting(self, job_id: str, task_id: str) -> None:
        """The message ``task_id`` for the job is (again) in the queue."""
        self.redis.set(MARKER + job_id, task_id, ex=self.marker_seconds)

    def taken(self, job_id: str) -> None:
        """The message for the job left the queue (a worker took it)."""
        try:
            self.redis.delete(MARKER + job_id)
        except redis.RedisError:
            pass  # the reconciler then believes a message waits: re-sent once it expires

    def waiting(self, job_ids: list[str]) -> dict[str, str]:
        """Those of the jobs whose message is still in the queue, with the message's task id."""
        if not job_ids:
            return {}
        found = self.redis.mget([MARKER + job_id for job_id in job_ids])
        return {job_id: mark.decode() for job_id, mark in zip(job_ids, found) if mark is not None}

    def stranded(self, waiting: dict[str, str], older_than: float) -> set[str]:
        """Those of the waiting jobs (``waiting()``) whose marked message is not in the queue,
        was not fetched in the last ``older_than`` seconds, and is held by no living worker:
        the worker that took it died, either holding it unacknowledged (Redis would give it
        back only after VISIBILITY_TIMEOUT) or in the moment between taking it off the queue
        and recording it as fetched (then it is gone). A living worker holding a fetched
        message for a while (it waits for a free training process, say) answers for it and
        keeps it. Sending another is harmless anyway: the claim lets one delivery in."""
        job_of = {task_id: job_id for job_id, task_id in waiting.items()}
        unseen = set(job_of) - self._queued(set(job_of))
        if unseen:  # fetched a moment ago: the worker that took it is still starting it
            recent = self.redis.zrangebyscore(UNACKED_INDEX, time.time() - older_than, "+inf")
            if recent:
                unseen -= {_task_id(raw) for raw in self.redis.hmget(UNACKED, recent)}
        if not unseen:
            return set()
        # every living worker answers with the requests it holds (reserved or running)
        inspect = self.celery.control.inspect(timeout=min(self.timeout, ANSWER_SECONDS))
        answers = inspect.query_task(sorted(unseen)) or {}
        known = {task_id for answer in answers.values() for task_id in answer}
        return {job_of[task_id] for task_id in unseen - known}

    def _queued(self, task_ids: set[str]) -> set[str]:
        """Those of the messages that still wait in the training queue. Messages leave a
        queue's list at its tail, the oldest first, and the messages asked about are old:
        the lists are read from the tail, a chunk at a time, until all of them are found."""
        found: set[str] = set()
        for key in self.queue_keys:
            end = -1
            while found != task_ids:
                chunk = self.redis.lrange(key, end - SCAN_CHUNK + 1, end)
                found.update(task_ids.intersection(map(_task_id, chunk)))
                if len(chunk) < SCAN_CHUNK:
                    break  # (a message that moved meanwhile may be missed: sent again)
                end -= SCAN_CHUNK
        return found

    def ping(self) -> None:
        """Raises when the broker cannot be reached."""
        with self.celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=self.timeout)
            connection.default_channel.client.ping()
