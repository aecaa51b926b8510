"""Continue a job exactly: a new job that carries on from another's final state (weights,
shuffling generator, optimizer and schedule state, early-stopping record) for more epochs.
The reason to change is when a job may be continued and what the new job is.

Training is exact, so the continued job's weights and metrics rows are the bits of one job
trained for the whole run from the start. The new job's spec is its parent's with the
whole run's ``epochs``; a cosine schedule that spanned the parent's epochs (no ``t_max``)
gets the parent's length pinned as its ``t_max``, so the rates already taken stay what they
were, and the spec says so.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backprop.spec import JobSpec, stored_copies
from store import blobs, continued, datasets, jobs
from store.job_data import DATA_KINDS, load_checkpoint
from store.models import CANCELLED, FAILED, SUCCEEDED, Job

from .context import Context, Idempotency
from .errors import NotContinuable, Refused
from .idempotent import Stored, once
from .jobs import Answer, check_job_storage, dispatch


def continue_job(
    ctx: Context,
    job_id: str,
    *,
    epochs: int,
    max_runtime_seconds: int | None,
    name: str | None,
    labels: dict | None,
    idem: Idempotency | None,
    answer: Answer,
):
    """Queue a job that trains ``epochs`` more epochs from the tenant's job's final state
    (JobNotFound; NotContinuable when it cannot be, with why; Refused for a field;
    QueueFull; StorageQuotaExceeded). Returns ``Stored`` (or the key's ``Replay``)."""

    def store(session: Session) -> Stored:
        parent = jobs.get_job(session, ctx.tenant, job_id)
        refusal = why_not(parent)
        if refusal is not None:
            raise NotContinuable(refusal)
        state = load_checkpoint(session, parent.id)
        if state is None:
            raise NotContinuable(
                "the job kept no state to continue from (it ended before its first "
                "checkpoint); submit it again instead"
            )
        if bool(state["early_stopped"]):
            raise NotContinuable(
                "the job ended by early stopping (options.early_stopping.patience): a longer "
                "job would have stopped there too; submit a new job without it instead"
            )
        done = int(state["epoch"])
        spec = continued_spec(parent.spec, parent.id, done + epochs, max_runtime_seconds)
        check_data_sets(session, ctx.tenant, spec)
        check_limits(ctx, spec, epochs)
        data = sum(b.size for b in blobs.find_blobs(session, parent.id, DATA_KINDS).values())
        model = spec.parameters * np.dtype(spec.options.dtype).itemsize
        needed = data + model * stored_copies(spec.options.optimizer, False)
        check_job_storage(ctx, session, needed, "this one", "its copies of the data and state")
        job = continued.continue_job(
            session, ctx.db, tenant=ctx.tenant, parent_id=parent.id, spec=spec, epoch=done,
            name=name if name is not None else parent.name,
            labels=labels if labels is not None else dict(parent.labels),
            max_queued=ctx.settings.max_queued_jobs_per_tenant,
        )  # fmt: skip
        return Stored(job.id, answer(session, job), job.id)

    try:
        stored = once(ctx, idem, store)
    except continued.ParentGone:
        raise jobs.JobNotFound(job_id) from None
    except IntegrityError:  # a data set deleted between the check and the insert
        raise NotContinuable("a data set the job trained on was just deleted") from None
    if isinstance(stored, Stored):
        dispatch(ctx, stored.id)
    return stored


def why_not(job: Job) -> str | None:
    """Why the job cannot be continued, or None: it must have ended well enough to carry on
    from (succeeded, stopped early, cancelled, or out of time)."""
    if job.status == SUCCEEDED or job.status == CANCELLED:
        return None
    if job.status == FAILED and job.error_type == "timeout":
        return None
    if job.status == FAILED:
        return f"the job failed ({job.error_type}); only a job that trained well carries on"
    return f"the job is {job.status}; a job is continued once it has ended"


def check_data_sets(session: Session, tenant: str, spec: JobSpec | None, *more: str) -> None:
    """NotContinuable when a data set the job trains or validates on (or one of ``more``)
    was deleted since."""
    named = (spec.data.dataset_id, spec.val_dataset_id) if spec is not None else ()
    for dataset_id in (*named, *more):
        if dataset_id is None:
            continue
        try:
            datasets.get_dataset(session, tenant, dataset_id)
        except datasets.DatasetNotFound:
            raise NotContinuable(
                f"the data set {dataset_id} it trained on was deleted: submit a new job on "
                "a stored one instead"
            ) from None


def continued_spec(
    spec: JobSpec, parent_id: str, epochs: int, max_runtime_seconds: int | None
) -> JobSpec:
    """The parent's spec as the whole run's: ``epochs`` in all, a cosine schedule's length
    pinned, and a new time limit if one is given."""
    options = spec.options
    schedule = options.schedule
    if schedule and schedule.get("name") == "cosine" and schedule.get("t_max") is None:
        steps = spec.epochs * spec.data.batches if schedule.get("per") == "step" else spec.epochs
        length = max(1, steps - int(schedule.get("warmup", 0)))
        options = replace(options, schedule={**schedule, "t_max": length})
    if max_runtime_seconds is not None:
        options = replace(options, max_runtime_seconds=max_runtime_seconds)
    return replace(spec, epochs=epochs, options=options, continued_from=parent_id, sweep=None)


def check_limits(ctx: Context, spec: JobSpec, more: int) -> None:
    """Refused when the whole run's epochs, its time limit or ``more`` epochs' cost break
    the server's limits."""
    settings = ctx.settings
    if spec.epochs > settings.max_epochs:
        raise Refused(
            ("epochs",),
            f"the whole run would be {spec.epochs} epochs, at most {settings.max_epochs} are "
            "allowed (MAX_EPOCHS)",
            "limit_exceeded",
        )
    runtime = spec.options.max_runtime_seconds
    if runtime is not None and runtime > settings.max_runtime_seconds:
        raise Refused(
            ("max_runtime_seconds",),
            f"at most {settings.max_runtime_seconds} seconds are allowed, got {runtime}",
            "limit_exceeded",
        )
    rows = spec.data.samples + spec.data.validation_samples
    cost = rows * more * spec.parameters
    if cost > settings.max_job_cost:
        raise Refused(
            ("epochs",),
            f"the {more} more epochs cost {cost:.3g} (rows {rows} x epochs {more} x parameters "
            f"{spec.parameters}), over the budget of {settings.max_job_cost:.3g}",
            "budget_exceeded",
        )
