"""Database rows into response models: what a client sees of a job.
The reason to change is how a stored row is shown to a client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from flask import Response, stream_with_context
from pydantic import BaseModel

from store import sweeps
from store.jobs import Event
from store.models import SUCCEEDED, EpochMetric, Job, JobEvent, Sweep

from .schemas.job_views import (
    DataSummary,
    EpochMetricsOut,
    JobErrorOut,
    JobEventOut,
    JobOut,
    JobSummary,
    OptionsOut,
    Progress,
)
from .schemas.models import Lineage
from .schemas.sweeps import (
    ConfigurationOut,
    ObjectiveOut,
    SweepCallbackOut,
    SweepCounts,
    SweepEpochs,
    SweepOut,
    SweepSummary,
    TrialOut,
)
from .watch import RECHECK_SECONDS


def json_response(model: BaseModel, status: int = 200, headers: dict | None = None) -> Response:
    return Response(
        model.model_dump_json(), status=status, mimetype="application/json", headers=headers
    )


def event_stream(
    watcher,
    key: str,
    timeout: float,
    read: Callable[[], tuple[Iterable[str], bool]],
    give_back: Callable[[], None],
) -> Response:
    """Server-sent events: each round, ``read()`` gives the round's events and whether the
    stream ends with them; between rounds the stream waits for a notification about ``key``
    (at most RECHECK_SECONDS, sending a comment that keeps an idle connection open), and it
    ends after ``timeout`` seconds. ``give_back`` returns the stream's wait slot
    (``api.watch.WaitSlots``) when the response is closed."""

    def stream():
        deadline = time.monotonic() + timeout
        with watcher.watching(key) as changed:
            while True:
                events, ended = read()
                yield from events
                left = deadline - time.monotonic()
                if ended or left <= 0:
                    return
                if not changed.wait(min(left, RECHECK_SECONDS)):
                    yield ": waiting\n\n"
                changed.clear()

    response = Response(
        stream_with_context(stream()),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    response.call_on_close(give_back)
    return response


def metric_view(row: EpochMetric) -> EpochMetricsOut:
    return EpochMetricsOut(
        epoch=row.epoch,
        cost=row.cost,
        accuracy=row.accuracy,
        val_cost=row.val_cost,
        val_accuracy=row.val_accuracy,
        seconds=row.seconds,
        learning_rate=row.learning_rate,
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
        structure=list(spec.structure),
        learning_rate=spec.learning_rate,
        seed=spec.seed,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        updated_at=job.updated_at,
        error=error,
        metrics=EpochMetricsOut(**latest) if (latest := job.latest_metrics) else None,
        runtime_seconds=job.runtime_seconds,
        sweep_id=job.sweep_id,
        trial=job.trial,
        stopped_early=bool(job.stopped_early),
        continued_from=spec.continued_from,
    )


def job_summary(job: Job) -> JobSummary:
    return JobSummary(**_summary_fields(job))


def job_detail(job: Job, history: Sequence[JobEvent | Event]) -> JobOut:
    """The job's whole view. ``job``: the object or a row of its table (the same attribute
    names); ``history``: its events, oldest first, as objects or ``Event`` tuples."""
    spec = job.spec
    return JobOut(
        **_summary_fields(job),
        options=OptionsOut(**spec.options.to_json()),
        data=DataSummary(**spec.data.to_json()),
        attempts=job.attempts,
        cancel_requested=job.cancel_requested,
        callback_url=spec.callback_url,
        callback_state=job.callback_state,
        gradient_check=job.gradient_check,
        params=job.params,
        rungs=job.rungs,
        history=[
            JobEventOut(at=e.at, kind=e.kind, message=e.message, worker=e.worker) for e in history
        ],
    )


def lineage_view(job: Job) -> Lineage:
    spec, layout = job.spec, job.spec.data
    stored = layout.dataset_id
    validation = None
    if spec.options.validation_split:
        validation = f"split:{spec.options.validation_split}"
    elif spec.validation:
        validation = f"dataset:{spec.validation.dataset_id}"
    elif layout.validation_samples:
        validation = "inline"
    latest = job.latest_metrics
    return Lineage(
        job_id=job.id,
        data=f"dataset:{stored}" if stored else "inline",
        data_sha256=layout.dataset_sha256,
        validation=validation,
        init_from=spec.init_from,
        continued_from=spec.continued_from,
        seed=spec.seed,
        epochs=spec.epochs,
        epochs_run=job.epoch,
        learning_rate=spec.learning_rate,
        batch_size=layout.batch_size,
        options=OptionsOut(**spec.options.to_json()),
        metrics=EpochMetricsOut(**latest) if latest else None,
        gradient_check=job.gradient_check,
        finished_at=job.finished_at,
    )


def trial_view(sweep: Sweep, job: Job) -> TrialOut:
    return TrialOut(
        trial=job.trial,
        job_id=job.id,
        status=job.status,
        params=job.params or {},
        objective=sweeps.objective(job, sweep.spec["objective"]["metric"]),
        progress=Progress(epoch=job.epoch, epochs=job.epochs),
        stopped_early=bool(job.stopped_early),
        rungs=job.rungs or [],
        runtime_seconds=job.runtime_seconds,
    )


def _sweep_fields(sweep: Sweep, figures: sweeps.Figures) -> dict:
    spec, best = sweep.spec, figures.best
    run, full = figures.epochs_run, figures.epochs_full
    return dict(
        id=sweep.id,
        name=sweep.name,
        labels=sweep.labels,
        status=sweep.status,
        method=spec["method"],
        trials=sweep.trials,
        max_parallel=sweep.max_parallel,
        seed=spec["seed"],
        objective=ObjectiveOut(**spec["objective"]),
        early_stopping=spec.get("early_stopping"),
        replicates=spec.get("replicates", 1),
        search=spec["search"],
        counts=SweepCounts(**figures.counts),
        best=trial_view(sweep, best) if best else None,
        epochs=SweepEpochs(run=run, full=full, saved=1 - run / full if full else 0.0),
        created_at=sweep.created_at,
        updated_at=sweep.updated_at,
        finished_at=sweep.finished_at,
    )


def sweep_summaries(session, found: list[Sweep]) -> list[SweepSummary]:
    """Summaries of a page of sweeps, their trials counted in the database, not loaded."""
    figures = sweeps.figures(session, found)
    return [SweepSummary(**_sweep_fields(sweep, figures[sweep.id])) for sweep in found]


def sweep_detail(session, sweep: Sweep, *, limit: int = 50, offset: int = 0) -> SweepOut:
    trials = sweeps.trials_of(session, sweep.id)
    ranked = sweeps.ranking(sweep, trials)
    page = ranked[offset : offset + limit]
    more = offset + limit < len(ranked)
    url = sweep.spec.get("callback_url")
    figures = sweeps.Figures(
        sweeps.counts(session, sweep),
        sum(t.epoch for t in trials),
        sum(t.epochs for t in trials),
        sweeps.best_trial(sweep, trials),
    )
    return SweepOut(
        **_sweep_fields(sweep, figures),
        callback=SweepCallbackOut(
            url=url, state=sweep.callback_state, attempts=sweep.callbacks or []
        )
        if url
        else None,
        configurations=[
            ConfigurationOut(**row)
            for row in sweeps.configurations(sweep, [t for t in trials if t.status == SUCCEEDED])
        ]
        if sweep.spec.get("replicates", 1) > 1
        else None,
        leaderboard=[trial_view(sweep, t) for t in page],
        leaderboard_total=len(ranked),
        next_offset=offset + limit if more else None,
    )
