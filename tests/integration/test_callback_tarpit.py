"""A callback receiver that drips its answer one byte a second (a tarpit) delays nothing else:
each attempt ends at WEBHOOK_TIMEOUT_SECONDS of wall clock, a normal receiver's callback is
delivered meanwhile, and the reconciler's pass runs on time. Deliveries have a queue and a
worker (threads) of their own, as under `make run` and compose."""

from __future__ import annotations

import re
import socket
import threading
import time

import pytest
import requests

from backprop.settings import Settings
from cli.dev import callbacks_argv, control_argv, worker_argv
from messaging.celery_app import RECONCILE_TASK, make_celery
from tests.conftest import make_token
from tests.integration.test_slow_clients import p99, timed
from tests.integration.test_webhooks import XOR, Receiver
from tests.support.stack import Client, ManagedProcess, start_api

DEADLINE = 2.0


class Tarpit:
    """Accepts, reads the request, then sends its answer one byte a second, for ever."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/slow"
        self.connections = 0
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        self.server.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                connection, _ = self.server.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self._drip, args=(connection,), daemon=True).start()

    def _drip(self, connection):
        with connection:
            connection.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" * 100:
                if self.stopped.wait(1.0):
                    return
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    return

    def close(self):
        self.stopped.set()
        self.server.close()


@pytest.fixture
def deliveries(own_env, tmp_path):
    """An API, a training worker, the reconciler's worker and the callbacks worker of this
    test alone (its own database and queues)."""
    tag = own_env["TRAINING_QUEUE"]
    env = own_env | {
        "WEBHOOK_TIMEOUT_SECONDS": str(DEADLINE),
        "WEBHOOK_ATTEMPTS": "1",
        "CALLBACK_CONCURRENCY": "4",
    }
    settings = Settings(
        training_queue=env["TRAINING_QUEUE"],
        control_queue=env["CONTROL_QUEUE"],
        callback_queue=env["CALLBACK_QUEUE"],
        callback_concurrency=4,
        redis_url=env["REDIS_URL"],
    )
    api, base = start_api(env, tmp_path, "tarpit-api")
    processes = [api]
    for name, argv in (
        ("tarpit-worker", worker_argv(settings, f"tw-{tag}@%h", queues=settings.training_queue)),
        ("tarpit-control", control_argv(settings, f"tc-{tag}@%h")),
        ("tarpit-callbacks", callbacks_argv(settings, f"tb-{tag}@%h")),
    ):
        processes.append(ManagedProcess(name, argv, env, tmp_path / f"{name}.log"))
        processes[-1].start(" ready.")
    yield Client(base, make_token(env["DATABASE_URL"], "t")), settings, processes
    for process in reversed(processes):
        process.stop()


def test_a_tarpit_receiver_delays_neither_other_deliveries_nor_the_reconciler(deliveries):
    client, settings, processes = deliveries
    control = processes[2]
    tarpit, good = Tarpit(), Receiver()
    try:
        slow = [client.submit({**XOR, "callback_url": tarpit.url}) for _ in range(3)]
        for job in slow:
            assert client.wait(job["id"])["status"] == "succeeded"
        _wait(lambda: tarpit.connections == 3, 10, "the tarpit was never called")
        # every thread of the deliveries' worker but one is held by the tarpit now
        headers = {"Authorization": f"Bearer {client.token}"}
        jobs_p99 = p99(timed(requests.Session(), f"{client.base}/v1/jobs", 60, headers=headers))
        health_p99 = p99(timed(requests.Session(), f"{client.base}/healthz", 200))
        job = client.submit({**XOR, "callback_url": good.url + "/hook"})
        ended = client.wait(job["id"])
        assert ended["status"] == "succeeded"
        good.wait_for(1, timeout=10)
        waited = good.calls[0][2] - _ended_at(ended)
        # the reconciler's pass, sent now, runs at once on its own worker
        offset = len(control.output())
        sent = time.monotonic()
        make_celery(settings).send_task(RECONCILE_TASK, queue=settings.control_queue)
        control.wait_for_output("Task backprop.reconcile[", timeout=10, offset=offset)
        reconciled = time.monotonic() - sent
        # each tarpit attempt ended at its deadline, as a failed attempt
        for job in slow:
            callback = _wait(lambda j=job: _final_callback(client, j["id"]), 15, "no ending")
            assert callback["state"] == "failed", callback
            history = client.job(job["id"])["history"]
            attempt = next(e for e in history if e["kind"] == "callback")
            assert f"no answer within {DEADLINE:g} s" in attempt["message"], attempt
            took = float(re.search(r" in (\d+) ms", attempt["message"]).group(1))
            assert DEADLINE * 1000 <= took < DEADLINE * 1000 + 1500, attempt
    finally:
        tarpit.close()
        good.close()
    print(
        f"normal delivery {waited:.2f} s after its job ended; reconciler pass {reconciled:.2f} s; "
        f"GET /v1/jobs p99 {jobs_p99 * 1000:.1f} ms, /healthz p99 {health_p99 * 1000:.1f} ms"
    )
    assert waited < 1.5, waited
    assert reconciled < 1.5, reconciled
    assert jobs_p99 < 0.25 and health_p99 < 0.1


def _ended_at(job: dict) -> float:
    from datetime import datetime

    return datetime.fromisoformat(job["finished_at"]).timestamp()


def _final_callback(client, job_id: str):
    state = client.job(job_id).get("callback_state")
    return {"state": state} if state in ("delivered", "failed") else None


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(what)
