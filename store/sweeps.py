"""The sweep rows: a sweep stored with the sources its trials need, its row lock, its
trials ranked by their objective, cancel, callbacks, removal and the reads of its figures.
The reason to change is what a sweep row holds or how it is read.

A sweep's trials are ordinary job rows (``job.sweep_id``, ``job.trial``) that run on the
ordinary queue, claim and lease machinery; when they are released and with which values,
and whether one that reached a rung continues, is ``store.scheduling``'s.

Whatever changes a sweep takes its row lock first (``lock``: an UPDATE of the row, a row
lock on PostgreSQL, the write lock on SQLite), so decisions and releases of one sweep take
turns across workers on any number of hosts; the lock order is always sweep, then jobs.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass

from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.orm import Session

from backprop.spec import JobSpec
from tuning import replicates

from . import callbacks, jobs, sweep_trials
from .db import Database, lock_rows
from .leases import LeaseLost
from .models import (
    CANCELLED,
    FAILED,
    PAUSED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Dataset,
    IdempotencyRecord,
    Job,
    Sweep,
    SweepDataset,
)
from .paging import Page, page


class SweepNotFound(LookupError):
    pass


class SweepConflict(Exception):
    """The sweep is not in a state that allows the operation (cancel an ended sweep)."""


class SweepEnded(SweepConflict):
    """The sweep already ended: it cannot be cancelled."""


class SweepNotEnded(SweepConflict):
    """The sweep, or trials of it, still run: it cannot be deleted yet."""


class SourceGone(LookupError):
    """A data set or a job the sweep's trials need was deleted while it was being stored."""

    def __init__(self, field: tuple, source_id: str):
        self.field, self.source_id = field, source_id
        super().__init__(f"{'.'.join(field)}: {source_id} is gone")


ACTIVE = (QUEUED, RUNNING)
MAX_BOARD = 200  # leaderboard rows a page shows at most


def add_sweep(
    session: Session,
    db: Database,
    *,
    tenant: str,
    name: str | None,
    labels: dict,
    spec: dict,
    trials: int,
    max_parallel: int,
    dataset_id: str | None,
    val_dataset_id: str | None,
    searched_datasets: list[str] = (),
) -> Sweep:
    """Store a validated sweep, none of its trials released yet, in the caller's transaction.
    ``searched_datasets`` (data.dataset_id's choices) are kept while it runs. Raises
    SourceGone when a data set or an init_from job it needs was deleted since it was
    checked."""
    sources = _sources(spec, dataset_id, val_dataset_id, searched_datasets)
    _hold(session, sources)  # PostgreSQL: share locks before the row that needs them
    now = db.now(session)
    sweep = Sweep(
        id=str(uuid.uuid4()),
        tenant=tenant,
        name=name,
        labels=labels,
        spec=spec,
        status=RUNNING,
        trials=trials,
        max_parallel=max_parallel,
        released=0,
        dataset_id=dataset_id,
        val_dataset_id=val_dataset_id,
        created_at=now,
        updated_at=now,
        callback_state=callbacks.WAITING if spec.get("callback_url") else None,
        callbacks=[],
    )
    session.add(sweep)
    session.flush()
    _hold(session, sources)  # SQLite: checked again under the write lock the insert took
    session.add_all(SweepDataset(sweep_id=sweep.id, dataset_id=d) for d in searched_datasets)
    session.flush()
    return sweep


def _sources(spec: dict, dataset_id, val_dataset_id, searched_datasets) -> list[tuple]:
    """(field, model, id) of every data set and init_from job the trials may need."""
    found = [
        (("base", "data", "dataset_id"), Dataset, dataset_id),
        (("base", "options", "validation", "dataset_id"), Dataset, val_dataset_id),
        (("base", "init_from"), Job, JobSpec.from_json(spec["base"]).init_from),
    ]
    found += [(("search", "data.dataset_id"), Dataset, d) for d in searched_datasets]
    searched_jobs = spec["search"].get("init_from", {}).get("choice", [])
    found += [(("search", "init_from"), Job, job_id) for job_id in searched_jobs]
    return [source for source in found if source[2]]


def _hold(session: Session, sources: list[tuple]) -> None:
    """Share-lock each source row, or raise SourceGone. A delete of a data set or a job
    first locks its row and then looks for running sweeps that need it (``datasets.
    delete_dataset``, ``jobs.delete_job``), so the two take turns: either the delete sees
    this sweep (409), or this sees the row gone (422)."""
    for field, model, source_id in sources:
        held = session.scalar(
            select(model.id).where(model.id == source_id).with_for_update(read=True)
        )
        if held is None:
            raise SourceGone(field, source_id)


def lock(session: Session, db: Database, sweep_id: str) -> Sweep | None:
    """Take the sweep's row lock (see the module docstring) and read it."""
    touched = session.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id)
        .values(updated_at=db.now(session))
        .execution_options(synchronize_session=False)
    ).rowcount
    if not touched:
        return None
    return session.get(Sweep, sweep_id, populate_existing=True)


