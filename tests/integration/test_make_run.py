"""`make run`: the embedded default serves the flow, restarts a dead worker, stops on Ctrl-C."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from tests.support.stack import Client, ManagedProcess

XOR = {
    "structure": [2, 3, 1],
    "epochs": 3,
    "learning_rate": 2.0,
    "seed": 7,
    "data": {
        "inputs": [[0, 0], [0, 1], [1, 0], [1, 1]],
        "targets": [[0], [1], [1], [0]],
        "batch_size": 2,
    },
}


def celery_workers(root_pid: int, queues: str | None = "training") -> list[psutil.Process]:
    """The Celery worker main processes under `make run` (not their pool children) that
    consume these queues (the training worker by default)."""
    found = []
    for p in psutil.Process(root_pid).children(recursive=True):
        try:
            cmd = p.cmdline()
        except psutil.NoSuchProcess:
            continue
        try:
            # the supervisor's own child: not a pool child, nor a pool child orphaned by a
            # killed worker for a moment (its dying parent's cmdline reads empty)
            parent = " ".join(p.parent().cmdline()) if p.parent() else ""
        except psutil.NoSuchProcess:
            continue
        if "celery" in " ".join(cmd) and "worker" in cmd and "backprop" in parent:
            if queues is None or cmd[cmd.index("--queues") + 1] == queues:
                found.append(p)
    return found


def test_make_run_serves_jobs_restarts_a_dead_worker_and_stops_cleanly(make_run):
    process, base, var = make_run
    token = (var / "dev-token").read_text().strip()
    client = Client(base, token)
    assert token in process.output(), "the token is printed"

    first = client.submit(XOR)
    assert client.wait(first["id"], timeout=60)["status"] == "succeeded"

    (worker,) = celery_workers(process.process.pid)
    # the reconciler has a worker of its own: it never waits behind training
    (control,) = celery_workers(process.process.pid, queues="celery")
    assert control.cmdline()[control.cmdline().index("--pool") + 1] == "solo"
    assert worker.cmdline()[worker.cmdline().index("--queues") + 1] == "training"
    for child in worker.children(recursive=True):
        child.kill()
    worker.kill()
    killed = time.monotonic()
    while time.monotonic() < killed + 30:
        replaced = [w for w in celery_workers(process.process.pid) if w.pid != worker.pid]
        if replaced and "worker was killed (signal 9); restarting now" in process.output():
            break
        time.sleep(0.05)
    else:
        pytest.fail("the dead worker was not restarted:\n" + process.output()[-2000:])
    # a killed program is restarted without a backoff (the supervisor checks twice a second)
    assert time.monotonic() - killed < 5

    second = client.submit(XOR)
    assert client.wait(second["id"], timeout=60)["status"] == "succeeded"

    children = psutil.Process(process.process.pid).children(recursive=True)
    os.killpg(process.process.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's group
    process.process.wait(timeout=40)
    time.sleep(0.5)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


def test_make_run_keeps_the_database_and_token_across_restarts(make_run, tmp_path):
    process, base, var = make_run
    token = (var / "dev-token").read_text().strip()
    job = Client(base, token).submit(XOR)
    Client(base, token).wait(job["id"], timeout=60)
    os.killpg(process.process.pid, signal.SIGINT)
    process.process.wait(timeout=40)

    again = ManagedProcess("make-run-2", process.argv, process.env, tmp_path / "again.log")
    again.start(ready_marker="backprop-jobs is running at", timeout=120)
    try:
        assert (var / "dev-token").read_text().strip() == token
        assert Client(base, token).job(job["id"])["status"] == "succeeded"
    finally:
        again.stop(grace=40)
