"""What a worker records of the job it holds, each write under its lease: finished epochs'
metrics, checkpoints, gradient checks, a resume's rewind to its checkpoint, and the job's
end. The reason to change is what a run records.

Every write here is one conditional UPDATE naming the lease's owner (``store.leases.guarded``):
a worker that lost the job writes nothing and gets ``LeaseLost``.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import bindparam, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from . import blobs, job_end
from .db import Database
from .job_end import METRIC_FIELDS
from .jobs import add_event, next_waiting
from .leases import SERVER_NOW, LeaseLost, guarded, record_event
from .models import FAILED, Blob, BlobChunk, EpochMetric, Job, JobEvent

_job, _metric = Job.__table__, EpochMetric.__table__
_blob, _chunk, _event = Blob.__table__, BlobChunk.__table__, JobEvent.__table__


def record_progress(
    session: Session,
    db: Database,
    job_id: str,
    owner: str,
    *,
    metrics: list[dict],
    runtime_seconds: float,
    checkpoint: dict[str, np.ndarray] | None = None,
    chunk_bytes: int,
    worker: str,
) -> None:
    """Buffered epochs' metrics rows, progress and (optionally) a checkpoint, atomically.

    The worker calls this on a clock (METRICS_FLUSH_SECONDS, CHECKPOINT_SECONDS), not once
    per epoch, so the number of transactions does not grow with the epochs. A checkpoint
    always travels with every metrics row up to its position: rows past the last checkpoint
    may exist, and a resume drops and recomputes them (``prepare_resume``).
    """
    values = dict(_lease(job_id, owner), runtime_seconds=runtime_seconds, **_progress(metrics))
    now = _guarded_update(session, db, _PROGRESS, job_id, values)[0]
    _write_metrics(session, job_id, metrics, now)
    if checkpoint is not None:
        _replace_checkpoint(session, job_id, checkpoint, chunk_bytes, now, worker)


# ------------------------------------------------------------------- prebuilt statements
#
# The run's writes are built once, here, and bound per call: a statement built per call costs
# more to compile (or to look up in the cache) than to execute. On PostgreSQL the guarded
# UPDATEs read the database's clock themselves (``leases.SERVER_NOW``) and return it; on
# SQLite, whose clock is this machine's, ``now`` is bound.


def _lease(job_id: str, owner: str) -> dict:
    return {"job_id": job_id, "owner": owner}


def _guarded_statements(returning: tuple, **values) -> dict:
    """A guarded UPDATE of the job (``leases.guarded``) setting ``values`` (column name to
    bind parameter name) and ``updated_at``, returning ``updated_at`` and ``returning``;
    one statement per (with the progress columns, the server's clock)."""
    built = {}
    for with_progress in (False, True):
        for server_clock in (False, True):
            now = SERVER_NOW if server_clock else bindparam("now", type_=_job.c.updated_at.type)
            names = dict(values, **(_PROGRESS_COLUMNS if with_progress else {}))
            columns = {
                column: now if name is None else bindparam(name, type_=_job.c[column].type)
                for column, name in names.items()
            }
            built[with_progress, server_clock] = (
                guarded().values(updated_at=now, **columns).returning(_job.c.updated_at, *returning)
            )
    return built


_PROGRESS_COLUMNS = {"epoch": "epoch", "latest_metrics": "latest_metrics"}

#: a flush: the runtime, and the progress when epochs finished
_PROGRESS = _guarded_statements((), runtime_seconds="runtime_seconds")

#: a resume's rewind: the progress back at the checkpoint
_REWIND = _guarded_statements(())

#: the end: the outcome, the lease released (``None``: the statement's own time)
_FINISH = _guarded_statements(
    (_job.c.tenant,),
    status="status",
    lease_owner="lease_owner",
    lease_expires_at="lease_expires_at",
    finished_at=None,
    runtime_seconds="runtime_seconds",
    error_type="error_type",
    error_message="error_message",
    stopped_early="stopped_early",
)


def _guarded_update(session: Session, db: Database, statements, job_id: str, values: dict):
    """Run a guarded UPDATE; its RETURNING row (``updated_at`` first, aware UTC). Raises
    LeaseLost when the lease is gone."""
    server_clock = not db.is_sqlite
    if not server_clock:
        values = dict(values, now=db.now(session))
    statement = statements["epoch" in values, server_clock]
    row = session.execute(statement, values).first()
    if row is None:
        raise LeaseLost(job_id)
    return row


def _metrics_upsert(dialect_insert):
    """The metrics rows' INSERT: a retried transaction (an outage after the commit) must not
    insert the rows twice, so an existing (job_id, epoch) row is overwritten."""
    names = ("job_id", "recorded_at") + METRIC_FIELDS
    upsert = dialect_insert(_metric).values(
        {name: bindparam(name, type_=_metric.c[name].type) for name in names}
    )
    return upsert.on_conflict_do_update(
        index_elements=["job_id", "epoch"],
        set_={name: upsert.excluded[name] for name in METRIC_FIELDS + ("recorded_at",)},
    )


_METRICS_UPSERT = {
    "sqlite": _metrics_upsert(sqlite_insert),
    "postgresql": _metrics_upsert(pg_insert),
}

_DROP_METRICS_AFTER = delete(_metric).where(
    _metric.c.job_id == bindparam("job_id"), _metric.c.epoch > bindparam("epoch")
)
_METRICS_AT = select(*(_metric.c[name] for name in METRIC_FIELDS)).where(
    _metric.c.job_id == bindparam("job_id"), _metric.c.epoch == bindparam("epoch")
)

#: a job's checkpoints but the one just written: chunks first, then their blob rows
_OTHER_CHECKPOINTS = select(_blob.c.id).where(
    _blob.c.job_id == bindparam("job_id"),
    _blob.c.kind == "checkpoint",
    _blob.c.id != bindparam("keep"),
)
_DROP_CHECKPOINT_CHUNKS = delete(_chunk).where(
    _chunk.c.blob_id.in_(_OTHER_CHECKPOINTS.scalar_subquery())
)
_DROP_CHECKPOINTS = delete(_blob).where(_blob.c.id.in_(_OTHER_CHECKPOINTS.scalar_subquery()))
_DROP_CHECKPOINT_EVENTS = delete(_event).where(
    _event.c.job_id == bindparam("job_id"), _event.c.kind == "checkpoint"
)

# ---------------------------------------------------------------------------------- writes


def _progress(metrics: list[dict]) -> dict:
    """The job row's progress after these finished epochs (nothing when there are none)."""
    if not metrics:
        return {}
    return dict(epoch=metrics[-1]["epoch"], latest_metrics=metrics[-1])


def _write_metrics(session: Session, job_id: str, metrics: list[dict], now) -> None:
    if not metrics:
        return
    rows = [
        dict({name: m.get(name) for name in METRIC_FIELDS}, job_id=job_id, recorded_at=now)
        for m in metrics
    ]
    session.execute(_METRICS_UPSERT[session.bind.dialect.name], rows)


def _drop_other_checkpoints(session: Session, job_id: str, keep: int) -> None:
    keeping = dict(job_id=job_id, keep=keep)
    session.execute(_DROP_CHECKPOINT_CHUNKS, keeping)
    session.execute(_DROP_CHECKPOINTS, keeping)


def _replace_checkpoint(
    session, job_id, state, chunk_bytes, now, worker, earlier: bool = True
) -> None:
    """Write ``state`` as the job's checkpoint; with ``earlier`` (the job may have one
    already), delete the others."""
    named = {"checkpoint": state}
    blob_id = blobs.write_npz_blobs(session, job_id, named, chunk_bytes)["checkpoint"]
    if earlier:
        _drop_other_checkpoints(session, job_id, blob_id)
    epoch, batch = int(state["epoch"]), int(state["batch"])
    where = f"after epoch {epoch}" if batch == 0 else f"epoch {epoch + 1}, batch {batch}"
    # the history keeps the latest checkpoint only: a long job would drown it otherwise
    session.execute(_DROP_CHECKPOINT_EVENTS, {"job_id": job_id})
    record_event(session, job_id, "checkpoint", where, worker=worker, at=now)


def prepare_resume(session: Session, db: Database, job_id: str, owner: str, epoch: int):
    """Drop metrics rows past the checkpoint's epoch (the resumed run writes them again) and
    set the progress back to the checkpoint. Returns the time it was written at."""
    at = {"job_id": job_id, "epoch": epoch}
    session.execute(_DROP_METRICS_AFTER, at)
    latest = session.execute(_METRICS_AT, at).first()
    values = dict(_lease(job_id, owner), epoch=epoch, latest_metrics=latest and metric_dict(latest))
    return _guarded_update(session, db, _REWIND, job_id, values)[0]


def metric_dict(row: EpochMetric) -> dict:
    return {name: getattr(row, name) for name in METRIC_FIELDS}


def record_gradient_check(
    session: Session, db: Database, job_id: str, owner: str, when: str, check: dict, threshold
) -> None:
    """Store one gradient check (``when``: before or after training) under the lease."""
    job = session.get(Job, job_id)
    if job is None or job.lease_owner != owner:
        raise LeaseLost(job_id)
    record = dict(job.gradient_check or {"threshold": threshold, "warning": False})
    record[when] = check
    record["warning"] = bool(record["warning"] or check["worst_relative_error"] > threshold)
    job.gradient_check = record
    message = (
        f"{when} training: worst relative error {check['worst_relative_error']:.3g} over "
        f"{check['parameters']} parameters on {check['samples']} samples"
    )
    add_event(session, job_id, "gradient_check", message, at=db.now(session))
    if check["worst_relative_error"] > threshold:
        add_event(
            session, job_id, "gradient_check_warning",
            f"above the threshold {threshold:g}: backprop and finite differences disagree",
            at=db.now(session),
        )  # fmt: skip


def finish(
    session: Session,
    db: Database,
    job_id: str,
    owner: str,
    *,
    status: str,
    runtime_seconds: float,
    error_type: str | None = None,
    message: str = "",
    model: dict[str, np.ndarray] | None = None,
    metrics: list[dict] | None = None,
    checkpoint: dict[str, np.ndarray] | None = None,
    chunk_bytes: int = 2**20,
    worker: str | None = None,
    stopped_early: bool = False,
    earlier_checkpoint: bool = True,
) -> str | None:
    """End the job (succeeded with its model, failed or cancelled) and release the lease.

    The last buffered metrics rows, and a checkpoint of a stopped job, are written in the
    same transaction. ``earlier_checkpoint=False`` says that the job has no checkpoint stored
    (its run loaded none and wrote none), so a checkpoint written here replaces nothing and
    no other is looked for. Returns the tenant's next job waiting without a task message
    (see ``jobs.next_waiting``), which the caller offers to the workers.
    """
    values = dict(
        _lease(job_id, owner),
        status=status,
        lease_owner=None,
        lease_expires_at=None,
        runtime_seconds=runtime_seconds,
        error_type=error_type,
        error_message=message or None if status == FAILED else None,
        stopped_early=stopped_early,
        **_progress(metrics),
    )
    stopped = checkpoint is not None and model is None
    if not db.is_sqlite and not stopped:
        named = {"checkpoint": checkpoint, "model": model}
        named = {kind: arrays for kind, arrays in named.items() if arrays is not None}
        ending = dict(values, message=message, worker=worker)
        return _end_at_once(session, ending, metrics or [], named, chunk_bytes, earlier_checkpoint)
    try:
        now, tenant = _guarded_update(session, db, _FINISH, job_id, values)
    except LeaseLost:
        if _ended_already(session, job_id, status):
            return None  # a retry of a finish whose first commit went through
        raise
    _write_metrics(session, job_id, metrics or [], now)
    if checkpoint is not None and model is not None:
        # the final state and the model in one write; the end's own event says where
        named = {"checkpoint": checkpoint, "model": model}
        ids = blobs.write_npz_blobs(session, job_id, named, chunk_bytes)
        if earlier_checkpoint:
            _drop_other_checkpoints(session, job_id, ids["checkpoint"])
    elif stopped:  # its history says where it stopped
        _replace_checkpoint(
            session, job_id, checkpoint, chunk_bytes, now, worker, earlier_checkpoint
        )
    elif model is not None:
        blobs.write_npz_blobs(session, job_id, {"model": model}, chunk_bytes)
    record_event(session, job_id, status, message, worker=worker, at=now)
    return next_waiting(session, tenant)


def _ended_already(session: Session, job_id: str, status: str) -> bool:
    ended = session.execute(select(Job.status, Job.lease_owner).where(Job.id == job_id)).first()
    return ended is not None and ended.status == status and ended.lease_owner is None


def _end_at_once(
    session: Session,
    ending: dict,
    metrics: list[dict],
    named: dict[str, dict[str, np.ndarray]],
    chunk_bytes: int,
    earlier_checkpoint: bool,
) -> str | None:
    """``finish`` on PostgreSQL, but for a stopped job's checkpoint (whose own event comes
    before the end's): the guarded UPDATE, the metrics rows, the blobs of one chunk and the
    end's event in one statement (``store.job_end``), which answers with the tenant's next
    waiting job too, then the larger blobs and the other checkpoints when there may be some."""
    job_id = ending["job_id"]
    small, large = blobs.npz_bytes(named, chunk_bytes)  # as ``blobs.write_npz_blobs`` stores
    rows = job_end.end_in_one_statement(session, ending, metrics, small)
    if not rows:  # the UPDATE found no row, and nothing else was written
        if _ended_already(session, job_id, ending["status"]):
            return None  # a retry of a finish whose first commit went through
        raise LeaseLost(job_id)
    ids = {row.kind: row.id for row in rows if row.kind is not None}
    for kind, data in large.items():
        ids[kind] = blobs.write_npz(session, job_id, kind, data, chunk_bytes).id
    if earlier_checkpoint and "checkpoint" in ids:
        _drop_other_checkpoints(session, job_id, ids["checkpoint"])
    return rows[0].next_waiting