def get_sweep(session: Session, tenant: str, sweep_id: str) -> Sweep:
    if not jobs.is_row_id(sweep_id):
        raise SweepNotFound(sweep_id)
    sweep = session.get(Sweep, sweep_id)
    if sweep is None or sweep.tenant != tenant:
        raise SweepNotFound(sweep_id)
    return sweep


def trials_of(session: Session, sweep_id: str) -> list[Job]:
    return list(session.scalars(select(Job).where(Job.sweep_id == sweep_id).order_by(Job.trial)))


def other_decisions(session: Session, sweep_id: str, job_id: str) -> list[list[dict]]:
    """The rung decisions recorded on the sweep's other trials, in a fixed order."""
    rows = session.execute(
        select(Job.rungs)
        .where(Job.sweep_id == sweep_id, Job.id != job_id, Job.rungs.is_not(None))
        .order_by(Job.trial)
    ).scalars()
    return [r for r in rows if r]


def record_decisions(session: Session, job_id: str, owner: str, decisions: list[dict]) -> None:
    """The trial's rung decisions, written under its lease (LeaseLost once it is gone)."""
    recorded = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == owner, Job.status == RUNNING)
        .values(rungs=decisions)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not recorded:
        raise LeaseLost(job_id)


# ---------------------------------------------------------------------------------- ranking


def objective(job: Job, metric: str) -> float | None:
    """The trial's objective: the metric of its last finished epoch (its model's)."""
    latest = job.latest_metrics or {}
    value = latest.get(metric)
    return float(value) if value is not None and math.isfinite(value) else None


def best_trial(sweep: Sweep, trials: list[Job]) -> Job | None:
    """The best succeeded trial; with seed replicates, the best replicate of the
    configuration with the best mean (``configurations``)."""
    succeeded = [t for t in trials if t.status == SUCCEEDED]
    if sweep.spec.get("replicates", 1) > 1:
        ranked = configurations(sweep, succeeded)
        if not ranked or ranked[0]["mean"] is None:
            return None
        succeeded = [t for t in succeeded if t.id in ranked[0]["job_ids"]]
    ranked = ranking(sweep, succeeded)
    return ranked[0] if ranked and objective(ranked[0], _metric(sweep)) is not None else None


def configurations(sweep: Sweep, trials: list[Job]) -> list[dict]:
    """A replicated sweep's configurations over these trials, best mean first
    (``tuning.replicates.aggregate``)."""
    metric = _metric(sweep)
    found = [
        replicates.Replicate(t.spec.sweep.configuration, t.id, t.params or {}, objective(t, metric))
        for t in trials
        if t.spec.sweep is not None and t.spec.sweep.configuration is not None
    ]
    return replicates.aggregate(found, sweep.spec["objective"]["goal"])


def _metric(sweep: Sweep) -> str:
    return sweep.spec["objective"]["metric"]


def ranking(sweep: Sweep, trials: list[Job]) -> list[Job]:
    """Best first by the objective; trials without one yet last, by number."""
    metric, goal = _metric(sweep), sweep.spec["objective"]["goal"]

    def key(job: Job):
        value = objective(job, metric)
        if value is None:
            return (1, 0.0, job.trial)
        return (0, -value if goal == "max" else value, job.trial)

    return sorted(trials, key=key)


# ---------------------------------------------------------------------------------- cancel


def cancel_sweep(session: Session, db: Database, tenant: str, sweep_id: str) -> list[str]:
    """Cancel the sweep: queued trials now, running ones at their next mini-batch; finished
    trials stay. Returns the ids of the trials it ended (the queued ones). Raises
    SweepConflict once it ended."""
    get_sweep(session, tenant, sweep_id)
    sweep = lock(session, db, sweep_id)
    if sweep is None:  # deleted by a request that held the lock before this one
        raise SweepNotFound(sweep_id)
    if sweep.status != RUNNING:
        raise SweepEnded(f"the sweep already ended: {sweep.status}")
    now = db.now(session)
    sweep.status, sweep.finished_at = CANCELLED, now
    ended = []
    trials = trials_of(session, sweep_id)
    sweep_trials.end_paused(session, db, trials, "the sweep was cancelled")
    for trial in trials:
        if trial.status in ACTIVE:
            try:
                cancelled = jobs.request_cancel(session, db, tenant, trial.id)
            except jobs.JobConflict:  # it ended meanwhile (its own cancel, its last epoch)
                continue
            if cancelled.status == CANCELLED:
                ended.append(trial.id)
    return ended


# --------------------------------------------------------------------------------- callbacks


def take_due_callbacks(
    session: Session, db: Database, sweep_ids: list[str] | None = None, stale_before=None
) -> list[str]:
    """The ended sweeps (of ``sweep_ids``, or all) whose callback is due, none of whose
    trials still runs (a cancelled sweep's stop at their next mini-batch), now marked
    queued, each once (``store.callbacks.take_due``)."""
    still_running = exists().where(Job.sweep_id == Sweep.id, Job.status.in_(ACTIVE))
    ended = (Sweep.status != RUNNING) & ~still_running
    return callbacks.take_due(session, db, Sweep, ended, sweep_ids, stale_before)


