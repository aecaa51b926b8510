""" "Job X changed": a Redis pub/sub message that wakes long polls (``api/watch.py``).

The database stays the source of truth: a message carries the job id only, and a reader
that missed one still sees the change on its next read. Publishing is best effort, with
the broker's timeouts, and never fails the transaction that it follows.
"""

from __future__ import annotations

import logging

import redis

from backprop.settings import Settings

CHANNEL = "backprop:jobs"

log = logging.getLogger("backprop.notify")


def broker_redis(settings: Settings, **options) -> redis.Redis:
    """A client of the broker's Redis with the broker's timeouts. redis-py's pool notices a
    fork and reconnects, so one client serves a prefork pool or gunicorn's workers."""
    options.setdefault("socket_timeout", settings.broker_timeout_seconds)
    return redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=settings.broker_timeout_seconds, **options
    )


class Notifier:
    def __init__(self, settings: Settings):
        self.client = broker_redis(settings)

    def __call__(self, job_id: str) -> None:
        try:
            self.client.publish(CHANNEL, job_id)
        except (redis.RedisError, OSError) as exc:  # pollers fall back to their own clock
            log.debug("job %s: change not published (%s)", job_id, exc)
