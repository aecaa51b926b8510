"""A tenant's sweeps: submit, stop and delete. The reason to change is what one of these does
to the stored state, in which transaction, and which messages follow."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store import scheduling, sweeps
from store.idempotency import Replay
from store.models import Sweep

from . import callbacks
from .context import Context, Idempotency
from .errors import Refused
from .idempotent import Stored, once
from .jobs import check_callback_url, check_job_storage, data_sets_gone, dispatch, find_dataset


def submit_sweep(
    ctx: Context,
    prepared,
    *,
    name: str | None,
    labels: dict,
    max_parallel: int,
    callback_url: str | None,
    base_callback_url: str | None,
    idem: Idempotency | None,
    answer: Callable[[Session, Sweep], Any],
) -> Stored | Replay:
    """Store the sweep and its first ``max_parallel`` trials in one transaction (the queue
    quota and the storage quota counted, the key's answer remembered), then send the
    trials' messages. ``prepared`` is the checked request (``api.sweep_validation``).
    Raises Refused, QueueFull, StorageQuotaExceeded; a failure stores nothing."""
    check_callback_url(ctx, ("base", "callback_url"), base_callback_url)
    check_callback_url(ctx, ("callback_url",), callback_url)
    if callback_url:
        prepared.spec["callback_url"] = callback_url
    released: list[str] = []

    def store(session: Session) -> Stored:
        check_job_storage(
            ctx,
            session,
            prepared.trials * prepared.trial_bytes,
            f"this sweep's {prepared.trials} trials",
            "each trial's model, checkpoint and optimizer state, as large as the space allows",
        )
        sweep, first = scheduling.create_sweep(
            session,
            ctx.db,
            tenant=ctx.tenant,
            name=name,
            labels=labels,
            spec=prepared.spec,
            trials=prepared.trials,
            max_parallel=max_parallel,
            dataset_id=prepared.base.spec.data.dataset_id,
            val_dataset_id=prepared.base.spec.val_dataset_id,
            searched_datasets=prepared.searched_datasets,
            max_queued=ctx.settings.max_queued_jobs_per_tenant,  # counted with the job submits'
        )
        released[:] = first
        return Stored(sweep.id, answer(session, sweep), None)

    try:
        stored = once(ctx, idem, store)
    except sweeps.SourceGone as exc:  # deleted between the check and the insert
        kind = "init_from" if exc.field[-1] == "init_from" else "dataset_not_found"
        raise Refused(exc.field, f"{exc.source_id!r} was just deleted", kind) from None
    except IntegrityError:
        data_sets_gone(ctx, prepared.base.spec, ("base",))  # deleted between check and insert
        for dataset_id in prepared.searched_datasets:
            if find_dataset(ctx, dataset_id) is None:
                message = f"no data set {dataset_id!r} for this tenant (it was just deleted)"
                raise Refused(("search", "data.dataset_id"), message, "dataset_not_found") from None
        raise
    if isinstance(stored, Stored):
        for job_id in released:
            dispatch(ctx, job_id)
    return stored


def stop_sweep(ctx: Context, sweep_id: str) -> None:
    """Cancel the tenant's sweep (SweepNotFound, or SweepConflict once it ended): queued
    trials at once, running ones at their next mini-batch; then queue the callbacks of the
    trials that ended here and the sweep's own, if none of its trials still runs."""
    with ctx.db.session() as session:
        ended = sweeps.cancel_sweep(session, ctx.db, ctx.tenant, sweep_id)
    callbacks.ended_here(ctx.db, ctx.dispatcher, job_ids=ended, sweep_ids=[sweep_id])


def remove_sweep(ctx: Context, sweep_id: str) -> list[str]:
    """Delete the tenant's ended sweep with its trials (SweepNotFound, or SweepConflict
    with why it stays); returns the trials' ids."""
    with ctx.db.session() as session:
        return sweeps.delete_sweep(session, ctx.db, ctx.tenant, sweep_id)
