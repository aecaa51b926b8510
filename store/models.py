"""The database schema as SQLAlchemy 2 models. Imports nothing but SQLAlchemy and the job
spec (``backprop.spec``), which a job's ``spec`` column holds. The reason to change is the
schema: a table, a column or an index.

Alembic's migrations create these tables; ``tests/store/test_migrations.py`` proves that the
models and the migrations agree. Times are stored as naive UTC and read back as aware UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from backprop.spec import JobSpec


class UTCDateTime(TypeDecorator):
    """A timestamp stored without zone (SQLite has none) and always meaning UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        return value.replace(tzinfo=UTC) if value is not None else None


class JobSpecJSON(TypeDecorator):
    """A job's spec, stored as its JSON (``JobSpec.to_json``) and read back as a JobSpec."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return value.to_json() if value is not None else None

    def process_result_value(self, value, dialect):
        return JobSpec.from_json(value) if value is not None else None


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


# job.status values; paused: a sweep's trial stopped at an ASHA rung with promotions, which
# its sweep may promote (queued again) while it runs, or ends (succeeded, stopped early)
QUEUED, RUNNING, PAUSED, SUCCEEDED, FAILED, CANCELLED = (
    "queued",
    "running",
    "paused",
    "succeeded",
    "failed",
    "cancelled",
)
STATUSES = (QUEUED, RUNNING, PAUSED, SUCCEEDED, FAILED, CANCELLED)
FINAL_STATUSES = (SUCCEEDED, FAILED, CANCELLED)


class Job(Base):
    """One training job: its spec, where it is, and who holds it."""

    __tablename__ = "job"
    __table_args__ = (
        Index("ix_job_tenant_created", "tenant", "created_at", "id"),
        Index("ix_job_status_lease", "status", "lease_expires_at"),
        Index("ix_job_tenant_status", "tenant", "status"),
        Index("ix_job_sweep_trial", "sweep_id", "trial", unique=True),
        Index("ix_job_callback_state", "callback_state"),
        # the queued jobs that wait without a task message (``store.jobs.next_waiting``, at
        # every job's end): few, so the lookup does not read the tenant's whole queue
        Index(
            "ix_job_waiting",
            "tenant",
            "created_at",
            postgresql_where=text("status = 'queued' AND dispatched_at IS NULL"),
            sqlite_where=text("status = 'queued' AND dispatched_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(200))
    labels: Mapped[dict[str, Any]]
    # structure, epochs, learning_rate, seed, options, data layout: the validated request
    spec: Mapped[JobSpec] = mapped_column(JobSpecJSON)
    status: Mapped[str] = mapped_column(String(16))
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    epochs: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    # when the latest task message was sent, and how many were sent since the job was last
    # queued: the reconciler re-sends a message that may be lost, backing off exponentially
    dispatched_at: Mapped[datetime | None]
    dispatch_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    runtime_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    # the latest finished epoch's metrics row, written with the progress: a poll reads one row
    latest_metrics: Mapped[dict[str, Any] | None]
    # options.verify_gradients: {"before": {...}, "after": {...}, "threshold", "warning"}
    gradient_check: Mapped[dict[str, Any] | None]
    # the stored data sets it trains on (training, validation), when not inline; a data set
    # cannot be deleted while a queued or running job names it here
    dataset_id: Mapped[str | None] = mapped_column(ForeignKey("dataset.id"), index=True)
    val_dataset_id: Mapped[str | None] = mapped_column(ForeignKey("dataset.id"), index=True)
    # a sweep's trial: its sweep, its number there (1, 2, ...), the searched values it was
    # given, ASHA's decision at each rung it reached, and whether ASHA stopped it
    sweep_id: Mapped[str | None] = mapped_column(ForeignKey("sweep.id"))
    trial: Mapped[int | None] = mapped_column(Integer)
    params: Mapped[dict[str, Any] | None]
    rungs: Mapped[list[Any] | None] = mapped_column(JSON)
    stopped_early: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    error_type: Mapped[str | None] = mapped_column(String(32))
    error_message: Mapped[str | None] = mapped_column(Text)
    # its callback (spec's callback_url): "waiting" until it is queued after the job ended,
    # then "queued", "delivered" or "failed" (store/callbacks.py); None without one. The
    # attempts are in its history; callback_at is when it was last queued or attempted
    callback_state: Mapped[str | None] = mapped_column(String(16))
    callback_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]

    metrics: Mapped[list[EpochMetric]] = relationship(
        back_populates="job", order_by="EpochMetric.epoch", cascade="all, delete-orphan"
    )


class Sweep(Base):
    """A hyperparameter search: the base job, the space, and how many trials are released.

    Trials are job rows (``job.sweep_id``); ``released`` counts those made so far, so that a
    deleted trial is not made again. ``spec`` holds the request as validated (``base`` the
    base job's stored spec, ``search``, ``method``, ``objective``, ``early_stopping``).
    """

    __tablename__ = "sweep"
    __table_args__ = (Index("ix_sweep_tenant_created", "tenant", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(200))
    labels: Mapped[dict[str, Any]]
    spec: Mapped[dict[str, Any]]
    # running until every trial has ended, then succeeded (a trial succeeded) or failed
    # (none did); cancelled on request
    status: Mapped[str] = mapped_column(String(16))
    trials: Mapped[int] = mapped_column(Integer)
    max_parallel: Mapped[int] = mapped_column(Integer)
    released: Mapped[int] = mapped_column(Integer, default=0)
    best_job_id: Mapped[str | None] = mapped_column(String(36))
    # the data sets its trials train on: not deleted while the sweep runs
    dataset_id: Mapped[str | None] = mapped_column(ForeignKey("dataset.id"), index=True)
    val_dataset_id: Mapped[str | None] = mapped_column(ForeignKey("dataset.id"), index=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    # its callback (spec's callback_url), once it ended: "waiting" until the sweep ends,
    # "queued" once its delivery was queued, then "delivered" or "failed"; None without one
    # (store/callbacks.py); callback_at is when it was last queued or attempted
    callback_state: Mapped[str | None] = mapped_column(String(16))
    callback_at: Mapped[datetime | None]
    callbacks: Mapped[list[Any] | None] = mapped_column(JSON)  # its delivery attempts


class SweepDataset(Base):
    """A data set a sweep searches (``data.dataset_id``): kept while the sweep runs, as the
    base's is by ``sweep.dataset_id``."""

    __tablename__ = "sweep_dataset"

    sweep_id: Mapped[str] = mapped_column(
        ForeignKey("sweep.id", ondelete="CASCADE"), primary_key=True
    )
    dataset_id: Mapped[str] = mapped_column(ForeignKey("dataset.id"), primary_key=True, index=True)


class JobEvent(Base):
    """The job's history: queued, claimed by whom, checkpoints, lease lost, resumed, ended."""

    __tablename__ = "job_event"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text, default="")
    worker: Mapped[str | None] = mapped_column(String(200))