def callback_not_queued(session: Session, sweep_id: str) -> None:
    callbacks.not_queued(session, Sweep, sweep_id)


def record_callback(
    session: Session, db: Database, sweep_id: str, attempt: dict, *, delivered: bool, last: bool
) -> None:
    """One delivery attempt of the sweep's callback; the last one (or a delivery) ends it."""
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        return
    sweep.callbacks = [*(sweep.callbacks or []), attempt]
    callbacks.attempted(session, db, sweep, delivered=delivered, last=last)


def delete_sweep(session: Session, db: Database, tenant: str, sweep_id: str) -> list[str]:
    """Remove an ended sweep with its trials and all they stored (never a data set);
    returns the trials' ids. Raises SweepConflict while it runs."""
    get_sweep(session, tenant, sweep_id)
    sweep = lock(session, db, sweep_id)
    if sweep is None:  # deleted by a request that held the lock before this one
        raise SweepNotFound(sweep_id)
    if sweep.status == RUNNING:
        raise SweepNotEnded("the sweep is running: cancel it first, then delete it")
    trials = trials_of(session, sweep_id)
    active = sum(1 for trial in trials if trial.status in ACTIVE)
    if active:  # a cancelled sweep's running trials stop at their next mini-batch
        raise SweepNotEnded(f"{active} of its trials have not stopped yet: delete it after")
    trial_ids = [trial.id for trial in trials]
    lock_rows(session, Job.status, trial_ids)  # then a sweep submitted from one is seen
    starting = jobs.sweeps_starting_from(session, tenant, trial_ids)
    if starting:
        raise SweepNotEnded(
            f"running sweep {starting[0]} starts its trials from one of this sweep's: "
            "delete it once that sweep ended"
        )
    for trial_id in trial_ids:
        jobs.delete_rows(session, trial_id)
    # a submit's stored answer names the sweep: a retry with its key makes a new one
    for record in session.scalars(
        select(IdempotencyRecord).where(
            IdempotencyRecord.tenant == tenant, IdempotencyRecord.job_id.is_(None)
        )
    ):
        if (record.response or {}).get("id") == sweep_id:
            session.delete(record)
    session.execute(delete(SweepDataset).where(SweepDataset.sweep_id == sweep_id))
    session.delete(sweep)
    return trial_ids


# ---------------------------------------------------------------------------------- reads


def counts(session: Session, sweep: Sweep) -> dict[str, int]:
    rows = session.execute(
        select(Job.status, func.count()).where(Job.sweep_id == sweep.id).group_by(Job.status)
    ).all()
    found = {status: 0 for status in (QUEUED, RUNNING, PAUSED, SUCCEEDED, FAILED, CANCELLED)}
    found.update({status: int(n) for status, n in rows})
    found["pending"] = _pending(sweep)
    return found


@dataclass(frozen=True)
class Figures:
    """What a sweep's summary shows of its trials, counted in the database."""

    counts: dict[str, int]  # trials by status, and pending (not released yet)
    epochs_run: int
    epochs_full: int
    best: Job | None


def figures(session: Session, found: list[Sweep]) -> dict[str, Figures]:
    """``Figures`` of each of these sweeps, in two queries whatever their trials: counts and
    epoch sums grouped in SQL, and the best trials (``best_job_id``) by id."""
    ids = [sweep.id for sweep in found]
    rows = session.execute(
        select(Job.sweep_id, Job.status, func.count(), func.sum(Job.epoch), func.sum(Job.epochs))
        .where(Job.sweep_id.in_(ids))
        .group_by(Job.sweep_id, Job.status)
    ).all()
    best_ids = [sweep.best_job_id for sweep in found if sweep.best_job_id]
    best = {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(best_ids)))}
    out = {}
    for sweep in found:
        mine = [row for row in rows if row[0] == sweep.id]
        found_counts = {
            status: 0 for status in (QUEUED, RUNNING, PAUSED, SUCCEEDED, FAILED, CANCELLED)
        }
        found_counts.update({status: int(n) for _, status, n, _, _ in mine})
        found_counts["pending"] = _pending(sweep)
        out[sweep.id] = Figures(
            found_counts,
            sum(int(run or 0) for *_, run, _ in mine),
            sum(int(full or 0) for *_, full in mine),
            best.get(sweep.best_job_id),
        )
    return out


def _pending(sweep: Sweep) -> int:
    return max(sweep.trials - sweep.released, 0) if sweep.status == RUNNING else 0


def list_sweeps(
    session: Session, tenant: str, *, limit: int = 50, cursor: str | None = None
) -> Page:
    """The tenant's sweeps, newest first, a page at a time (``store.paging``)."""
    return page(session, select(Sweep).where(Sweep.tenant == tenant), Sweep, limit, cursor)
