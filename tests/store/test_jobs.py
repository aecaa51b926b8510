"""The job table's rules on a real database: claims, leases, guarded writes, blobs."""

import threading
import time
import uuid

import numpy as np
import pytest

from store import blobs, job_data, jobs, leases, paging, progress, recovery
from store.db import get_database
from store.models import CANCELLED, FAILED, QUEUED, RUNNING, Job
from tests.support.specs import inline_spec


@pytest.fixture
def db(database_url):
    return get_database(database_url)


def new_job(db, tenant="t1", epochs=3, n=5) -> str:
    spec = inline_spec(samples=n, epochs=epochs)
    arrays = {"inputs": np.arange(2.0 * n).reshape(n, 2), "targets": np.ones((n, 2))}
    with db.session() as s:
        job = jobs.create_job(
            s, db, tenant=tenant, spec=spec, arrays=arrays, name=None, labels={}, chunk_bytes=1024
        )
        return job.id


def claim(db, job_id, owner, lease=30.0, max_attempts=3):
    with db.session() as s:
        return leases.claim(
            s, db, job_id, owner, lease_seconds=lease, max_attempts=max_attempts, worker=owner
        )


def metric(epoch: int, cost: float = 1.0) -> dict:
    return dict(
        epoch=epoch, cost=cost, accuracy=None, val_cost=None, val_accuracy=None, seconds=0.1
    )


def record(s, db, job_id, owner, epochs, cost=1.0, checkpoint=None):
    progress.record_progress(
        s,
        db,
        job_id,
        owner,
        metrics=[metric(e, cost) for e in epochs],
        runtime_seconds=1,
        checkpoint=checkpoint,
        chunk_bytes=1024,
        worker=owner,
    )


def status(db, job_id) -> Job:
    with db.session() as s:
        return s.get(Job, job_id)


