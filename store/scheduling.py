"""A sweep's scheduling: when its trials are released and with which values, ASHA's decision
for a trial at a rung, and what a trial's end moves on. The reason to change is how a sweep
runs its trials.

- ``create_sweep`` stores a sweep and releases its first trials, within the tenant's queued
  jobs limit.
- ``advance`` releases trials while fewer than ``max_parallel`` are queued or running, and
  ends the sweep when every trial has ended. It runs where a trial ends (``end_job``, in the
  worker's transaction that ends the job), at submit, after a cancel, and in the reconciler
  (``advance_running``), so a trial that ends anywhere (a cancel, a lost worker) moves the
  sweep on.
- ``judge`` takes ASHA's decision for a trial at a rung, from the other trials' recorded
  decisions, and records it on the trial.

Both take the sweep's row lock first (``store.sweeps.lock``); the lock order is always
sweep, then jobs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuning import asha, replicates, sampling

from . import jobs, progress, sweep_trials, sweeps
from .db import Database
from .leases import LeaseLost
from .models import FAILED, PAUSED, RUNNING, SUCCEEDED, Job, Sweep
from .sweeps import ACTIVE


def create_sweep(
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
    max_queued: int | None = None,
) -> tuple[Sweep, list[str]]:
    """Store a validated sweep (``store.sweeps.add_sweep``) and release its first trials, in
    the caller's transaction. Returns the sweep and the ids of the trial jobs to dispatch
    after the commit. With ``max_queued``, raises ``QueueFull`` (and the caller's
    transaction rolls back) when those trials would take the tenant past that many queued
    jobs, counted in the same turn as every job submit's (``jobs.check_queue_quota``)."""
    sweep = sweeps.add_sweep(
        session, db, tenant=tenant, name=name, labels=labels, spec=spec, trials=trials,
        max_parallel=max_parallel, dataset_id=dataset_id, val_dataset_id=val_dataset_id,
        searched_datasets=searched_datasets,
    )  # fmt: skip
    released = advance(session, db, sweep)
    if max_queued is not None:
        jobs.check_queue_quota(session, db, tenant, max_queued, stored=len(released))
    return sweep, released


# ---------------------------------------------------------------------------------- release


def advance(session: Session, db: Database, sweep: Sweep) -> list[str]:
    """Release trials up to max_parallel active ones; end the sweep once all have ended.
    The caller holds the sweep's lock (or just created it). Returns the new jobs' ids.

    ``sweep.best_job_id`` is kept here, whenever a trial ends, a stopped sweep's included
    (a running trial may still succeed): the sweeps' list reads it instead of the trials."""
    trials = sweeps.trials_of(session, sweep.id)
    best = sweeps.best_trial(sweep, trials)
    sweep.best_job_id = best.id if best else None
    if sweep.status != RUNNING:
        return []
    active = sum(1 for t in trials if t.status in ACTIVE)
    released = []
    # held trials first (a continued sweep's), then promotions, as ASHA gives a free worker
    # to a paused trial before a new one
    now = db.now(session)
    for job in [t for t in trials if sweep_trials.held(t)][: max(0, sweep.max_parallel - active)]:
        sweep_trials.requeue(session, job, now, "released by its sweep")
        released.append(job.id)
        active += 1
    for job in _promotions(session, sweep, trials, sweep.max_parallel - active, now):
        released.append(job.id)
        active += 1
    while sweep.released < sweep.trials and active < sweep.max_parallel:
        job = _release(session, db, sweep, sweep.released + 1, trials)
        trials.append(job)
        sweep.released += 1
        active += 1
        released.append(job.id)
    best = sweeps.best_trial(sweep, trials)
    sweep.best_job_id = best.id if best else None
    if sweep.released >= sweep.trials and active == 0:
        sweep_trials.end_paused(session, db, trials, "not promoted by the sweep's end")
        sweep.status = SUCCEEDED if any(t.status == SUCCEEDED for t in trials) else FAILED
        sweep.finished_at = db.now(session)
    sweep.updated_at = db.now(session)
    return released


