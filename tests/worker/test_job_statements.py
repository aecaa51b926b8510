"""The worker's database work for one job, in process on both databases: the prebuilt
statements write what a job's run always wrote (rows, history, blobs), and a small job costs
the worker a bounded number of statements."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from sqlalchemy import event, select, update

from backprop.settings import Settings
from backprop.spec import JobSpec
from store import job_data, jobs, leases, progress
from store.db import get_database
from store.models import Blob, Job, utcnow
from worker.lease import LeaseKeeper, Store
from worker.setup import build_trainer
from worker.training import run_job

from .test_run_job import SPEC, XOR, submit


def _statements_of_this_thread(db):
    """The SQL the calling thread sends (not the lease's heartbeat)."""
    me, sent = threading.get_ident(), []

    def record(_conn, _cursor, statement, *_):
        if threading.get_ident() == me:
            sent.append(" ".join(statement.split()))

    event.listen(db.engine, "before_cursor_execute", record)
    return sent, lambda: event.remove(db.engine, "before_cursor_execute", record)


def _blob_kinds(db, job_id) -> list[str]:
    with db.session() as s:
        return sorted(s.scalars(select(Blob.kind).where(Blob.job_id == job_id)))


def _reference(spec):
    trainer = build_trainer(JobSpec.from_json(spec), XOR)
    trainer.run()
    return trainer


def _same_model(db, job_id, reference) -> bool:
    with db.session() as s:
        model = job_data.load_model(s, job_id)
    return all(
        np.array_equal(model[f"W{l}"], W) and np.array_equal(model[f"b{l}"], b)
        for l, (W, b) in enumerate(zip(reference.network.W_n, reference.network.B_n))
    )


def test_a_small_job_writes_its_rows_and_history_in_ten_statements(database_url):
    db = get_database(database_url)
    spec = {**SPEC, "epochs": 1}
    job_id = submit(db, spec)
    settings = Settings(database_url=database_url, checkpoint_seconds=60)
    sent, stop = _statements_of_this_thread(db)
    try:
        assert run_job(job_id, db=db, settings=settings, worker="t").status == "succeeded"
    finally:
        stop()
    # claim: the tenant and owner, the UPDATE, its event; load: the blobs with their chunks;
    # end: the UPDATE, the metrics row, the blob rows, their chunks, its event, the next job
    # (SQLite inserts the two blob rows one by one: it returns ids in no set order otherwise;
    # PostgreSQL's end is one statement that names the next job too)
    assert len(sent) <= (11 if db.is_sqlite else 9), sent
    # it never had a checkpoint: none is looked for to delete
    assert not [q for q in sent if q.startswith("DELETE") or q.startswith("SELECT blob.id FROM")]
    assert _blob_kinds(db, job_id) == ["checkpoint", "inputs", "model", "targets"]

    reference = _reference(spec)
    assert _same_model(db, job_id, reference)
    with db.session() as s:
        job = s.get(Job, job_id)
        history = jobs.events(s, job_id)
        rows = jobs.metrics(s, job_id)
    assert [e.kind for e in history] == ["queued", "claimed", "succeeded"]
    claimed, ended = history[1], history[2]
    assert (claimed.message, claimed.worker, claimed.at) == ("attempt 1", "t", job.started_at)
    assert (ended.message, ended.worker, ended.at) == ("1 epochs", "t", job.finished_at)
    assert job.finished_at == job.updated_at and job.lease_owner is None
    assert job.lease_expires_at is None and job.epoch == 1 and job.attempts == 1
    assert job.latest_metrics == progress.metric_dict(rows[-1])
    assert [(m.epoch, m.cost, m.seconds > 0) for m in rows] == [
        (m.epoch, m.cost, True) for m in reference.history
    ]
    assert all(m.recorded_at == job.finished_at for m in rows)


class _Died(BaseException):
    """Stands for the worker process dying: nothing in run_job catches it."""


def test_a_resumed_run_replaces_its_checkpoint_and_ends_with_one(database_url):
    db = get_database(database_url)
    spec = {**SPEC, "epochs": 3000}
    job_id = submit(db, spec)
    settings = Settings(
        database_url=database_url, checkpoint_seconds=0.05, metrics_flush_seconds=60
    )

    def die_after_a_checkpoint(changed_id):  # called after each commit
        if "checkpoint" in _blob_kinds(db, changed_id):
            raise _Died

    with pytest.raises(_Died):
        run_job(job_id, db=db, settings=settings, worker="t", notify=die_after_a_checkpoint)
    assert _blob_kinds(db, job_id).count("checkpoint") == 1
    with db.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow()))

    assert run_job(job_id, db=db, settings=settings, worker="t2").status == "succeeded"
    assert _blob_kinds(db, job_id) == ["checkpoint", "inputs", "model", "targets"]
    reference = _reference(spec)
    assert _same_model(db, job_id, reference)
    with db.session() as s:
        kinds = [e.kind for e in jobs.events(s, job_id)]
        state = job_data.load_checkpoint(s, job_id)
        rows = jobs.metrics(s, job_id)
    assert kinds.count("resumed") == 1 and kinds[-1] == "succeeded"
    assert int(state["epoch"]) == 3000
    assert [(m.epoch, m.cost) for m in rows] == [(m.epoch, m.cost) for m in reference.history]


