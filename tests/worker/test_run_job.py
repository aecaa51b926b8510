"""run_job in process on a real database: the endings a worker can reach by itself."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from sqlalchemy import event, update

from backprop.settings import Settings
from backprop.spec import JobSpec
from core import validation_rows
from store import dataset_writer, job_data, jobs
from store.db import get_database
from store.models import Job, utcnow
from worker.setup import build_trainer
from worker.training import run_job

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
            s,
            db,
            tenant="w",
            spec=JobSpec.from_json(spec),
            arrays=XOR,
            name=None,
            labels={},
            chunk_bytes=4096,
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
        model = job_data.load_model(s, job_id)
    reference = build_trainer(JobSpec.from_json(SPEC), XOR)
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
        s.execute(update(Job).where(Job.id == job_id).values(spec=JobSpec.from_json(broken)))
    outcome = run_job(job_id, db=db, settings=settings_for(database_url), worker="t")
    assert outcome.status == "failed" and outcome.detail == "internal_error"
    with db.session() as s:
        job = s.get(Job, job_id)
        assert job.status == "failed" and job.error_type == "internal_error"
        assert "ValueError" in job.error_message and "Traceback" not in job.error_message


def _commits_of_this_thread(db):
    """Count the transactions committed by the calling thread (not the lease's heartbeat)."""
    me, counted = threading.get_ident(), []

    def count(_connection):
        if threading.get_ident() == me:
            counted.append(1)

    event.listen(db.engine, "commit", count)
    return counted, lambda: event.remove(db.engine, "commit", count)


def test_transactions_do_not_grow_with_the_epochs(database_url):
    db = get_database(database_url)
    settings = Settings(database_url=database_url, metrics_flush_seconds=0.5)
    runs = {}
    for epochs in (500, 5000):
        job_id = submit(db, {**SPEC, "epochs": epochs})
        counted, stop_counting = _commits_of_this_thread(db)
        try:
            outcome = run_job(job_id, db=db, settings=settings, worker="t")
        finally:
            stop_counting()
        assert outcome.status == "succeeded"
        with db.session() as s:
            job = s.get(Job, job_id)
            assert [m.epoch for m in jobs.metrics(s, job_id)] == list(range(1, epochs + 1))
            assert job.epoch == epochs
        runs[epochs] = (len(counted), job.runtime_seconds)
    (short, _), (long, runtime) = runs[500], runs[5000]
    # claim, finish, and one flush per METRICS_FLUSH_SECONDS of training: not one per epoch
    assert long <= 3 + runtime / settings.metrics_flush_seconds, runs
    assert long < 20 and long - short <= 2 + runtime / settings.metrics_flush_seconds, runs


class _Died(BaseException):
    """Stands for the worker process dying: nothing in run_job catches it."""


def test_a_run_that_dies_after_flushing_past_its_checkpoint_resumes_bit_for_bit(database_url):
    db = get_database(database_url)
    spec = {**SPEC, "epochs": 8000}
    job_id = submit(db, spec)
    # checkpoints every 0.2 s, flushes every 0.01 s: rows past the checkpoint get written
    settings = Settings(
        database_url=database_url, checkpoint_seconds=0.2, metrics_flush_seconds=0.01
    )

    def die_once_rows_pass_the_checkpoint(changed_id):  # called after each commit
        with db.session() as s:
            state = job_data.load_checkpoint(s, changed_id)
            written = [m.epoch for m in jobs.metrics(s, changed_id)]
        if state is not None and written and max(written) > int(state["epoch"]):
            raise _Died

    with pytest.raises(_Died):
        run_job(
            job_id, db=db, settings=settings, worker="t", notify=die_once_rows_pass_the_checkpoint
        )
    with db.session() as s:
        state = job_data.load_checkpoint(s, job_id)
        written = [m.epoch for m in jobs.metrics(s, job_id)]
        s.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow()))
    assert state is not None and max(written) > int(state["epoch"])  # the case under test
    assert run_job(job_id, db=db, settings=settings, worker="t2").status == "succeeded"

    reference = build_trainer(JobSpec.from_json(spec), XOR)
    reference.run()
    with db.session() as s:
        model = job_data.load_model(s, job_id)
        rows = jobs.metrics(s, job_id)
        kinds = [e.kind for e in jobs.events(s, job_id)]
    assert "resumed" in kinds
    for l, (W, b) in enumerate(zip(reference.network.W_n, reference.network.B_n)):
        assert np.array_equal(model[f"W{l}"], W) and np.array_equal(model[f"b{l}"], b)
    assert [(m.epoch, m.cost) for m in rows] == [(m.epoch, m.cost) for m in reference.history]