def _promotions(session: Session, sweep: Sweep, trials: list[Job], free: int, now) -> list[Job]:
    """Up to ``free`` paused trials promoted (queued again, to continue from their pause),
    from the highest rung down, best first (``tuning.asha.promotable``); each promotion is
    recorded on its rung's decision with the figures behind it."""
    config = sweep.spec.get("early_stopping") or {}
    if free <= 0 or not config.get("promotions"):
        return []
    by_rung: dict[int, list] = {}
    for trial in trials:
        decisions = trial.rungs or []
        waiting = sweep_trials.asha_paused(trial) and trial.status == PAUSED
        for i, d in enumerate(decisions):
            paused = waiting and i == len(decisions) - 1
            by_rung.setdefault(d["rung"], []).append((trial, d["value"], paused))
    promoted = []
    goal = sweep.spec["objective"]["goal"]
    for rung in sorted(by_rung, reverse=True):
        records = [(t.id, value, paused) for t, value, paused in by_rung[rung]]
        found = {t.id: t for t, _, _ in by_rung[rung]}
        for job_id, figures in asha.promotable(records, config["reduction_factor"], goal):
            if len(promoted) == free:
                return promoted
            _promote(session, found[job_id], figures, now)
            promoted.append(found[job_id])
    return promoted


def _promote(session: Session, job: Job, figures: dict, now) -> None:
    *earlier, last = job.rungs
    job.rungs = [*earlier, {**last, "promoted": {"at": now.isoformat(), **figures}}]
    job.stopped_early = False
    cutoff = "none" if figures["cutoff"] is None else f"{figures['cutoff']:.4g}"
    message = (
        f"rung {last['rung']} (epoch {last['epoch']}): {figures['value']:.4g} is now among "
        f"the best {figures['keep']} of {figures['competitors']} (cutoff {cutoff}); it "
        "continues from its pause"
    )
    jobs.add_event(session, job.id, "promoted", message, at=now)
    sweep_trials.requeue(session, job, now, "promoted")


def _release(session: Session, db: Database, sweep: Sweep, number: int, trials) -> Job:
    # extensions (continued trials) take numbers but not draws: the sequence goes on
    draw = 1 + sum(1 for t in trials if t.spec.continued_from is None)
    k = sweep.spec.get("replicates", 1)
    configuration, replicate = replicates.place(draw, k)
    if replicate:  # the configuration's values again, with a seed of its own
        trial = _replicate(sweep, trials, number, configuration, replicate)
    else:
        trial = sampling.next_trial(
            sweep.spec,
            number,
            sweep_id=sweep.id,
            trials=sweep.trials,
            past=[_past(t, sweep.spec) for t in trials],
            draw=configuration,
        )
        if k > 1:
            of = replace(trial.spec.sweep, configuration=configuration, replicate=0)
            trial = sampling.Trial(trial.params, replace(trial.spec, sweep=of))
    name = f"{sweep.name or 'sweep'} #{number}"
    job = jobs.create_job(
        session,
        db,
        tenant=sweep.tenant,
        spec=trial.spec,
        arrays={},
        name=name[:200],
        labels=dict(sweep.labels),
        chunk_bytes=2**20,
        dispatching=True,
        params=trial.params,
    )
    jobs.add_event(session, job.id, "sweep", f"trial {number} of sweep {sweep.id}")
    return job


def _replicate(sweep: Sweep, trials, number: int, configuration: int, replicate: int):
    """Replicate ``replicate`` of a configuration whose replicate 0 was released before."""
    first = next(
        t
        for t in trials
        if t.spec.sweep
        and t.spec.sweep.configuration == configuration
        and t.spec.sweep.replicate == 0
    )
    of = replace(first.spec.sweep, trial=number, replicate=replicate)
    seed = sampling.derived_seed(first.spec.seed, replicate)
    return sampling.Trial(dict(first.params or {}), replace(first.spec, seed=seed, sweep=of))


