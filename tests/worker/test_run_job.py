"""run_job in process on a real database: the endings a worker can reach by itself."""

from __future__ import annotations

import numpy as np
from sqlalchemy import update

from backprop.settings import Settings
from store import jobs
from store.db import get_database
from store.models import Job
from worker.training import build_trainer, run_job

SPEC = {
    "structure": [2, 3, 1],
    "epochs": 4,
    "learning_rate": 2.0,
    "seed": 11,
    "options": {
        "activation": "sigmoid",
        "output_activation": "sigmoid",
        "cost": "quadratic",
        "init": "normal",
        "l2": 0.0,
        "dtype": "float64",
        "early_stopping": None,
        "max_runtime_seconds": 60,
    },
    "data": {
        "form": "arrays",
        "batch_size": 2,
        "shuffle": True,
        "batches": 2,
        "samples": 4,
        "validation_samples": 0,
    },
}
XOR = {
    "inputs": np.array([[0.0, 0], [0, 1], [1, 0], [1, 1]]),
    "targets": np.array([[0.0], [1], [1], [0]]),
}


def submit(db, spec=SPEC) -> str:
    with db.session() as s:
        return jobs.create_job(
            s, db, tenant="w", spec=spec, arrays=XOR, name=None, labels={}, chunk_bytes=4096
        ).id


def settings_for(database_url: str) -> Settings:
    return Settings(database_url=database_url, heartbeat_seconds=0.05, checkpoint_seconds=60)


def test_run_job_trains_records_and_matches_core(database_url):
    db = get_database(database_url)
    job_id = submit(db)
    outcome = run_job(job_id, db=db, settings=settings_for(database_url), worker="t")
    assert outcome.status == "succeeded"
    with db.session() as s:
        job = s.get(Job, job_id)
        assert job.status == "succeeded" and job.epoch == 4 and job.lease_owner is None
        assert [m.epoch for m in jobs.metrics(s, job_id)] == [1, 2, 3, 4]
        model = jobs.load_model(s, job_id)
    reference = build_trainer(SPEC, XOR)
    reference.run()
    assert np.array_equal(model["W0"], reference.network.W_n[0])
    # a second message for the finished job is a no-op
    assert (
        run_job(job_id, db=db, settings=settings_for(database_url), worker="t").status == "skipped"
    )


def test_a_spec_the_worker_cannot_read_fails_as_internal_error(database_url):
    db = get_database(database_url)
    job_id = submit(db)
    broken = {**SPEC, "options": {**SPEC["options"], "activation": "from-a-newer-version"}}
    with db.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(spec=broken))
    outcome = run_job(job_id, db=db, settings=settings_for(database_url), worker="t")
    assert outcome.status == "failed" and outcome.detail == "internal_error"
    with db.session() as s:
        job = s.get(Job, job_id)
        assert job.status == "failed" and job.error_type == "internal_error"
        assert "ValueError" in job.error_message and "Traceback" not in job.error_message
