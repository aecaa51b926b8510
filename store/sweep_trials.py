"""A sweep's trials between runs: paused at an ASHA rung, held for their sweep to run them
again (a resumed sweep's cancelled trials, a re-run's failed ones, extensions), and how they
end or come back. The reason to change is how a trial waits for its sweep.

A trial waits as ``paused`` in two ways. ASHA's pause (its last rung decision is "pause",
not promoted yet) waits for a promotion (``store.scheduling``); any other paused trial is
*held*: its sweep releases it into a free place (max_parallel) before new trials, and it
continues from its final state, or starts afresh once re-run.
"""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from . import blobs, jobs
from .db import Database
from .models import CANCELLED, FAILED, PAUSED, QUEUED, SUCCEEDED, Blob, EpochMetric, Job


def asha_paused(job: Job) -> bool:
    """Stopped at its last rung by ASHA with promotions, and not promoted since."""
    last = (job.rungs or [None])[-1]
    return bool(last) and last["decision"] == "pause" and not last.get("promoted")


def held(job: Job) -> bool:
    return job.status == PAUSED and not asha_paused(job)


def end_paused(session: Session, db: Database, trials: list[Job], why: str) -> None:
    """Waiting trials end with their sweep: ASHA's paused ones as its stopped ones do
    (succeeded, stopped early, with the model of their pause), held ones cancelled."""
    now = db.now(session)
    for trial in trials:
        if trial.status != PAUSED:
            continue
        trial.finished_at, trial.updated_at = trial.finished_at or now, now
        if held(trial):
            trial.status = CANCELLED
            jobs.add_event(session, trial.id, CANCELLED, f"held for its sweep, and {why}", at=now)
            continue
        trial.status, trial.stopped_early = SUCCEEDED, True
        last = trial.rungs[-1]
        message = f"{trial.epoch} epochs: paused at rung {last['rung']} and {why}; stopped early"
        jobs.add_event(session, trial.id, SUCCEEDED, message, at=now)


def wait_again(session: Session, db: Database, trials: list[Job], *, rerun_failed: bool) -> list:
    """A continued sweep's ended trials made to wait again: ASHA's paused ones ended with the
    sweep pause again (more results may promote them), cancelled ones are held (to continue
    from where they stopped), and with ``rerun_failed`` failed ones are reset and held.
    Returns the trials changed."""
    now, changed = db.now(session), []
    for trial in trials:
        if trial.status == SUCCEEDED and trial.stopped_early and asha_paused(trial):
            message = "paused again: its sweep continues"
        elif trial.status == CANCELLED:
            message = "held: its sweep continues, and so does it"
        elif trial.status == FAILED and rerun_failed:
            _reset(session, trial)
            message = "held to be re-run from the start"
        else:
            continue
        trial.status, trial.stopped_early = PAUSED, False
        trial.finished_at, trial.updated_at = None, now
        jobs.add_event(session, trial.id, "paused", message, at=now)
        changed.append(trial)
    return changed


def _reset(session: Session, trial: Job) -> None:
    """A failed trial back to its start: no state, model, metrics or decisions."""
    for kind in ("checkpoint", "model"):
        blobs.delete_blobs(session, trial.id, kind)
    session.execute(delete(EpochMetric).where(EpochMetric.job_id == trial.id))
    trial.epoch, trial.latest_metrics, trial.rungs, trial.runtime_seconds = 0, None, None, 0.0
    trial.error_type = trial.error_message = trial.gradient_check = None


def requeue(session: Session, job: Job, now, why: str) -> None:
    """A waiting trial queued again (a held one released, a paused one promoted), its
    attempts afresh; its sweep sends its message after the commit."""
    job.status, job.finished_at, job.updated_at = QUEUED, None, now
    job.attempts, job.cancel_requested = 0, False
    job.dispatched_at, job.dispatch_count = now, 1
    jobs.add_event(session, job.id, "dispatched", why, at=now)


def largest_trial_bytes(session: Session, sweep_id: str) -> int:
    """What the sweep's largest trial stores (data, state, model): a new trial's estimate."""
    per_trial = (
        select(func.sum(Blob.size).label("size"))
        .join(Job, Job.id == Blob.job_id)
        .where(Job.sweep_id == sweep_id)
        .group_by(Blob.job_id)
        .subquery()
    )
    return int(session.scalar(select(func.coalesce(func.max(per_trial.c.size), 0))) or 0)
