"""A job's end on PostgreSQL in one statement of data-modifying CTEs: the guarded UPDATE that
ends it, its last metrics rows, its blobs of one chunk with their chunks, and the end's
event, answering with the tenant's next waiting job (``store.jobs.next_waiting``'s
question; ``store.progress.finish`` decides when it applies). The reason to change is what that
statement writes.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, String, bindparam, column, text
from sqlalchemy.orm import Session

from . import blobs
from .models import QUEUED, RUNNING, Blob, Job, utcnow

_job, _blob = Job.__table__, Blob.__table__

#: a metrics row's columns beside its job and time, in the order rows are written
METRIC_FIELDS = (
    "epoch",
    "cost",
    "accuracy",
    "val_cost",
    "val_accuracy",
    "seconds",
    "learning_rate",
)


def end_in_one_statement(
    session: Session, ending: dict, metrics: list[dict], small: dict[str, bytes]
) -> list:
    """Run ``_END`` for the job's end (``ending``: the UPDATE's values with job_id, owner,
    status, message and worker), its metrics rows and its one-chunk ``.npz`` blobs by kind.
    Returns its rows (updated_at, tenant, each blob's kind and id, and the id of the tenant's
    oldest queued job without a task message, if any); none when the lease was lost, and
    then nothing was written."""
    columns = {name: [m.get(name) for m in metrics] for name in METRIC_FIELDS}
    params = dict(
        ending,
        epoch=ending.get("epoch"),
        latest_metrics=ending.get("latest_metrics"),
        m_epoch=[int(epoch) for epoch in columns.pop("epoch")],
        **{f"m_{name}": [_float(v) for v in column] for name, column in columns.items()},
        blob_kinds=list(small),
        blob_sizes=[len(data) for data in small.values()],
        blob_data=list(small.values()),
        blobs_at=utcnow(),
    )
    return session.execute(_END, params).all()


def _float(value) -> float | None:
    return None if value is None else float(value)


_SERVER_NOW_SQL = "timezone('UTC', statement_timestamp())"  # ``leases.SERVER_NOW``
_METRIC_COLUMNS = ", ".join(METRIC_FIELDS)

#: PostgreSQL: a job's end in one statement (see ``_end_at_once``). Every part reads the
#: UPDATE's RETURNING row, so a lost lease (no row) writes nothing; the foreign keys are
#: checked at the statement's end, when the blob rows are there.
_END = (
    text(
        f"""
WITH ended AS (
  UPDATE job SET
    status = :status, lease_owner = NULL, lease_expires_at = NULL,
    finished_at = {_SERVER_NOW_SQL}, updated_at = {_SERVER_NOW_SQL},
    runtime_seconds = :runtime_seconds, error_type = :error_type,
    error_message = :error_message, stopped_early = :stopped_early,
    epoch = COALESCE(CAST(:epoch AS integer), epoch),
    latest_metrics = CASE WHEN CAST(:epoch AS integer) IS NULL THEN latest_metrics
                          ELSE CAST(:latest_metrics AS json) END
  WHERE id = :job_id AND lease_owner = :owner AND status = '{RUNNING}'
  RETURNING tenant, updated_at
), metric_rows AS (
  INSERT INTO epoch_metric (job_id, {_METRIC_COLUMNS}, recorded_at)
  SELECT :job_id, {", ".join(f"m.{name}" for name in METRIC_FIELDS)}, ended.updated_at
  FROM ended, unnest(
    CAST(:m_epoch AS integer[]),
    {", ".join(f"CAST(:m_{name} AS double precision[])" for name in METRIC_FIELDS[1:])}
  ) AS m({_METRIC_COLUMNS})
  ON CONFLICT (job_id, epoch) DO UPDATE SET
    {", ".join(f"{name} = excluded.{name}" for name in METRIC_FIELDS + ("recorded_at",))}
), {blobs.one_chunk_blobs_sql(":job_id", "ended.tenant", "npz", after="ended")}, history AS (
  INSERT INTO job_event (job_id, at, kind, message, worker)
  SELECT :job_id, ended.updated_at, :status, :message, :worker FROM ended
)
SELECT ended.updated_at, ended.tenant, blob_rows.kind, blob_rows.id, (
  SELECT waiting.id FROM job AS waiting
  WHERE waiting.tenant = ended.tenant AND waiting.status = '{QUEUED}'
    AND waiting.dispatched_at IS NULL
  ORDER BY waiting.created_at LIMIT 1
) AS next_waiting
FROM ended LEFT JOIN blob_rows ON true
"""
    )
    .bindparams(
        bindparam("latest_metrics", type_=_job.c.latest_metrics.type),
        bindparam("blobs_at", type_=_blob.c.created_at.type),
    )
    .columns(
        column("updated_at", _job.c.updated_at.type),
        column("tenant", String),
        column("kind", String),
        column("id", BigInteger),
        column("next_waiting", String),
    )
)