def _claimed_job(db, owner="w") -> str:
    job_id = submit(db)
    with db.session() as s:
        assert leases.claim(s, db, job_id, owner, lease_seconds=30, max_attempts=3, worker=owner)
    return job_id


def _state(epoch: int) -> dict:
    return {"epoch": np.asarray(epoch), "batch": np.asarray(0), "W0": np.full((2, 3), epoch)}


@pytest.mark.parametrize("model", [True, False], ids=["succeeded", "stopped"])
def test_finish_replaces_an_earlier_checkpoint_only_if_there_may_be_one(database_url, model):
    db = get_database(database_url)
    ending = dict(
        status="succeeded" if model else "cancelled",
        runtime_seconds=1.0,
        model={"W0": np.ones((2, 3))} if model else None,
        chunk_bytes=4096,
        worker="w",
    )
    fresh = _claimed_job(db)
    with db.session() as s:
        progress.finish(s, db, fresh, "w", checkpoint=_state(2), earlier_checkpoint=False, **ending)
    resumed = _claimed_job(db)
    with db.session() as s:
        progress.record_progress(
            s, db, resumed, "w", metrics=[], runtime_seconds=0.5, checkpoint=_state(1),
            chunk_bytes=4096, worker="w",
        )  # fmt: skip
    with db.session() as s:
        progress.finish(s, db, resumed, "w", checkpoint=_state(2), **ending)
    for job_id in (fresh, resumed):
        assert _blob_kinds(db, job_id).count("checkpoint") == 1
        with db.session() as s:
            assert int(job_data.load_checkpoint(s, job_id)["epoch"]) == 2
            kinds = [e.kind for e in jobs.events(s, job_id)]
        # the latest checkpoint's event only; a stopped job's says where it stopped
        assert kinds.count("checkpoint") == (1 if job_id == resumed or not model else 0)
        assert kinds[-1] == ending["status"]


def test_writes_under_a_lost_lease_raise_and_write_nothing(database_url):
    db = get_database(database_url)
    job_id = _claimed_job(db, owner="old")
    with db.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(lease_owner="new"))
    for write in (
        lambda s: progress.record_progress(
            s, db, job_id, "old", metrics=[{"epoch": 1, "cost": 1.0, "seconds": 0.1}],
            runtime_seconds=1, checkpoint=_state(1), chunk_bytes=4096, worker="old",
        ),
        lambda s: progress.finish(
            s, db, job_id, "old", status="succeeded", runtime_seconds=1,
            model={"W0": np.ones((2, 3))}, checkpoint=_state(1),
        ),
        lambda s: progress.prepare_resume(s, db, job_id, "old", 1),
        lambda s: leases.renew_lease(s, db, job_id, "old", 30),
    ):  # fmt: skip
        with pytest.raises(leases.LeaseLost), db.session() as s:
            write(s)
    assert _blob_kinds(db, job_id) == ["inputs", "targets"]
    with db.session() as s:
        assert jobs.metrics(s, job_id) == []
        assert s.get(Job, job_id).lease_owner == "new"


def test_lease_keepers_renew_stop_and_reuse_their_heartbeat_thread(database_url):
    db = get_database(database_url)
    store = Store(db, Settings(database_url=database_url, heartbeat_seconds=0.02))

    def expiry(job_id):
        with db.session() as s:
            return s.get(Job, job_id).lease_expires_at

    first = _claimed_job(db, owner="k")
    claimed_until = expiry(first)
    keeper = LeaseKeeper(store, first, "k")
    keeper.start()
    deadline = time.monotonic() + 5
    while expiry(first) == claimed_until and time.monotonic() < deadline:
        time.sleep(0.02)
    assert expiry(first) > claimed_until  # renewed
    with db.session() as s:
        jobs.request_cancel(s, db, "w", first)
    while keeper.stop_reason is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert keeper.stop_reason == "cancel"
    keeper.stop()
    stopped_at = expiry(first)
    time.sleep(0.1)
    assert expiry(first) == stopped_at  # no renewal after stop()

    threads = threading.active_count()
    second = _claimed_job(db, owner="k2")
    other = LeaseKeeper(store, second, "k2")
    other.start()
    assert threading.active_count() == threads  # the idle heartbeat thread took it
    with db.session() as s:  # the lease is taken from it: it stops by itself
        s.execute(update(Job).where(Job.id == second).values(lease_owner="someone"))
    while other.stop_reason is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert other.stop_reason == "lease_lost"
    other.stop()
