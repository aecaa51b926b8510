"""A tenant's jobs: submit, dispatch, cancel and delete. The reason to change is what one of
these does to the stored state, in which transaction, and which messages follow."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from kombu.exceptions import OperationalError as BrokerError
from redis import RedisError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backprop.spec import JobSpec, stored_copies
from backprop.urls import refusal
from store import datasets, jobs, leases, scheduling
from store.idempotency import Replay
from store.models import CANCELLED, SUCCEEDED, Job

from . import callbacks
from .context import Context, Idempotency
from .errors import Refused, StorageQuotaExceeded
from .idempotent import Stored, once

log = logging.getLogger("backprop.service")

#: shapes the stored answer of a cancel or a continue from the job (the caller's view)
Answer = Callable[[Session, Job], Any]
#: shapes the stored answer of a submit from the new job and its history (the caller's view)
Shown = Callable[[Job, list[jobs.Event]], Any]


def submit_job(
    ctx: Context,
    prepared,
    *,
    name: str | None,
    labels: dict,
    callback_url: str | None,
    init_from: str | None,
    idem: Idempotency | None,
    answer: Shown,
) -> Stored | Replay:
    """Store the tenant's job with its data in one transaction (the queue quota counted
    exactly, the key's answer remembered), then send its task message. ``prepared`` is
    the checked request (``api.validation.PreparedJob``); ``answer`` shapes the new job
    and the history stored with it. Raises Refused, QueueFull, StorageQuotaExceeded; a
    failure stores nothing."""
    check_callback_url(ctx, ("callback_url",), callback_url)
    spec = prepared.spec
    if callback_url:
        spec = replace(spec, callback_url=callback_url)
    if init_from:
        why = init_refusal(ctx, init_from, spec.structure)
        if why is not None:
            raise Refused(("init_from",), why, "init_from")
        spec = replace(spec, init_from=init_from)

    def store(session: Session) -> Stored:
        model = spec.parameters * np.dtype(spec.options.dtype).itemsize
        data = sum(array.nbytes for array in prepared.arrays.values())
        needed = data + model * stored_copies(spec.options.optimizer, bool(init_from))
        made_of = "its data, model and checkpoint with its optimizer's state"
        job, history = jobs.add_job(
            session,
            ctx.db,
            tenant=ctx.tenant,
            spec=spec,
            arrays=prepared.arrays,
            name=name,
            labels=labels,
            chunk_bytes=ctx.settings.blob_chunk_bytes,
            max_queued=ctx.settings.max_queued_jobs_per_tenant,
            dispatching=True,  # init_from's weights are copied inside the database
            storage=lambda used: check_storage(ctx, used, needed, "this one", made_of),
        )
        return Stored(job.id, answer(job, history), job.id, at=job.created_at)

    try:
        stored = once(ctx, idem, store)
    except jobs.InitSourceGone:  # deleted between the check and the copy
        raise Refused(("init_from",), f"{init_from!r} was just deleted", "init_from") from None
    except IntegrityError:
        data_sets_gone(ctx, spec)  # deleted between the check and the insert
        raise
    if isinstance(stored, Stored):
        dispatch(ctx, stored.id)
    return stored


def check_callback_url(ctx: Context, loc: tuple, url: str | None) -> None:
    why = refusal(url, ctx.settings.callback_allow_private_networks) if url else None
    if why is not None:
        raise Refused(loc, why, "callback_url")


def check_job_storage(ctx: Context, session: Session, needed: int, what: str, made_of: str):
    """StorageQuotaExceeded unless ``needed`` more bytes fit in what the tenant's jobs may
    store (MAX_JOB_STORAGE_BYTES)."""
    check_storage(ctx, jobs.job_bytes(session, ctx.tenant), needed, what, made_of)


def check_storage(ctx: Context, used: int, needed: int, what: str, made_of: str) -> None:
    """StorageQuotaExceeded unless ``needed`` more bytes fit beside the ``used`` ones."""
    limit = ctx.settings.max_job_storage_bytes
    if used + needed > limit:
        raise StorageQuotaExceeded(used, needed, limit, what, made_of)


def data_sets_gone(ctx: Context, spec: JobSpec, where: tuple = ()) -> None:
    """Refused when a data set the job's spec names no longer exists (``where``: the job's
    place in the request, ``("base",)`` for a sweep's)."""
    for loc, dataset_id in (
        ((*where, "data", "dataset_id"), spec.data.dataset_id),
        ((*where, "options", "validation", "dataset_id"), spec.val_dataset_id),
    ):
        if dataset_id and find_dataset(ctx, dataset_id) is None:
            message = f"no data set {dataset_id!r} for this tenant (it was just deleted)"
            raise Refused(loc, message, "dataset_not_found")


def find_dataset(ctx: Context, dataset_id: str):
    """The tenant's stored data set (its metadata, detached), or None."""
    with ctx.db.reading() as session:
        try:
            return datasets.get_dataset(session, ctx.tenant, dataset_id)
        except datasets.DatasetNotFound:
            return None


def init_refusal(ctx: Context, source_id: str, structure: Sequence[int]) -> str | None:
    """Why a job of this structure may not start from that job's weights, or None."""
    structure = list(structure)
    with ctx.db.reading() as session:
        try:
            source = jobs.get_job(session, ctx.tenant, source_id)
        except jobs.JobNotFound:
            return f"no job {source_id!r} for this tenant"
    if source.status != SUCCEEDED:
        return f"the job is {source.status}; only a succeeded job's weights start others"
    if list(source.spec.structure) != structure:
        return (
            f"the job's structure is {list(source.spec.structure)}, this one's {structure}: "
            "weights carry over between equal structures only"
        )
    return None


def dispatch(ctx: Context, job_id: str) -> None:
    """Send the task after the commit (which recorded it as dispatched). A broker outage
    loses nothing: the job is stored and the reconciler sends it once the broker is back."""
    try:
        ctx.dispatcher.send(job_id)
    except (BrokerError, RedisError, OSError) as exc:
        log.warning(
            "job %s: broker unavailable at submit (%s); left to the reconciler", job_id, exc
        )
        with ctx.db.session() as session:
            leases.record_dispatch_failure(session, ctx.db, job_id, type(exc).__name__)


def cancel_job(ctx: Context, job_id: str, answer: Answer):
    """Cancel the tenant's job: a queued one at once, a running one at its next mini-batch
    (JobNotFound, or JobConflict once it ended). A job that ends here, not in a worker, has
    its callback queued here, and a trial's sweep moves on. Returns ``answer``'s shape."""
    with ctx.db.session() as session:
        job = jobs.request_cancel(session, ctx.db, ctx.tenant, job_id)
        shown = answer(session, job)
        status, sweep_id, callback_url = job.status, job.sweep_id, job.spec.callback_url
    if status == CANCELLED and sweep_id:  # a trial ended here: the sweep moves on
        with ctx.db.session() as session:
            released = scheduling.advance_one(session, ctx.db, sweep_id)
        for trial_id in released:
            dispatch(ctx, trial_id)
    if status == CANCELLED:
        callbacks.ended_here(
            ctx.db,
            ctx.dispatcher,
            job_ids=[job_id] if callback_url else [],
            sweep_ids=[sweep_id] if sweep_id else [],
        )
    return shown


def remove_job(ctx: Context, job_id: str) -> None:
    """Delete the tenant's finished job and all it stored (JobNotFound; TrialOfSweep,
    JobInUse or JobConflict with why it stays)."""
    with ctx.db.session() as session:
        jobs.delete_job(session, ctx.tenant, job_id)