class EpochMetric(Base):
    """One finished epoch; (job_id, epoch) is unique, so a job has one set of rows."""

    __tablename__ = "epoch_metric"

    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    cost: Mapped[float]
    accuracy: Mapped[float | None]
    val_cost: Mapped[float | None]
    val_accuracy: Mapped[float | None]
    seconds: Mapped[float]
    learning_rate: Mapped[float | None]  # of the epoch's last step
    recorded_at: Mapped[datetime]

    job: Mapped[Job] = relationship(back_populates="metrics")


class Blob(Base):
    """A NumPy ``.npy`` or ``.npz`` byte stream stored as bounded chunks.

    kind: inputs, targets, batch_sizes, val_inputs, val_targets (a job's data), checkpoint,
    model. Chunks keep every row small whatever the array's size, and let a reader fill one
    preallocated array without ever holding the whole byte stream.
    """

    __tablename__ = "blob"
    __table_args__ = (Index("ix_blob_job_kind", "job_id", "kind"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    format: Mapped[str] = mapped_column(String(8))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]
    # the job's tenant, which the database fills in when an insert leaves it out: what the
    # triggers that keep ``TenantUsage`` count by (migration 0012)
    tenant: Mapped[str | None] = mapped_column(String(64))


class TenantUsage(Base):
    """What a tenant's jobs store: the sum of their blobs' sizes, kept by the database's
    triggers on ``blob`` (migration 0012) as blobs are written, grown and deleted. A
    submit's storage quota reads this one row instead of summing every blob the tenant
    has, which grew with the tenant's history. On PostgreSQL the triggers run at commit
    (deferred), so the row is locked only while a transaction commits, after every other
    lock it takes: writers of one tenant never deadlock on it."""

    __tablename__ = "tenant_usage"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_bytes: Mapped[int] = mapped_column(BigInteger)


class BlobChunk(Base):
    __tablename__ = "blob_chunk"

    blob_id: Mapped[int] = mapped_column(
        ForeignKey("blob.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Dataset(Base):
    """A tenant's stored data set: inputs and targets, each a C-ordered 2-D array kept as raw
    bytes in ``dataset_chunk`` rows (the shapes and dtypes live here), read by any worker."""

    __tablename__ = "dataset"
    __table_args__ = (
        Index("ix_dataset_tenant_sha256", "tenant", "sha256", unique=True),
        Index("ix_dataset_tenant_created", "tenant", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(200))
    labels: Mapped[dict[str, Any]]
    samples: Mapped[int] = mapped_column(BigInteger)
    # {"inputs": {"shape": [n, d], "dtype": "<f4"}, "targets": {...}}
    members: Mapped[dict[str, Any]]
    classes: Mapped[list[Any] | None] = mapped_column(JSON)  # a CSV label column's classes
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]


class DatasetChunk(Base):
    """Consecutive raw bytes of one member (inputs or targets) of a data set."""

    __tablename__ = "dataset_chunk"

    dataset_id: Mapped[str] = mapped_column(
        ForeignKey("dataset.id", ondelete="CASCADE"), primary_key=True
    )
    member: Mapped[str] = mapped_column(String(16), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class WebhookSecret(Base):
    """The key a tenant's job callbacks are signed with (HMAC-SHA256)."""

    __tablename__ = "webhook_secret"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    secret: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]


class ApiToken(Base):
    """A bearer token, stored as its SHA-256: the token itself is shown once, at creation."""

    __tablename__ = "api_token"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class IdempotencyRecord(Base):
    """The first answer to a submit with an Idempotency-Key, replayed for later retries."""

    __tablename__ = "idempotency_record"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]]
    job_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


def utcnow() -> datetime:
    return datetime.now(UTC)
