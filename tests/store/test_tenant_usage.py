"""What a tenant's jobs store is one row (``tenant_usage``), kept by the database's triggers
on ``blob``: it equals the sum of the tenant's blobs after every kind of write (small and
chunked arrays, a run's checkpoints and model, copied start weights, a deleted job), also
with many writers of one tenant at once, and a submit's storage quota reads that row
instead of every blob the tenant has."""

from __future__ import annotations

import threading
import uuid

import numpy as np
from sqlalchemy import func, select, text

from backprop.settings import Settings
from backprop.spec import JobSpec
from store import jobs
from store.db import get_database
from store.job_submit import _JOB_BYTES
from store.models import Blob, Job, TenantUsage
from worker.training import run_job

from ..worker.test_run_job import SPEC, XOR

CHUNK = 1024  # small chunks: the 64-row arrays below are written as streams of several


def _tenant() -> str:
    return f"usage-{uuid.uuid4().hex[:8]}"


def _counted(db, tenant: str) -> int | None:
    with db.reading() as s:
        return s.scalar(select(TenantUsage.job_bytes).where(TenantUsage.tenant == tenant))


def _summed(db, tenant: str) -> int:
    with db.reading() as s:
        total = s.scalar(
            select(func.coalesce(func.sum(Blob.size), 0))
            .join(Job, Job.id == Blob.job_id)
            .where(Job.tenant == tenant)
        )
    return int(total)


def _add(db, tenant: str, *, rows: int = 4, **spec) -> str:
    arrays = {
        "inputs": np.resize(XOR["inputs"], (rows, 2)),
        "targets": np.resize(XOR["targets"], (rows, 1)),
    }
    spec = JobSpec.from_json({**SPEC, **spec})
    with db.session() as s:
        return jobs.add_job(
            s, db, tenant=tenant, spec=spec, arrays=arrays, name=None, labels={},
            chunk_bytes=CHUNK,
        ).job.id  # fmt: skip


def _train(db, job_id: str, **settings) -> None:
    settings = Settings(
        database_url=db.engine.url.render_as_string(hide_password=False),
        blob_chunk_bytes=CHUNK,
        max_running_jobs_per_tenant=8,  # six writers run at once below
        **settings,
    )
    outcome = run_job(job_id, db=db, settings=settings, worker="usage-test")
    assert outcome.status == "succeeded"


def test_the_row_is_the_sum_of_the_tenants_blobs_after_every_kind_of_write(database_url):
    db = get_database(database_url)
    tenant, other = _tenant(), _tenant()
    steps = []

    def check(step: str) -> None:
        steps.append((step, _counted(db, tenant), _summed(db, tenant)))

    bystander = _add(db, other)
    small = _add(db, tenant)
    check("a job of one-chunk arrays")
    large = _add(db, tenant, rows=64)
    check("a job of chunked arrays")
    _train(db, small)
    check("a run's model and final state")
    # a checkpoint every few milliseconds: checkpoints written and the older ones deleted
    _train(db, large, checkpoint_seconds=0.001)
    check("a run with checkpoints")
    copied = _add(db, tenant, init_from=small)
    check("start weights copied from another job")
    with db.session() as s:
        jobs.delete_rows(s, small)
    check("a job deleted")
    with db.session() as s:
        jobs.delete_rows(s, copied)
        jobs.delete_rows(s, large)
    check("every job deleted")

    assert [(step, counted) for step, counted, _ in steps] == [
        (step, summed) for step, _, summed in steps
    ]
    assert steps[0][1] > 0 and steps[1][1] > steps[0][1] + CHUNK  # the streams were counted
    assert steps[-1][1] == 0
    assert _counted(db, other) == _summed(db, other) > 0
    with db.session() as s:
        jobs.delete_rows(s, bystander)
    assert _counted(db, other) == 0


def test_many_writers_of_one_tenant_at_once_neither_deadlock_nor_miscount(database_url):
    # submits that copy another job's weights, runs that write checkpoints and models, and
    # deletes, from six threads at once on one tenant: every transaction commits, and the
    # row is the sum of what is left
    db = get_database(database_url)
    tenant = _tenant()
    sources = [_add(db, tenant) for _ in range(3)]
    for job_id in sources:
        _train(db, job_id)
    errors = []

    def work(n: int) -> None:
        try:
            for round_ in range(4):
                job_id = _add(db, tenant, rows=16 + n, init_from=sources[(n + round_) % 3])
                _train(db, job_id, checkpoint_seconds=0.001)
                if round_ % 2:
                    with db.session() as s:
                        jobs.delete_rows(s, job_id)
        except Exception as exc:  # noqa: BLE001 - the assertion below names it
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    with db.reading() as s:
        left = s.scalar(select(func.count()).select_from(Job).where(Job.tenant == tenant))
    assert left == 3 + 6 * 2
    assert _counted(db, tenant) == _summed(db, tenant) > 0


def test_the_quota_reads_one_row_however_many_jobs_the_tenant_has(database_url):
    db = get_database(database_url)
    tenant = _tenant()
    job_id = _add(db, tenant)
    # 2,000 more jobs with three blobs each, written by SQL of the test's (the triggers count them)
    _bulk_jobs(db, tenant, job_id, 2000)
    assert _counted(db, tenant) == _summed(db, tenant)
    with db.reading() as s:
        assert jobs.job_bytes(s, tenant) == _summed(db, tenant)
        sql = str(
            _JOB_BYTES.params(tenant=tenant).compile(
                s.connection(), compile_kwargs={"literal_binds": True}
            )
        )
        if db.is_sqlite:
            steps = [row[-1] for row in s.execute(text(f"EXPLAIN QUERY PLAN {sql}"))]
            # one search of tenant_usage's key (the constant row is the outer SELECT's)
            assert any(step.startswith("SEARCH tenant_usage") for step in steps), steps
            assert not [step for step in steps if "blob" in step or " job" in step], steps
            assert not [step for step in steps if step.startswith("SCAN tenant_usage")], steps
        else:
            plan = s.execute(text(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}")).scalar()
            top = plan[0]["Plan"]
            touched = top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0)
            # the sum over 2,001 jobs' blobs touched about 6,000 pages; one row, a few
            assert touched <= 8, top


def _bulk_jobs(db, tenant: str, like: str, count: int) -> None:
    """``count`` copies of job ``like``'s row, each with three blob rows (without chunks)."""
    job = Job.__table__
    columns = [c.key for c in job.columns if c.key != "id"]
    with db.session() as s:
        for _ in range(count):
            copy = select(text(f"'{uuid.uuid4()}'"), *[job.c[c] for c in columns])
            s.execute(job.insert().from_select(["id", *columns], copy.where(job.c.id == like)))
        s.execute(
            text(
                "INSERT INTO blob (job_id, kind, format, size, created_at) "
                "SELECT job.id, k.kind, 'npy', 100, job.created_at FROM job, "
                "(SELECT 'inputs' AS kind UNION ALL SELECT 'targets' UNION ALL SELECT 'model') "
                "AS k WHERE job.tenant = :tenant AND job.id <> :like"
            ),
            {"tenant": tenant, "like": like},
        )
