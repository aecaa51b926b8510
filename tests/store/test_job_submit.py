"""A job stored at submit through Core statements, and the poll's read of a job with its
history: the same rows, objects and views as the ORM's, on both dialects."""

import uuid
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import select, text

from store import blobs, jobs, leases
from store.db import get_database
from store.models import PAUSED, QUEUED, Job, JobEvent
from tests.support.specs import inline_spec


@pytest.fixture
def db(database_url):
    return get_database(database_url)


def add(db, tenant: str, **options) -> jobs.NewJob:
    spec = inline_spec(samples=4, epochs=2)
    arrays = {"inputs": np.arange(8.0).reshape(4, 2), "targets": np.ones((4, 2))}
    with db.session() as s:
        return jobs.add_job(
            s, db, tenant=tenant, spec=spec, arrays=arrays, name="n", labels={"a": "b"},
            chunk_bytes=1024, **options,
        )  # fmt: skip


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def test_the_history_given_back_is_the_one_stored(db):
    new = add(db, tenant(), dispatching=True)
    with db.reading() as s:
        stored = jobs.events(s, new.job.id)
    assert [(e.at, e.kind, e.message, e.worker) for e in stored] == [tuple(e) for e in new.history]
    assert [e.kind for e in new.history] == ["queued", "dispatched"]
    assert new.history[0].message == "4 samples, 2 epochs"


def test_the_new_job_object_is_the_row_and_its_changes_are_flushed(db):
    owner = tenant()
    with db.session() as s:
        job = jobs.create_job(
            s, db, tenant=owner, spec=inline_spec(samples=2), arrays={}, name=None,
            labels={}, chunk_bytes=1024,
        )  # fmt: skip
        assert s.get(Job, job.id) is job  # in the session, as persistent
        assert job.lease_owner is None and job.latest_metrics is None and job.epoch == 0
        job.status = PAUSED  # a caller's change after the insert (a held extension)
    with db.reading() as s:
        stored = s.get(Job, job.id)
        assert stored.status == PAUSED and stored.created_at == job.created_at
        # columns the submit leaves unset stay SQL NULL, as the ORM's insert left them
        unset = s.scalar(
            select(Job.latest_metrics.is_(None) & Job.rungs.is_(None)).where(Job.id == job.id)
        )
        assert unset


def test_the_job_and_its_history_take_one_reading_of_the_database_s_clock(db):
    with db.session() as s:
        before = db.now(s)
    new = add(db, tenant(), dispatching=True)
    with db.reading() as s:
        stored = s.get(Job, new.job.id)
        after = db.now(s)
    times = {stored.created_at, stored.updated_at, stored.dispatched_at}
    times |= {e.at for e in new.history} | {new.job.created_at}
    assert len(times) == 1 and before <= stored.created_at <= after
    assert stored.created_at.tzinfo is not None


class TooBig(Exception):
    pass


def test_the_storage_check_sees_what_was_stored_before_and_can_refuse(db):
    owner, seen = tenant(), []
    add(db, owner)
    with db.reading() as s:
        before = jobs.job_bytes(s, owner)
    add(db, owner, storage=seen.append)
    assert seen == [before] and before > 0

    def refuse(used):
        raise TooBig(used)

    with pytest.raises(TooBig):
        add(db, owner, storage=refuse)
    with db.reading() as s:  # rolled back: nothing of the refused job is left
        assert jobs.count_jobs(s, owner, QUEUED) == 2
        assert jobs.job_bytes(s, owner) == 2 * before


def test_job_bytes_and_now_read_together(db):
    owner = tenant()
    add(db, owner)
    with db.session() as s:
        used, now = jobs.job_bytes_and_now(s, db, owner)
        assert used == jobs.job_bytes(s, owner) > 0
        assert now.tzinfo is not None and abs(now - db.now(s)) < timedelta(seconds=5)


def test_a_job_with_its_history_reads_as_the_orm_s_pair(db):
    owner = tenant()
    job_id = add(db, owner, dispatching=True).job.id
    with db.session() as s:
        leases.claim(s, db, job_id, "w1", lease_seconds=30, max_attempts=3, worker="w1")
    with db.reading() as s:
        row, history = jobs.job_with_history(s, owner, job_id)
        job, events = jobs.get_job(s, owner, job_id), jobs.events(s, job_id)
        for column in Job.__table__.columns:  # the names job_detail reads, the same values
            assert getattr(row, column.key) == getattr(job, column.key), column.key
    assert [tuple(e) for e in history] == [(e.at, e.kind, e.message, e.worker) for e in events]
    assert [e.kind for e in history] == ["queued", "dispatched", "claimed"]
    assert history[-1].worker == "w1" and history[0].at.tzinfo is not None


