"""Continue a sweep: resume it after a cancel with the same configurations, re-run its failed
trials, add trials (the seed's sequence goes on), and extend its best trials by more epochs.
The reason to change is what continuing a sweep does to it.

Every trial that comes back continues exactly: a cancelled one from its final state, an
ASHA-paused one once promoted, an extension as a continued job (``service.continuation``).
The trials come back *held* (``store.sweep_trials``) and the sweep releases them into
``max_parallel`` as it releases new ones, so continuing never runs more at once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from backprop.spec import JobSpec, SweepTrial, stored_copies
from store import blobs, callbacks, continued, jobs, scheduling, sweep_trials, sweeps
from store.job_data import DATA_KINDS, load_checkpoint
from store.models import RUNNING, SUCCEEDED, Sweep

from .context import Context
from .continuation import check_data_sets, check_limits, continued_spec
from .errors import NotContinuable, Refused
from .jobs import check_job_storage, dispatch


@dataclass(frozen=True)
class SweepMore:
    """What a continued sweep does besides resuming its cancelled trials."""

    add_trials: int = 0
    rerun_failed: bool = False
    extend_top: int = 0
    extend_epochs: int = 0


def continue_sweep(ctx: Context, sweep_id: str, more: SweepMore) -> None:
    """Continue the tenant's sweep in one transaction, then send the released trials'
    messages (SweepNotFound; NotContinuable when nothing would change; Refused, QueueFull,
    StorageQuotaExceeded)."""
    try:
        released = _continue(ctx, sweep_id, more)
    except IntegrityError:  # a data set deleted between the check and the insert
        raise NotContinuable("a data set the sweep trains on was just deleted") from None
    for job_id in released:
        dispatch(ctx, job_id)


def _continue(ctx: Context, sweep_id: str, more: SweepMore) -> list[str]:
    with ctx.db.session() as session:
        sweeps.get_sweep(session, ctx.tenant, sweep_id)
        sweep = sweeps.lock(session, ctx.db, sweep_id)
        if sweep is None:
            raise sweeps.SweepNotFound(sweep_id)
        check_data_sets(session, ctx.tenant, JobSpec.from_json(sweep.spec["base"]))
        for dataset_id in sweep.spec.get("datasets", {}):
            check_data_sets(session, ctx.tenant, None, dataset_id)
        trials = sweeps.trials_of(session, sweep_id)
        came_back = sweep_trials.wait_again(session, ctx.db, trials, rerun_failed=more.rerun_failed)
        extended = _extend(ctx, session, sweep, trials, more) if more.extend_top else 0
        if more.add_trials and sweep.spec["method"] == "grid":
            message = f"a grid sweep runs its {sweep.trials} points once; they are all made"
            raise Refused(("add_trials",), message, "sweep")
        if more.add_trials:
            trial_bytes = sweep_trials.largest_trial_bytes(session, sweep_id)
            what = f"{more.add_trials} more trials"
            check_job_storage(ctx, session, more.add_trials * trial_bytes, what, "as the largest")
            sweep.trials += more.add_trials
        if not (came_back or extended or more.add_trials):
            raise NotContinuable(
                f"the sweep is {sweep.status}, with no cancelled trial to resume"
                + ("" if more.rerun_failed else " (rerun_failed re-runs failed ones)")
                + ": add_trials or extend give it more to do"
            )
        _reopen(ctx, session, sweep)
        released = scheduling.advance(session, ctx.db, sweep)
        jobs.check_queue_quota(
            session, ctx.db, ctx.tenant, ctx.settings.max_queued_jobs_per_tenant,
            stored=len(released),
        )  # fmt: skip
    return released


def _reopen(ctx: Context, session: Session, sweep: Sweep) -> None:
    if sweep.status == RUNNING:
        return
    sweep.status, sweep.finished_at, sweep.updated_at = RUNNING, None, ctx.db.now(session)
    if sweep.spec.get("callback_url"):  # its end is delivered again
        sweep.callback_state, sweep.callback_at = callbacks.WAITING, None


def _extend(ctx: Context, session: Session, sweep: Sweep, trials, more: SweepMore) -> int:
    """The best ``extend_top`` succeeded trials, each continued by ``extend_epochs`` as a new
    trial of the sweep (held): its model and metrics are those of the same configuration
    trained for all its epochs at once."""
    best = sweeps.ranking(sweep, [t for t in trials if t.status == SUCCEEDED])
    metric = sweep.spec["objective"]["metric"]
    chosen = [t for t in best if sweeps.objective(t, metric) is not None][: more.extend_top]
    made = 0
    for parent in chosen:
        state = load_checkpoint(session, parent.id)
        if state is None or bool(state["early_stopped"]):
            continue  # no final state (stored before they were kept), or early stopping's end
        done = int(state["epoch"])
        spec = continued_spec(parent.spec, parent.id, done + more.extend_epochs, None)
        check_data_sets(session, ctx.tenant, spec)
        check_limits(ctx, spec, more.extend_epochs)
        number = sweep.released + 1
        trial = SweepTrial(id=sweep.id, trial=number, objective=sweep.spec["objective"])
        spec = replace(spec, sweep=trial)
        data = sum(b.size for b in blobs.find_blobs(session, parent.id, DATA_KINDS).values())
        model = spec.parameters * np.dtype(spec.options.dtype).itemsize
        needed = data + model * stored_copies(spec.options.optimizer, False)
        check_job_storage(ctx, session, needed, f"extending trial {parent.trial}", "its copies")
        job = continued.continue_job(
            session, ctx.db, tenant=ctx.tenant, parent_id=parent.id, spec=spec, epoch=done,
            name=f"{sweep.name or 'sweep'} #{number} (trial {parent.trial} extended)"[:200],
            labels=dict(parent.labels), params=parent.params, held=True,
        )  # fmt: skip
        trials.append(job)
        sweep.trials += 1
        sweep.released += 1
        made += 1
    return made
