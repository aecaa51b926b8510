"""Faults that lose or duplicate Celery tasks with a Redis broker, and what the service does."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from backprop.settings import Settings
from messaging.dispatch import Dispatcher
from store import job_data
from store.db import get_database
from store.models import Job
from tests.support.stack import Client, ManagedProcess
from worker.setup import build_trainer

from .conftest import REPORT, audit, injected, long_job, model_weights, reference_weights


def wait_progress(
    client: Client, job_id: str, past_epoch: int, timeout=60.0, attempt: int = 1
) -> dict:
    """Wait until the job's attempt number ``attempt`` is running beyond an epoch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.job(job_id)
        if (
            job["status"] == "running"
            and job["attempts"] == attempt
            and job["progress"]["epoch"] > past_epoch
        ):
            return job
        assert job["status"] in ("queued", "running"), job
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} made no progress past epoch {past_epoch}")


def test_sigkill_the_worker_five_times_and_the_weights_are_still_exact(make_stack, fault_db):
    stack = make_stack(fault_db)
    client = stack.api()
    stack.beat()
    worker = stack.worker("w0")
    job = client.submit(long_job(epochs=14))
    seen = 0
    for kill in range(5):
        # this attempt made progress (at least one epoch recorded past the last kill)
        running = wait_progress(client, job["id"], seen, attempt=kill + 1)
        seen = running["progress"]["epoch"]
        time.sleep(0.07 * (kill + 1))  # somewhere inside the next epoch
        worker.kill()  # SIGKILL the worker and its pool child: no cleanup, no ack
        injected()
        worker = stack.worker(f"w{kill + 1}")
    done = client.wait(job["id"], timeout=120)
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 6
    kinds = [e["kind"] for e in done["history"]]
    assert kinds.count("resumed") == 5 and kinds.count("lease_expired") == 5
    for got, want in zip(model_weights(client, job["id"]), reference_weights(fault_db, job["id"])):
        assert np.array_equal(got, want), "resumed run differs from the uninterrupted one"
    audit(fault_db, [job["id"]])


def test_sigkill_a_job_on_a_data_set_twice_and_its_split_and_weights_are_still_exact(
    make_stack, fault_db
):
    stack = make_stack(fault_db)
    client = stack.api()
    stack.beat()
    worker = stack.worker("d0")
    inline = long_job(epochs=10)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        inputs=np.array(inline["data"]["inputs"]),
        targets=np.array(inline["data"]["targets"]),
    )
    uploaded = client.post(
        "/v1/datasets", data=buffer.getvalue(), headers={"Content-Type": "application/x-npz"}
    )
    assert uploaded.status_code == 201, uploaded.text
    spec = {
        **inline,
        "data": {"dataset_id": uploaded.json()["id"], "batch_size": 1},
        "options": {"validation_split": 0.1},
    }
    job = client.submit(spec)
    seen = 0
    for kill in range(2):
        running = wait_progress(client, job["id"], seen, attempt=kill + 1)
        seen = running["progress"]["epoch"]
        time.sleep(0.05 * (kill + 1))  # inside the next epoch
        worker.kill()
        injected()
        worker = stack.worker(f"d{kill + 1}")
    done = client.wait(job["id"], timeout=120)
    assert done["status"] == "succeeded", done
    assert [e["kind"] for e in done["history"]].count("resumed") == 2
    for got, want in zip(model_weights(client, job["id"]), reference_weights(fault_db, job["id"])):
        assert np.array_equal(got, want), "resumed run differs from the uninterrupted one"
    audit(fault_db, [job["id"]])


def test_redis_restarted_empty_while_twenty_jobs_wait(make_stack, fault_db):
    stack = make_stack(fault_db)
    client = stack.api()
    small = {
        "structure": [2, 3, 1],
        "epochs": 3,
        "learning_rate": 1.0,
        "data": {
            "inputs": [[0, 0], [0, 1], [1, 0], [1, 1]],
            "targets": [[0], [1], [1], [0]],
            "batch_size": 2,
        },
    }
    ids = [client.submit(small)["id"] for _ in range(20)]  # no worker yet: all queued in Redis
    stack.redis.stop()
    stack.redis.wipe()
    stack.redis.start()  # same port, nothing in it: every task message is gone
    injected()
    stack.worker()
    stack.beat()
    for job_id in ids:
        assert client.wait(job_id, timeout=90)["status"] == "succeeded"
    audit(fault_db, ids)


