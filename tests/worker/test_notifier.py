"""messaging.notify.Notifier on a real Redis: a change is published before the call returns
(the caller hands the interpreter to the sending thread instead of waiting for Python's
thread switch), and a broker that does not answer costs the caller HANDOFF_SECONDS at most."""

from __future__ import annotations

import socket
import time
import uuid

import redis

from backprop.settings import Settings
from messaging.notify import CHANNEL, HANDOFF_SECONDS, Notifier


def busy(seconds: float) -> None:
    """Python work that holds the interpreter, as a training process does between calls."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_a_change_is_published_before_the_call_returns(redis_url):
    subscriber = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe(CHANNEL)
    assert subscriber.get_message(timeout=1.0) is None  # the subscription is confirmed
    notify = Notifier(Settings(redis_url=redis_url))
    sent = []
    for _ in range(20):
        job_id = str(uuid.uuid4())
        notify(job_id)
        busy(0.002)  # no sleep: without the handoff the thread switch comes after 5 ms
        message = subscriber.get_message(timeout=0)
        while message is not None and message["data"].decode() != job_id:
            message = subscriber.get_message(timeout=0)  # an earlier test's id
        sent.append(message is not None)
    subscriber.close()
    # each was out before the caller's own work went on (a loaded machine may miss one)
    assert sum(sent) >= 18, sent


def test_a_broker_that_never_answers_costs_the_caller_a_bounded_wait():
    silent = socket.socket()  # accepts connections, never answers a command
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    try:
        notify = Notifier(Settings(redis_url=f"redis://127.0.0.1:{port}/0"))
        waits = []
        for i in range(10):
            started = time.perf_counter()
            notify(f"job-{i}")
            waits.append(time.perf_counter() - started)
    finally:
        silent.close()
    assert max(waits) < HANDOFF_SECONDS + 0.05, waits
