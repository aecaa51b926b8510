"""The tenant's queued-jobs limit under concurrent submits of jobs and sweeps together: a
sweep's first trials are counted in the same turn as every job submit's, so together they
never pass the limit, and each refusal is one the limit calls for."""

from __future__ import annotations

import threading
import uuid

import numpy as np
import pytest

from store import jobs, scheduling
from store.db import get_database
from store.models import QUEUED, Sweep
from tests.support.specs import inline_spec

LIMIT = 7
SWEEPS, JOBS, PARALLEL = 6, 6, 2  # each sweep releases PARALLEL trials at once

BASE = inline_spec(samples=3)


@pytest.fixture
def db(database_url):
    return get_database(database_url)


def submit_job(db, tenant: str) -> None:
    with db.session() as s:
        jobs.create_job(
            s, db, tenant=tenant, spec=BASE, name=None, labels={}, chunk_bytes=1024,
            arrays={"inputs": np.zeros((3, 2)), "targets": np.ones((3, 2))}, max_queued=LIMIT,
        )  # fmt: skip


def submit_sweep(db, tenant: str) -> None:
    spec = {
        "method": "grid",
        "search": {"learning_rate": {"choice": [0.1, 0.2, 0.3]}},
        "seed": 1,
        "base_seed": 1,
        "objective": {"metric": "cost", "goal": "min"},
        "base": BASE.to_json(),
    }
    with db.session() as s:
        scheduling.create_sweep(
            s, db, tenant=tenant, name=None, labels={}, spec=spec, trials=3,
            max_parallel=PARALLEL, dataset_id=None, val_dataset_id=None, max_queued=LIMIT,
        )  # fmt: skip


def test_sweeps_and_jobs_submitted_together_never_pass_the_queued_limit(db):
    tenant = f"q-{uuid.uuid4().hex[:6]}"
    barrier, lock = threading.Barrier(SWEEPS + JOBS), threading.Lock()
    outcomes = {"job": [], "sweep": []}

    def run(kind: str, submit) -> None:
        barrier.wait()
        try:
            submit(db, tenant)
            outcome = "queued"
        except jobs.QueueFull as exc:
            assert exc.limit == LIMIT
            outcome = "full"
        with lock:
            outcomes[kind].append(outcome)

    threads = [threading.Thread(target=run, args=("sweep", submit_sweep)) for _ in range(SWEEPS)]
    threads += [threading.Thread(target=run, args=("job", submit_job)) for _ in range(JOBS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    with db.session() as s:
        queued = jobs.count_jobs(s, tenant, QUEUED)
        sweeps_stored = s.query(Sweep).filter(Sweep.tenant == tenant).count()
    sweeps_in, jobs_in = outcomes["sweep"].count("queued"), outcomes["job"].count("queued")
    assert len(outcomes["sweep"]) == SWEEPS and len(outcomes["job"]) == JOBS
    assert queued <= LIMIT
    assert sweeps_stored == sweeps_in  # a refused sweep stored nothing, trials included
    assert queued == PARALLEL * sweeps_in + jobs_in
    # refused only when full: nothing is ever taken off the queue here, so the count at a
    # refusal is at most the final one
    if "full" in outcomes["job"]:
        assert queued == LIMIT
    if "full" in outcomes["sweep"]:
        assert queued > LIMIT - PARALLEL