def test_two_workers_and_two_messages_train_a_job_once(make_stack, fault_db):
    stack = make_stack(fault_db)
    client = stack.api()
    workers = [stack.worker("a", start=False), stack.worker("b", start=False)]
    for w in workers:
        w.start(ready_marker=" ready.")
    job = client.submit(long_job(epochs=3))
    settings = Settings(redis_url=stack.redis.url, training_queue=stack.env["TRAINING_QUEUE"])
    Dispatcher(settings).send(job["id"])  # a duplicate message, as a redelivery would be
    injected()
    done = client.wait(job["id"], timeout=60)
    assert done["status"] == "succeeded" and done["attempts"] == 1
    assert [e["kind"] for e in done["history"]].count("claimed") == 1
    logs = "".join(w.output() for w in workers)
    assert "not claimable" in logs
    audit(fault_db, [job["id"]])


def test_redelivery_after_the_visibility_timeout_does_not_train_again(make_stack, fault_db):
    stack = make_stack(fault_db, visibility_timeout=2, unacked_restore_seconds=1)
    client = stack.api()
    first, second = stack.worker("first"), stack.worker("second")
    job = client.submit(long_job(epochs=50, samples=6000))  # 6 s or more
    done = client.wait(job["id"], timeout=90)
    injected()
    assert done["status"] == "succeeded"
    assert done["runtime_seconds"] > 3.5, done["runtime_seconds"]  # longer than 2 s + sweep
    logs = first.output() + second.output()
    assert "not claimable" in logs, "the message was not redelivered within the job"
    assert [e["kind"] for e in done["history"]].count("claimed") == 1
    metrics = client.get(f"/v1/jobs/{job['id']}/metrics").json()["metrics"]
    assert [m["epoch"] for m in metrics] == list(range(1, 51))
    audit(fault_db, [job["id"]])


def test_broker_down_at_submit_still_202_and_the_job_runs_later(make_stack, fault_db):
    stack = make_stack(fault_db)
    client = stack.api()
    stack.redis.stop()
    injected()
    started = time.monotonic()
    response = client.post("/v1/jobs", json=long_job(epochs=2, samples=50))
    assert response.status_code == 202, response.text
    assert time.monotonic() - started < 5
    job = client.job(response.json()["id"])
    assert job["status"] == "queued"
    assert "dispatch_failed" in [e["kind"] for e in job["history"]]
    assert client.get("/readyz").status_code == 503
    stack.redis.start()
    stack.worker()
    stack.beat()
    assert client.wait(job["id"], timeout=60)["status"] == "succeeded"
    audit(fault_db, [job["id"]])


def test_postgres_down_for_seconds_mid_job(make_stack, tmp_path):
    from cli.schema import migrate
    from tests.support.services import PrivatePostgres, create_database, sqlalchemy_url

    pg = PrivatePostgres(tmp_path / "own-pg")  # a server of this test alone: it gets stopped
    try:
        url = sqlalchemy_url(create_database(pg.url, prefix="bpj_outage"))
        migrate(url)
        stack = make_stack(url)
        client = stack.api()
        stack.beat()
        stack.worker()
        job = client.submit(long_job(epochs=16))
        wait_progress(client, job["id"], 2)
        pg.stop()
        injected()
        answers = {client.get(f"/v1/jobs/{job['id']}").status_code for _ in range(5)}
        down = client.get(f"/v1/jobs/{job['id']}")
        time.sleep(3)
        pg.start()
        assert answers == {503}
        assert down.headers["Content-Type"] == "application/problem+json"
        assert down.headers["Retry-After"]
        done = client.wait(job["id"], timeout=120)
        assert done["status"] == "succeeded", done
        for got, want in zip(model_weights(client, job["id"]), reference_weights(url, job["id"])):
            assert np.array_equal(got, want)
        audit(url, [job["id"]])
    finally:
        pg.cleanup()


