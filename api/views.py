"""Database rows into response models: what a client sees of a job."""

from __future__ import annotations

from flask import Response
from pydantic import BaseModel

from store.models import EpochMetric, Job, JobEvent

from .schemas import (
    DataSummary,
    EpochMetricsOut,
    JobErrorOut,
    JobEventOut,
    JobOut,
    JobSummary,
    Lineage,
    OptionsOut,
    Progress,
)


def json_response(model: BaseModel, status: int = 200, headers: dict | None = None) -> Response:
    return Response(
        model.model_dump_json(), status=status, mimetype="application/json", headers=headers
    )


def metric_view(row: EpochMetric) -> EpochMetricsOut:
    return EpochMetricsOut(
        epoch=row.epoch,
        cost=row.cost,
        accuracy=row.accuracy,
        val_cost=row.val_cost,
        val_accuracy=row.val_accuracy,
        seconds=row.seconds,
    )


def _summary_fields(job: Job) -> dict:
    spec = job.spec
    error = None
    if job.error_type:
        error = JobErrorOut(type=job.error_type, message=job.error_message or "")
    return dict(
        id=job.id,
        name=job.name,
        labels=job.labels,
        status=job.status,
        progress=Progress(epoch=job.epoch, epochs=job.epochs),
        structure=spec["structure"],
        learning_rate=spec["learning_rate"],
        seed=spec["seed"],
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        updated_at=job.updated_at,
        error=error,
        metrics=EpochMetricsOut(**latest) if (latest := job.latest_metrics) else None,
        runtime_seconds=job.runtime_seconds,
    )


def job_summary(job: Job) -> JobSummary:
    return JobSummary(**_summary_fields(job))


def job_detail(job: Job, history: list[JobEvent]) -> JobOut:
    spec = job.spec
    return JobOut(
        **_summary_fields(job),
        options=OptionsOut(**spec["options"]),
        data=DataSummary(**spec["data"]),
        attempts=job.attempts,
        cancel_requested=job.cancel_requested,
        callback_url=spec.get("callback_url"),
        gradient_check=job.gradient_check,
        history=[
            JobEventOut(at=e.at, kind=e.kind, message=e.message, worker=e.worker) for e in history
        ],
    )


def lineage_view(job: Job) -> Lineage:
    spec, layout = job.spec, job.spec["data"]
    stored = layout.get("dataset_id")
    validation = None
    if spec["options"].get("validation_split"):
        validation = f"split:{spec['options']['validation_split']}"
    elif spec.get("validation"):
        validation = f"dataset:{spec['validation']['dataset_id']}"
    elif layout.get("validation_samples"):
        validation = "inline"
    latest = job.latest_metrics
    return Lineage(
        job_id=job.id,
        data=f"dataset:{stored}" if stored else "inline",
        data_sha256=layout.get("dataset_sha256"),
        validation=validation,
        init_from=spec.get("init_from"),
        seed=spec["seed"],
        epochs=spec["epochs"],
        epochs_run=job.epoch,
        learning_rate=spec["learning_rate"],
        batch_size=layout.get("batch_size"),
        options=OptionsOut(**spec["options"]),
        metrics=EpochMetricsOut(**latest) if latest else None,
        gradient_check=job.gradient_check,
        finished_at=job.finished_at,
    )