def _past(job: Job, spec: dict) -> sampling.Past:
    metric = spec["objective"]["metric"]
    steps = {d["epoch"]: d["value"] for d in job.rungs or [] if d["value"] is not None}
    if job.status in ACTIVE:
        state = "running"
    elif job.status == PAUSED:
        state = "pruned"
    elif job.status == SUCCEEDED:
        state = "pruned" if job.stopped_early else "complete"
    else:
        state = "failed"
    return sampling.Past(job.params or {}, state, sweeps.objective(job, metric), steps)


def advance_running(session: Session, db: Database) -> list[str]:
    """Every running sweep moved on (the reconciler's round): trials that ended outside a
    worker (cancelled while queued, a lost worker's cancel) release the next ones."""
    released = []
    for sweep_id in session.scalars(select(Sweep.id).where(Sweep.status == RUNNING)):
        sweep = sweeps.lock(session, db, sweep_id)
        if sweep is not None:
            released += advance(session, db, sweep)
    return released


def advance_one(session: Session, db: Database, sweep_id: str) -> list[str]:
    sweep = sweeps.lock(session, db, sweep_id)
    return advance(session, db, sweep) if sweep is not None else []


# ---------------------------------------------------------------------------------- trials


def end_job(
    session: Session, db: Database, job_id: str, owner: str, *, sweep_id: str | None, **finish
) -> Ended:
    """``store.progress.finish``, and for a trial (``sweep_id``) the sweep moved on in the same
    transaction (the sweep's lock first): the trial's end and the next release commit
    together."""
    sweep = sweeps.lock(session, db, sweep_id) if sweep_id else None
    offer = progress.finish(session, db, job_id, owner, **finish)
    released = advance(session, db, sweep) if sweep is not None else []
    return Ended(offer, released)


@dataclass(frozen=True)
class Ended:
    offer: str | None  # the tenant's next job waiting without a task message
    released: list[str]  # trials released by this ending: to dispatch


def judge(session: Session, db: Database, job_id: str, owner: str, epoch: int, value) -> dict:
    """ASHA's decision for the trial at this rung epoch, recorded on it (see the module
    docstring). A trial resumed after a lost worker reaches the rung again and gets the
    decision it was given then.

    The decision is worked out before the sweep's lock is taken, and again under it only if
    another trial recorded a decision in between: the lock is held for a read and a write,
    not for Optuna's work, so trials of one sweep on many workers seldom wait for it."""
    job = session.get(Job, job_id)
    if job is None or job.lease_owner != owner:
        raise LeaseLost(job_id)
    own = list(job.rungs or [])
    for decision in own:
        if decision["epoch"] == epoch:
            return decision
    spec = session.get(Sweep, job.sweep_id).spec  # fixed at submit: no lock needed
    seen = sweeps.other_decisions(session, job.sweep_id, job_id)
    decision = _decide(spec, epoch, value, own, seen)
    sweeps.lock(session, db, job.sweep_id)
    now_seen = sweeps.other_decisions(session, job.sweep_id, job_id)
    if now_seen != seen:  # another trial was judged meanwhile: decide with it
        decision = _decide(spec, epoch, value, own, now_seen)
    sweeps.record_decisions(session, job_id, owner, own + [decision])
    metric = spec["objective"]["metric"]
    shown = "none" if decision["value"] is None else f"{decision['value']:.4g}"
    cutoff = "none" if decision["cutoff"] is None else f"{decision['cutoff']:.4g}"
    jobs.add_event(
        session, job_id, "rung",
        f"rung {decision['rung']} (epoch {epoch}): {metric} {shown}, the best "
        f"{decision['keep']} of {decision['competitors']} continue (cutoff {cutoff}): "
        f"{decision['decision']}", at=db.now(session),
    )  # fmt: skip
    return decision


def _decide(spec: dict, epoch: int, value, own: list[dict], others: list[list[dict]]) -> dict:
    config = spec["early_stopping"]
    rung = len(own)
    return asha.decision(
        epoch=epoch,
        value=value,
        own=own,
        # only the trials that reached this rung compete at it
        others=[r for r in others if any(d["rung"] == rung for d in r)],
        min_epochs=config["min_epochs"],
        factor=config["reduction_factor"],
        goal=spec["objective"]["goal"],
        promotions=bool(config.get("promotions")),
    )