def test_a_small_job_costs_the_worker_three_transactions(database_url):
    db = get_database(database_url)
    job_id = submit(db, {**SPEC, "epochs": 1})
    counted, stop_counting = _commits_of_this_thread(db)
    try:
        outcome = run_job(job_id, db=db, settings=settings_for(database_url), worker="t")
    finally:
        stop_counting()
    assert outcome.status == "succeeded"
    # the claim (alone: the tenant's turn ends with its commit, before any data loads); the
    # data and checkpoint; the ending with the metrics row and the model
    assert len(counted) == 3


def _store_dataset(db, tenant, inputs, targets) -> str:
    with db.session() as s:
        builder = dataset_writer.DatasetBuilder(s, tenant, "d", {}, chunk_bytes=1000)
        for name, array in (("inputs", inputs), ("targets", targets)):
            writer = builder.member(name, array.shape[1], array.dtype, rows=len(array))
            writer.write(array.tobytes())
            builder.close_member(name)
        return builder.finish().id


def test_a_data_set_job_killed_inside_an_epoch_resumes_bit_for_bit_on_its_split(database_url):
    """The split is the seed's, every claim reads the same rows into the same places, and
    a checkpoint inside an epoch resumes exactly."""
    db = get_database(database_url)
    rng = np.random.default_rng(1)
    inputs = rng.random((400, 3))
    targets = np.eye(2)[(inputs.sum(axis=1) > 1.5).astype(int)]
    dataset_id = _store_dataset(db, "w", inputs, targets)
    spec = {
        **SPEC,
        "structure": [3, 6, 2],
        "epochs": 60,
        "options": {**SPEC["options"], "validation_split": 0.25},
        "data": {
            "form": "dataset",
            "dataset_id": dataset_id,
            "batch_size": 5,
            "shuffle": True,
            "batches": 60,
            "samples": 300,
            "validation_samples": 100,
        },
    }
    with db.session() as s:
        job_id = jobs.create_job(
            s, db, tenant="w", spec=JobSpec.from_json(spec), arrays={}, name=None, labels={},
            chunk_bytes=4096,
        ).id  # fmt: skip
    settings = Settings(
        database_url=database_url, checkpoint_seconds=0.02, metrics_flush_seconds=0.01
    )

    def die_inside_an_epoch(changed_id):
        with db.session() as s:
            state = job_data.load_checkpoint(s, changed_id)
        if state is not None and int(state["batch"]) > 0 and int(state["epoch"]) > 2:
            raise _Died

    with pytest.raises(_Died):
        run_job(job_id, db=db, settings=settings, worker="t", notify=die_inside_an_epoch)
    with db.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow()))
    assert run_job(job_id, db=db, settings=settings, worker="t2").status == "succeeded"

    held = validation_rows(targets, 0.25, spec["seed"])
    assert held.sum() == 100 and targets[held].sum(axis=0).tolist() == [
        round(0.25 * n) for n in targets.sum(axis=0)
    ]  # stratified
    arrays = {
        "inputs": inputs[~held],
        "targets": targets[~held],
        "val_inputs": inputs[held],
        "val_targets": targets[held],
    }
    reference = build_trainer(JobSpec.from_json(spec), arrays)
    reference.run()
    with db.session() as s:
        model = job_data.load_model(s, job_id)
        rows = jobs.metrics(s, job_id)
        kinds = [e.kind for e in jobs.events(s, job_id)]
        loaded = job_data.load_dataset_arrays(s, JobSpec.from_json(spec))
    assert "resumed" in kinds
    for name, array in arrays.items():
        assert np.array_equal(loaded[name], array), name
    for l, (W, b) in enumerate(zip(reference.network.W_n, reference.network.B_n)):
        assert np.array_equal(model[f"W{l}"], W) and np.array_equal(model[f"b{l}"], b)
    assert [(m.epoch, m.val_cost) for m in rows] == [
        (m.epoch, m.val_cost) for m in reference.history
    ]


def test_verify_gradients_checks_before_and_after_and_leaves_training_unchanged(database_url):
    db = get_database(database_url)
    spec = {**SPEC, "epochs": 20, "options": {**SPEC["options"], "verify_gradients": True}}
    checked, plain = submit(db, spec), submit(db, {**SPEC, "epochs": 20})
    for job_id in (checked, plain):
        assert run_job(job_id, db=db, settings=settings_for(database_url), worker="t").status == (
            "succeeded"
        )
    with db.session() as s:
        job = s.get(Job, checked)
        record = job.gradient_check
        kinds = [e.kind for e in jobs.events(s, checked)]
        weights = [job_data.load_model(s, i)["W0"] for i in (checked, plain)]
        assert s.get(Job, plain).gradient_check is None
    assert set(record) == {"before", "after", "threshold", "warning"}
    for when in ("before", "after"):
        assert record[when]["samples"] == 2 and record[when]["parameters"] == 13  # 2-3-1
        assert 0 <= record[when]["worst_relative_error"] < 1e-5
    assert record["warning"] is False and kinds.count("gradient_check") == 2
    assert np.array_equal(weights[0], weights[1])  # the check draws from its own generator
