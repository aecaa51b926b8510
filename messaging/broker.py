"""Connections to the broker's Redis: its timeouts and TCP keepalives, the same for the Celery
transport (``celery_app``), the markers (``dispatch``) and pub/sub (``notify``, ``api/watch.py``).
The reason to change is the broker connections' timeouts and keepalives.
"""

from __future__ import annotations

import socket

import redis

from backprop.settings import Settings


def keepalive_options(settings: Settings) -> dict:
    """redis-py's options for TCP keepalives (``Settings.tcp_keepalive``)."""
    idle, interval, count = settings.tcp_keepalive
    return {
        "socket_keepalive": True,
        "socket_keepalive_options": {
            socket.TCP_KEEPIDLE: idle,
            socket.TCP_KEEPINTVL: interval,
            socket.TCP_KEEPCNT: count,
        },
    }


def broker_redis(settings: Settings, **options) -> redis.Redis:
    """A client of the broker's Redis with the broker's timeouts. redis-py's pool notices a
    fork and reconnects, so one client serves a prefork pool or gunicorn's workers."""
    options.setdefault("socket_timeout", settings.broker_timeout_seconds)
    for name, value in keepalive_options(settings).items():
        options.setdefault(name, value)
    return redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=settings.broker_timeout_seconds, **options
    )