def test_the_history_read_is_the_newest_events_oldest_first(db):
    owner = tenant()
    job_id = add(db, owner).job.id
    with db.session() as s:
        for n in range(5):
            jobs.add_event(s, job_id, "note", str(n), at=db.now(s))
    with db.reading() as s:
        _, history = jobs.job_with_history(s, owner, job_id, limit=3)
    assert [e.message for e in history] == ["2", "3", "4"]


def test_a_job_without_events_has_an_empty_history(db):
    owner = tenant()
    job_id = add(db, owner).job.id
    with db.session() as s:
        s.query(JobEvent).filter_by(job_id=job_id).delete()
    with db.reading() as s:
        row, history = jobs.job_with_history(s, owner, job_id)
    assert history == [] and row.id == job_id and row.status == QUEUED


@pytest.mark.parametrize("which", ["other tenant", "no such id", "not an id"])
def test_only_the_tenant_s_own_job_is_found(db, which):
    job_id = add(db, "owner-" + uuid.uuid4().hex[:6]).job.id
    asked, owner = {
        "other tenant": (job_id, tenant()),
        "no such id": (str(uuid.uuid4()), tenant()),
        "not an id": (job_id.upper(), tenant()),
    }[which]
    with db.reading() as s, pytest.raises(jobs.JobNotFound):
        jobs.job_with_history(s, owner, asked)


@pytest.mark.parametrize("chunk_bytes", [1024, 160], ids=["one chunk each", "streamed"])
def test_the_data_reads_back_as_given(db, chunk_bytes):
    arrays = {"inputs": np.arange(12.0).reshape(6, 2), "targets": np.eye(6, 2, dtype=np.float32)}
    with db.session() as s:
        job = jobs.create_job(
            s, db, tenant=tenant(), spec=inline_spec(samples=6), arrays=arrays, name=None,
            labels={}, chunk_bytes=chunk_bytes,
        )  # fmt: skip
    with db.reading() as s:
        found = blobs.find_blobs(s, job.id, tuple(arrays))
        for kind, array in arrays.items():
            read = blobs.read_array(s, found[kind])
            assert read.dtype == array.dtype and np.array_equal(read, array)
        assert found["inputs"].id < found["targets"].id  # stored in the order given


def test_a_job_without_data_or_dispatch_is_stored_alone(db):
    owner = tenant()
    with db.session() as s:
        job = jobs.create_job(
            s, db, tenant=owner, spec=inline_spec(samples=2), arrays={}, name=None, labels={},
            chunk_bytes=1024, max_queued=5,
        )  # fmt: skip
    with db.reading() as s:
        assert [e.kind for e in jobs.events(s, job.id)] == ["queued"]
        assert blobs.find_blobs(s, job.id, ("inputs",)) == {}


def test_the_tenant_s_lock_is_held_once_the_job_is_stored(db):
    """The queue quota's count follows the tenant's lock, held to the commit."""
    owner = tenant()
    with db.session() as s:
        add_in(s, db, owner, max_queued=5)
        if not db.is_sqlite:  # SQLite: the write lock of the INSERT plays its part
            held = s.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND pid = pg_backend_pid() AND classid = 1 AND objid = hashtext(:t)::oid"
                ),
                {"t": owner},
            ).scalar_one()
            assert held == 1


def test_the_queue_quota_refuses_past_the_limit(db):
    owner = tenant()
    for _ in range(2):
        add(db, owner, max_queued=2)
    with pytest.raises(jobs.QueueFull) as refused, db.session() as s:
        add_in(s, db, owner, max_queued=2)
    assert (refused.value.queued, refused.value.limit) == (2, 2)
    with db.reading() as s:
        assert jobs.count_jobs(s, owner, QUEUED) == 2


def add_in(s, db, owner: str, **options) -> jobs.NewJob:
    spec = inline_spec(samples=4, epochs=2)
    arrays = {"inputs": np.zeros((4, 2)), "targets": np.ones((4, 2))}
    return jobs.add_job(
        s, db, tenant=owner, spec=spec, arrays=arrays, name=None, labels={}, chunk_bytes=1024,
        **options,
    )  # fmt: skip