@pytest.mark.parametrize("case", ["timeout", "diverged", "cancelled"])
def test_limits_and_endings(make_stack, fault_db, case):
    stack = make_stack(fault_db)
    client = stack.api()
    stack.worker()
    spec = long_job(epochs=100)
    if case == "timeout":
        spec["options"] = {"max_runtime_seconds": 1}
    if case == "diverged":
        rng = np.random.RandomState(0)
        spec = {
            "structure": [3, 16, 1],
            "epochs": 50,
            "learning_rate": 5.0,
            "seed": 1,
            "options": {"activation": "relu", "output_activation": "identity"},
            "data": {
                "inputs": (rng.randn(50, 3) * 10).tolist(),
                "targets": (rng.randn(50, 1) * 1e3).tolist(),
                "batch_size": 5,
            },
        }
    job = client.submit(spec)
    if case == "cancelled":
        wait_progress(client, job["id"], 0)
        client.post(f"/v1/jobs/{job['id']}/cancel")
    done = client.wait(job["id"], timeout=60)
    injected()
    kinds = [e["kind"] for e in done["history"]]
    if case == "timeout":
        assert done["status"] == "failed" and done["error"]["type"] == "timeout"
        assert "checkpoint" in kinds and done["runtime_seconds"] >= 1
    elif case == "diverged":
        assert done["status"] == "failed" and done["error"]["type"] == "diverged"
        assert "epoch" in done["error"]["message"]
    else:
        assert done["status"] == "cancelled" and done["error"] is None
    assert client.get(f"/v1/jobs/{job['id']}/model").status_code == 409  # no model published
    audit(fault_db, [job["id"]], expected=done["status"])


def test_a_job_that_keeps_killing_its_worker_fails_after_max_attempts(make_stack, fault_db):
    stack = make_stack(fault_db, max_attempts=2)
    client = stack.api()
    stack.beat()
    worker = stack.worker("k0")
    job = client.submit(long_job(epochs=50))
    for attempt in (1, 2):  # as an OOM kill would, every time the job runs
        wait_progress(client, job["id"], 0, attempt=attempt)
        worker.kill()
        injected()
        worker = stack.worker(f"k{attempt}")
    done = client.wait(job["id"], timeout=60)
    assert done["status"] == "failed" and done["error"]["type"] == "attempts_exhausted"
    assert "started 2 times" in done["error"]["message"] and done["attempts"] == 2
    audit(fault_db, [job["id"]], expected="failed")


def test_a_tenant_never_runs_more_jobs_than_its_limit(make_stack, fault_db):
    stack = make_stack(fault_db, max_running_jobs_per_tenant=1)
    client = stack.api()
    stack.beat()
    stack.worker("q1")
    stack.worker("q2")  # capacity for two, but the tenant may run one at a time
    ids = [client.submit(long_job(epochs=6, samples=1500))["id"] for _ in range(2)]
    most_at_once = 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        statuses = [client.job(job_id)["status"] for job_id in ids]
        most_at_once = max(most_at_once, statuses.count("running"))
        if all(s == "succeeded" for s in statuses):
            break
        time.sleep(0.05)
    assert statuses == ["succeeded", "succeeded"]
    assert most_at_once == 1
    audit(fault_db, ids)


def test_a_broker_restart_under_a_running_job_prints_no_false_warning(make_stack, fault_db):
    stack = make_stack(fault_db)
    client = stack.api()
    stack.beat()
    worker = stack.worker()
    job = client.submit(long_job(epochs=10))
    wait_progress(client, job["id"], 0)
    offset = len(worker.output())
    stack.redis.stop()
    injected()
    time.sleep(1)
    stack.redis.start()
    done = client.wait(job["id"], timeout=90)
    assert done["status"] == "succeeded" and done["attempts"] == 1  # kept running throughout
    worker.wait_for_output("Connected to redis", timeout=30, offset=offset)
    after = worker.output(offset)
    assert "connection to broker lost" in after.lower()  # the fault did reach the worker
    assert "CPendingDeprecationWarning" not in after and "In Celery 5.1" not in after
    audit(fault_db, [job["id"]])


def _pool_children(worker) -> list:
    import psutil

    return psutil.Process(worker.process.pid).children()