def test_concurrent_submissions_stop_exactly_at_the_queued_limit(db):
    tenant = f"t-{uuid.uuid4().hex[:6]}"
    spec = inline_spec(samples=3)
    arrays = {"inputs": np.zeros((3, 2)), "targets": np.ones((3, 2))}
    outcomes, barrier = [], threading.Barrier(12)

    def submit():
        barrier.wait()
        try:
            with db.session() as s:
                jobs.create_job(
                    s,
                    db,
                    tenant=tenant,
                    spec=spec,
                    arrays=arrays,
                    name=None,
                    labels={},
                    chunk_bytes=1024,
                    max_queued=5,
                )
            outcomes.append("queued")
        except jobs.QueueFull as exc:
            assert exc.limit == 5 and exc.queued >= 5
            outcomes.append("full")

    threads = [threading.Thread(target=submit) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["full"] * 7 + ["queued"] * 5
    with db.session() as s:
        assert jobs.count_jobs(s, tenant, QUEUED) == 5


def test_one_claim_wins_and_a_live_lease_refuses_others(db):
    job_id = new_job(db)
    first = claim(db, job_id, "w1")
    assert first is not None and first.status == RUNNING and first.attempts == 1
    assert claim(db, job_id, "w2") is None
    row = status(db, job_id)
    assert row.lease_owner == "w1" and row.attempts == 1


def test_concurrent_claims_let_exactly_one_in(db):
    job_id = new_job(db)
    results, barrier = [], threading.Barrier(8)

    def race(i):
        barrier.wait()
        results.append(claim(db, job_id, f"w{i}"))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert status(db, job_id).lease_owner == winners[0].lease_owner


def test_expired_lease_is_claimable_and_the_old_owner_loses_its_writes(db):
    job_id = new_job(db)
    claim(db, job_id, "old", lease=0.2)
    time.sleep(0.4)
    assert claim(db, job_id, "new") is not None
    with pytest.raises(leases.LeaseLost), db.session() as s:
        leases.renew_lease(s, db, job_id, "old", 30)
    with pytest.raises(leases.LeaseLost), db.session() as s:
        record(s, db, job_id, "old", [1])
    with db.session() as s:
        assert jobs.metrics(s, job_id) == []
        assert leases.renew_lease(s, db, job_id, "new", 30) is False


def test_attempts_run_out(db):
    job_id = new_job(db)
    for i in range(2):
        assert claim(db, job_id, f"w{i}", lease=0.05, max_attempts=2) is not None
        time.sleep(0.1)
    assert claim(db, job_id, "w9", max_attempts=2) is None
    row = status(db, job_id)
    assert row.status == FAILED and row.error_type == "attempts_exhausted"


def test_cancel_queued_at_once_and_running_by_flag(db):
    queued = new_job(db)
    with db.session() as s:
        assert jobs.request_cancel(s, db, "t1", queued).status == CANCELLED
    assert claim(db, queued, "w") is None

    running = new_job(db)
    claim(db, running, "w")
    with db.session() as s:
        job = jobs.request_cancel(s, db, "t1", running)
        assert job.status == RUNNING and job.cancel_requested
        assert leases.renew_lease(s, db, running, "w", 30) is True
    with pytest.raises(jobs.JobNotFound), db.session() as s:
        jobs.request_cancel(s, db, "another-tenant", running)


def test_reconciler_queries(db):
    job_id = new_job(db)
    with db.session() as s:
        assert job_id not in recovery.stale_queued(s, db, older_than=60)  # submit still sending
    with db.session() as s:
        assert job_id in recovery.stale_queued(s, db, older_than=60, grace=0)
        leases.mark_dispatched(s, db, job_id)
    with db.session() as s:
        assert job_id not in recovery.stale_queued(s, db, older_than=60, grace=0)
    claim(db, job_id, "dead", lease=0.05)
    time.sleep(0.1)
    with db.session() as s:
        assert job_id in recovery.requeue_expired(s, db)
    assert status(db, job_id).status == QUEUED


@pytest.mark.parametrize(
    "shape,dtype",
    [((1000, 37), "float64"), ((3, 4), "float32"), ((0,), "float64"), ((5,), "int64")],
)
def test_arrays_round_trip_through_chunks(db, shape, dtype):
    job_id = new_job(db)
    array = np.random.RandomState(0).randn(*shape).astype(dtype)
    with db.session() as s:
        blob = blobs.write_array(s, job_id, "probe", array, chunk_bytes=1024)
    with db.session() as s:
        back = blobs.read_array(s, blob)
        n_chunks = s.execute(
            blobs.select(blobs.BlobChunk).where(blobs.BlobChunk.blob_id == blob.id)
        ).all()
    assert back.dtype == array.dtype and np.array_equal(back, array)
    assert len(n_chunks) == max(1, -(-blob.size // 1024))  # bounded chunks


def test_resends_back_off_for_jobs_that_merely_wait(db):
    job_id = new_job(db)
    with db.session() as s:
        leases.mark_dispatched(s, db, job_id)  # first message: wait 0.2 s before a re-send
    time.sleep(0.3)
    with db.session() as s:
        assert job_id in recovery.stale_queued(s, db, older_than=0.2)
        leases.mark_dispatched(s, db, job_id)  # second: wait 0.4 s
    time.sleep(0.3)
    with db.session() as s:
        assert job_id not in recovery.stale_queued(s, db, older_than=0.2)
    time.sleep(0.2)
    with db.session() as s:
        assert job_id in recovery.stale_queued(s, db, older_than=0.2)
        for _ in range(3):
            leases.mark_dispatched(s, db, job_id)  # fifth message: 3.2 s, unless capped
    time.sleep(0.3)
    with db.session() as s:
        assert job_id not in recovery.stale_queued(s, db, older_than=0.2)
        assert job_id in recovery.stale_queued(s, db, older_than=0.2, longest=0.25)


def test_a_cursor_is_a_position_and_any_string_of_its_form_is_one(db):
    tenant = f"pages-{uuid.uuid4().hex[:6]}"
    made = [new_job(db, tenant=tenant) for _ in range(3)]
    with db.session() as s:
        first = jobs.list_jobs(s, tenant, limit=2)
        assert first.next_cursor is not None
        when, job_id = paging.decode_cursor(first.next_cursor)
        assert job_id == first.rows[-1].id and when == first.rows[-1].created_at
        rest = jobs.list_jobs(s, tenant, limit=200, cursor=first.next_cursor)
        assert {j.id for j in first.rows} & {j.id for j in rest.rows} == set()
        assert set(made) == {j.id for j in first.rows + rest.rows}
        # the oldest position there is, and one far in the future: valid, just pages
        assert jobs.list_jobs(s, tenant, cursor="0." + "0" * 32).rows == []
        assert len(jobs.list_jobs(s, tenant, cursor="9" * 17 + "." + "f" * 32).rows) == 3
    too_long = "1" * 18 + "." + "0" * 32
    for bad in ("", "x", "12", "12.abc", "1." + "g" * 32, too_long, "-1." + "0" * 32):
        with pytest.raises(ValueError, match="expected a next_cursor"):
            paging.decode_cursor(bad)


def test_buffered_rows_are_written_once_even_when_a_flush_is_retried(db):
    job_id = new_job(db, epochs=6)
    claim(db, job_id, "w")
    with db.session() as s:
        record(s, db, job_id, "w", [1, 2, 3])
    with db.session() as s:  # the same flush again, as after a commit whose answer was lost
        record(s, db, job_id, "w", [1, 2, 3], cost=2.0)
    with db.session() as s:
        record(s, db, job_id, "w", [4, 5])
    with db.session() as s:
        rows = jobs.metrics(s, job_id)
    assert [(m.epoch, m.cost) for m in rows] == [(1, 2.0), (2, 2.0), (3, 2.0), (4, 1.0), (5, 1.0)]
    assert status(db, job_id).epoch == 5


def test_a_checkpoint_travels_with_its_rows_and_a_resume_drops_the_rows_past_it(db):
    job_id = new_job(db, epochs=9)
    claim(db, job_id, "w", lease=0.05)
    state = {"epoch": np.array(4), "batch": np.array(0), "w": np.ones(3)}
    with db.session() as s:
        record(s, db, job_id, "w", [1, 2, 3, 4], checkpoint=state)
    with db.session() as s:
        record(s, db, job_id, "w", [5, 6])  # flushed, no checkpoint: redone on resume
    time.sleep(0.1)
    assert claim(db, job_id, "w2") is not None
    with db.session() as s:
        back = job_data.load_checkpoint(s, job_id)
        progress.prepare_resume(s, db, job_id, "w2", int(back["epoch"]))
    with db.session() as s:
        assert [m.epoch for m in jobs.metrics(s, job_id)] == [1, 2, 3, 4]


def test_finish_writes_the_last_rows_and_names_the_tenant_s_next_waiting_job(db):
    tenant = f"t-{uuid.uuid4().hex[:6]}"
    first, second, third = (new_job(db, tenant=tenant) for _ in range(3))
    with db.session() as s:
        leases.mark_dispatched(s, db, third)  # a message exists for this one
    with db.session() as s:
        assert leases.claim(
            s, db, first, "w", lease_seconds=30, max_attempts=3, worker="w", max_running=1
        )
    with db.session() as s:  # the tenant's limit holds the second back: it has no message now
        leases.mark_dispatched(s, db, second)
        assert (
            leases.claim(
                s, db, second, "v", lease_seconds=30, max_attempts=3, worker="v", max_running=1
            )
            is None
        )
    assert status(db, second).status == QUEUED and status(db, second).dispatched_at is None
    with db.session() as s:
        offer = progress.finish(
            s,
            db,
            first,
            "w",
            status="succeeded",
            runtime_seconds=1.0,
            metrics=[metric(1), metric(2), metric(3)],
        )
    assert offer == second
    row = status(db, first)
    assert row.status == "succeeded" and row.epoch == 3 and row.lease_owner is None
    with db.session() as s:
        assert [m.epoch for m in jobs.metrics(s, first)] == [1, 2, 3]


def test_a_label_filter_pages_in_one_query(db):
    from sqlalchemy import event

    tenant = f"labels-{uuid.uuid4().hex[:6]}"
    wanted = []
    spec = inline_spec()
    arrays = {"inputs": np.ones((1, 2)), "targets": np.ones((1, 2))}
    with db.session() as s:
        for i in range(30):
            labels = {"team": "a" if i % 3 == 0 else "b", "run": str(i), "odd:key": "x y"}
            job = jobs.create_job(
                s, db, tenant=tenant, spec=spec, arrays=arrays, name=None, labels=labels,
                chunk_bytes=1024,
            )  # fmt: skip
            if i % 3 == 0:
                wanted.append(job.id)
    statements = []

    def seen(_connection, _cursor, statement, *_):
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        with db.reading() as s:
            first = jobs.list_jobs(s, tenant, labels={"team": "a", "odd:key": "x y"}, limit=4)
            rest = jobs.list_jobs(
                s, tenant, labels={"team": "a"}, limit=50, cursor=first.next_cursor
            )
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    got = [j.id for j in first.rows + rest.rows]
    assert sorted(got) == sorted(wanted) and len(first.rows) == 4 and rest.next_cursor is None
    # each page is one query, and the filter runs in it, not over every job in Python
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 2
    assert all("labels" in s.upper().split("WHERE", 1)[1].lower() for s in selects)
