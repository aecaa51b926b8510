"""Sweeps across several workers: max_parallel and the tenant's running limit hold, and a
worker SIGKILLed mid-sweep loses no trial and trains none twice."""

from __future__ import annotations

import time

import numpy as np

from store.db import get_database
from store.models import Job, JobEvent
from tests.support.stack import most_at_once

from .conftest import REPORT, audit, injected, model_weights, reference_weights

ENDINGS = ("succeeded", "failed", "cancelled")


def upload(client, samples: int = 400) -> str:
    rng = np.random.RandomState(8)
    labels = rng.randint(3, size=samples)
    inputs = np.hstack([np.eye(3)[labels], rng.rand(samples, 1)]) * 0.5 + rng.rand(samples, 4) * 0.5
    body = {"inputs": inputs.round(4).tolist(), "targets": np.eye(3)[labels].tolist()}
    response = client.post("/v1/datasets", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def sweep_body(dataset_id: str, **changes) -> dict:
    body = {
        "base": {
            "structure": [4, 8, 3],
            "epochs": 12,
            "learning_rate": 1.0,
            "data": {"dataset_id": dataset_id, "batch_size": 1},
            "options": {"validation_split": 0.25},
        },
        "search": {"learning_rate": {"log_uniform": [0.05, 5]}},
        "method": "random",
        "trials": 8,
        "seed": 4,
        "objective": {"metric": "val_accuracy"},
    }
    return {**body, **changes}


def wait_sweep(client, sweep_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        sweep = client.get(f"/v1/sweeps/{sweep_id}", params={"limit": 200}).json()
        if sweep["status"] in ENDINGS:
            return sweep
        assert time.monotonic() < deadline, sweep["counts"]
        time.sleep(0.2)


def trial_rows(database_url: str, sweep_id: str):
    """Each trial: (job id, created_at, finished_at, [(claimed, released)])."""
    with get_database(database_url).session() as session:
        found = []
        for job in session.query(Job).filter_by(sweep_id=sweep_id).order_by(Job.trial):
            events = session.query(JobEvent).filter_by(job_id=job.id).order_by(JobEvent.id).all()
            spans, start = [], None
            for event in events:
                if event.kind == "claimed":
                    start = event.at
                elif start is not None and event.kind in (*ENDINGS, "lease_expired", "worker_lost"):
                    spans.append((start, event.at))
                    start = None
            found.append((job.id, job.created_at, job.finished_at, spans))
        return found


def test_a_sweep_keeps_to_max_parallel_and_the_tenant_running_limit(make_stack, fault_db):
    # room for four trainings at once, but the tenant may run two, the sweep queue three
    stack = make_stack(fault_db, max_running_jobs_per_tenant=2, worker_concurrency=2)
    client = stack.api()
    stack.beat()
    stack.worker("a"), stack.worker("b")
    body = sweep_body(upload(client), max_parallel=3)
    sweep = client.post("/v1/sweeps", json=body).json()
    done = wait_sweep(client, sweep["id"])
    assert done["status"] == "succeeded" and done["counts"]["succeeded"] == 8
    rows = trial_rows(fault_db, sweep["id"])
    assert most_at_once([(created, finished) for _, created, finished, _ in rows]) == 3
    assert most_at_once([span for *_, spans in rows for span in spans]) == 2
    audit(fault_db, [job_id for job_id, *_ in rows])


def test_a_worker_sigkilled_mid_sweep_loses_no_trial_and_trains_none_twice(make_stack, fault_db):
    # the visibility timeout stays at its default (2 h): a trial released just before the
    # kill, whose message the dying worker took, is sent again by the reconciler
    stack = make_stack(fault_db, worker_concurrency=2)
    client = stack.api()
    stack.beat()
    worker = stack.worker("w0")
    body = sweep_body(
        upload(client, samples=1200),
        max_parallel=2,
        early_stopping={"min_epochs": 2, "reduction_factor": 2},
    )
    sweep = client.post("/v1/sweeps", json=body).json()
    deadline = time.monotonic() + 90
    while True:  # kill while a trial trains past its first epoch, after one has finished
        board = client.get(f"/v1/sweeps/{sweep['id']}").json()
        training = [
            t for t in board["leaderboard"] if t["status"] == "running" and t["progress"]["epoch"]
        ]
        if board["counts"]["succeeded"] >= 1 and training:
            break
        assert time.monotonic() < deadline, board["counts"]
        time.sleep(0.05)
    worker.kill()  # the worker and both training processes, no cleanup
    injected()
    before = dict(REPORT)
    stack.worker("w1")
    done = wait_sweep(client, sweep["id"])
    assert done["status"] == "succeeded"
    assert done["counts"] == {
        "pending": 0, "queued": 0, "running": 0, "paused": 0, "succeeded": 8, "failed": 0,
        "cancelled": 0,
    }  # fmt: skip
    rows = trial_rows(fault_db, sweep["id"])
    assert sorted(client.job(job_id)["trial"] for job_id, *_ in rows) == list(range(1, 9))
    resumed = [job_id for job_id, *_, spans in rows if len(spans) > 1]
    assert resumed, "no trial was running when the worker died"
    audit(fault_db, [job_id for job_id, *_ in rows])
    assert REPORT["jobs_lost"] == before["jobs_lost"]
    assert REPORT["jobs_trained_twice"] == before["jobs_trained_twice"]
    for job_id in resumed:  # resumed trials: one decision per rung, and exact weights
        job = client.job(job_id)
        epochs = [d["epoch"] for d in job["rungs"]]
        assert len(epochs) == len(set(epochs))
        served, exact = model_weights(client, job_id), reference_weights(fault_db, job_id)
        if not job["stopped_early"]:
            assert all(np.array_equal(a, b) for a, b in zip(served, exact))