def test_a_killed_training_process_is_released_and_claimed_again_at_once(make_stack, fault_db):
    # a lease of 30 s: only the parent's report can bring the job back this fast
    stack = make_stack(fault_db, lease_seconds=30, heartbeat_seconds=0.5)
    client = stack.api()
    worker = stack.worker()
    job = client.submit(long_job(epochs=12))
    later = client.submit(long_job(epochs=2, samples=200))  # queued behind it, never started
    wait_progress(client, job["id"], 1)
    [child] = _pool_children(worker)
    child.kill()  # SIGKILL the training process; its parent lives and sees it die
    killed = time.monotonic()
    injected()
    while True:
        seen = client.job(job["id"])
        if seen["attempts"] == 2:
            break
        assert time.monotonic() - killed < 15, seen
        time.sleep(0.02)
    REPORT.setdefault("kill_to_claim_seconds", []).append(round(time.monotonic() - killed, 2))
    done = client.wait(job["id"], timeout=120)
    assert done["status"] == "succeeded"
    kinds = [e["kind"] for e in done["history"]]
    assert "worker_lost" in kinds and "lease_expired" not in kinds and "resumed" in kinds
    # the resumed job went ahead of the job that was waiting
    assert client.wait(later["id"], timeout=60)["started_at"] > done["started_at"]
    first_claim_of_later = client.job(later["id"])["history"]
    claimed_at = [e["at"] for e in first_claim_of_later if e["kind"] == "claimed"][0]
    resumed_at = [e["at"] for e in done["history"] if e["kind"] == "claimed"][1]
    assert resumed_at < claimed_at
    for got, want in zip(model_weights(client, job["id"]), reference_weights(fault_db, job["id"])):
        assert np.array_equal(got, want)
    assert "released and offered again" in worker.output()
    audit(fault_db, [job["id"], later["id"]])


def test_a_message_fetched_by_a_worker_killed_whole_is_sent_again_before_the_visibility_timeout(
    make_stack, fault_db
):
    # visibility timeout of an hour: only the reconciler can bring this job back in time
    stack = make_stack(fault_db, visibility_timeout=3600)
    client = stack.api()
    stack.control()
    stack.beat()
    job = client.submit(long_job(epochs=2, samples=200))
    taker = ManagedProcess(
        "taker", [sys.executable, str(Path(__file__).with_name("fetch_and_hang.py"))],
        stack.env, stack.tmp / "taker.log",
    )  # fmt: skip
    stack.processes.append(taker)
    taker.start(ready_marker="fetched", timeout=30)
    assert job["id"] in taker.output()
    taker.kill()  # the message is with a dead consumer, unacknowledged, its marker set
    injected()
    killed = time.monotonic()
    stack.worker()
    done = client.wait(job["id"], timeout=60)
    assert done["status"] == "succeeded"
    assert time.monotonic() - killed < 30  # not the visibility timeout's hour
    messages = [e["message"] for e in done["history"] if e["kind"] == "dispatched"]
    assert "re-sent by the reconciler" in messages
    audit(fault_db, [job["id"]])


def undisturbed_run(database_url: str, job_id: str):
    """Core on the stored spec and data, in this process, from the start: its trainer (the
    final weights and each epoch's metrics, learning rate included)."""
    db = get_database(database_url)
    with db.session() as session:
        job = session.get(Job, job_id)
        spec = job.spec
        arrays, _ = job_data.load_data_and_checkpoint(session, job)
    trainer = build_trainer(spec, arrays)
    trainer.run()
    return trainer


def test_sigkill_mid_epoch_under_adam_and_a_cosine_schedule_resumes_to_the_bit(
    make_stack, fault_db
):
    stack = make_stack(fault_db)
    client = stack.api()
    stack.beat()
    worker = stack.worker("a0")
    steps = {
        "optimizer": {"name": "adam"},
        "schedule": {"name": "cosine", "warmup": 2, "per": "step"},
    }
    job = client.submit({**long_job(epochs=10), "learning_rate": 0.01, "options": steps})
    wait_progress(client, job["id"], 0)  # an epoch is done and checkpoints are being written
    time.sleep(0.07)  # inside the next epoch
    worker.kill()  # Adam's moments and the schedule's step are only in the checkpoint now
    injected()
    stack.worker("a1")
    done = client.wait(job["id"], timeout=120)
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2
    assert done["options"]["optimizer"]["name"] == "adam"
    resumed = [e["message"] for e in done["history"] if e["kind"] == "resumed"]
    assert len(resumed) == 1 and ", batch " in resumed[0], resumed  # a checkpoint mid-epoch
    reference = undisturbed_run(fault_db, job["id"])
    served = model_weights(client, job["id"])
    for got, want in zip(served, reference.network.W_n + reference.network.B_n):
        assert np.array_equal(got, want), "resumed run differs from the uninterrupted one"
    rows = client.get(f"/v1/jobs/{job['id']}/metrics").json()["metrics"]
    assert [m["epoch"] for m in rows] == list(range(1, 11))
    # the rate of each epoch's last step, as the uninterrupted run had it (and still decaying)
    rates = [m.learning_rate for m in reference.history]
    assert [m["learning_rate"] for m in rows] == rates
    assert rates[0] < 0.01 and rates == sorted(rates, reverse=True)
    audit(fault_db, [job["id"]])
