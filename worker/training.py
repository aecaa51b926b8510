"""One training attempt: claim, load, resume, train with core, record, end.

The Celery task is a one-line call into ``run_job``. Nothing here does math (that is core's)
or SQL (that is the store's): this module connects them and turns core's callbacks into
progress, metrics, checkpoints, cancellation and time limits. The reason to change is the
course of an attempt. How a spec becomes a trainer: ``worker.setup``; the lease's heartbeat
and the retried database calls: ``worker.lease``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded

from backprop.settings import Settings
from core import (
    COMPLETED,
    EARLY_STOPPED,
    STOPPED,
    Diverged,
    Trainer,
)
from store import job_data, leases, progress, scheduling
from store.db import Database, is_outage
from store.models import CANCELLED, FAILED, PAUSED, SUCCEEDED
from tuning.asha import rungs

from . import metrics as job_metrics
from .lease import LeaseKeeper, Store
from .setup import build_trainer, check_gradients

log = logging.getLogger("backprop.worker")


@dataclass
class Outcome:
    status: str  # succeeded, failed, cancelled, paused, skipped, lost
    detail: str = ""
    offer: str | None = None  # the tenant's next job waiting without a task message
    callback: bool = False  # it ended and has a callback_url to deliver to
    released: list[str] = field(default_factory=list)  # a sweep's next trials, to dispatch
    sweep_id: str | None = None  # a trial's sweep, which its end may have ended


class JobRun:
    """Core's callbacks for one attempt: progress, checkpoints, cancel and time limit.

    Writes go in proportion to what is worth keeping, not to the epochs: finished epochs'
    metrics are buffered and written with the progress every METRICS_FLUSH_SECONDS, a
    checkpoint (with every buffered row) is taken every CHECKPOINT_SECONDS, inside an epoch
    too, and the end writes the rest with the outcome in one transaction. A poller's view
    lags training by at most the flush interval; a resume redoes at most the checkpoint
    interval's work, recomputing the rows past the checkpoint bit for bit.
    """

    def __init__(
        self,
        store: Store,
        job,
        owner: str,
        worker: str,
        trainer: Trainer,
        lease: LeaseKeeper,
        notify: Callable[[str], None],
        resumed: bool = False,
    ):
        self.store, self.job_id, self.owner, self.worker = store, job.id, owner, worker
        self.sweep_id = job.sweep_id
        self.trainer, self.lease, self.notify = trainer, lease, notify
        self.settings = store.settings
        # the job's own limit, but never beyond the service's (an operator may have lowered it)
        asked = job.spec.options.max_runtime_seconds or self.settings.max_runtime_seconds
        self.max_runtime = min(asked, self.settings.max_runtime_seconds)
        self.previous_runtime = job.runtime_seconds
        self.started = self.last_flush = self.last_checkpoint = time.monotonic()
        self.pending: list[dict] = []  # finished epochs' metrics not yet written
        # whether the job may have a checkpoint stored: it resumed from one, or this run
        # began writing one (set before the write, so a retried write counts too)
        self.checkpointed = resumed
        self.stop_reason: str | None = None
        self.released: list[str] = []  # trials released when this one ended
        # a sweep's trial under ASHA: judged at the end of each rung epoch
        trial = job.spec.sweep
        asha = trial and trial.early_stopping
        self.metric = trial.objective.get("metric") if trial else None
        self.rungs = set()
        if asha:
            self.rungs = set(rungs(asha["min_epochs"], asha["reduction_factor"], job.epochs))

    def runtime(self) -> float:
        return self.previous_runtime + time.monotonic() - self.started

    def on_batch(self, trainer: Trainer) -> bool:
        if self._should_stop():
            return True
        if time.monotonic() - self.last_checkpoint >= self.settings.checkpoint_seconds:
            self.checkpoint()
        return False

    def on_epoch(self, trainer: Trainer, metrics) -> bool:
        self.pending.append(metrics.as_dict())
        if metrics.epoch in self.rungs:
            return self._judge(metrics)
        now = time.monotonic()
        if now - self.last_checkpoint >= self.settings.checkpoint_seconds:
            self.checkpoint()
        elif now - self.last_flush >= self.settings.metrics_flush_seconds:
            self.flush()
        return self._should_stop()

    def flush(self, checkpoint: dict[str, np.ndarray] | None = None) -> None:
        """Write the buffered metrics rows and the progress (and a checkpoint) at once."""
        self.store(
            progress.record_progress,
            self.job_id,
            self.owner,
            metrics=self.pending,
            runtime_seconds=self.runtime(),
            checkpoint=checkpoint,
            chunk_bytes=self.settings.blob_chunk_bytes,
            worker=self.worker,
        )
        self.pending = []
        self.last_flush = time.monotonic()
        self.notify(self.job_id)

    def _judge(self, metrics) -> bool:
        """ASHA at a rung: the epoch's rows are written, then the sweep decides (from the
        database, so trials on any host are compared); True stops the trial here."""
        self.flush()
        value = metrics.as_dict()[self.metric]
        decision = self.store(scheduling.judge, self.job_id, self.owner, metrics.epoch, value)
        if decision["decision"] in ("stop", "pause"):
            self.stop_reason = "pruned" if decision["decision"] == "stop" else "paused"
            self.stopped_at = decision
            return True
        return self._should_stop()

    def checkpoint(self) -> None:
        if not self.trainer.network.parameters_finite():
            return  # diverging inside the epoch: the last good checkpoint stays
        self.checkpointed = True
        self.flush(checkpoint=self.trainer.state_dict())
        self.last_checkpoint = self.last_flush

    def _should_stop(self) -> bool:
        if self.lease.stop_reason is not None:
            self.stop_reason = self.lease.stop_reason
        elif self.runtime() > self.max_runtime:
            self.stop_reason = "timeout"
        return self.stop_reason is not None

    def finish(
        self,
        status: str,
        *,
        error_type=None,
        message="",
        model=None,
        keep_position=False,
        stopped_early=False,
    ) -> str | None:
        """End the job with the buffered rows; ``keep_position`` keeps the final state as
        the checkpoint (what a continued job, a promoted trial or a resumed sweep carries on
        from). Returns the tenant's next waiting job; a sweep's
        next trials are in ``released``."""
        state = None
        if keep_position and self.trainer.network.parameters_finite():
            state = self.trainer.state_dict()
        ended = self.store(
            scheduling.end_job,
            self.job_id,
            self.owner,
            sweep_id=self.sweep_id,
            status=status,
            error_type=error_type,
            message=message,
            model=model,
            metrics=self.pending,
            checkpoint=state,
            runtime_seconds=self.runtime(),
            chunk_bytes=self.settings.blob_chunk_bytes,
            worker=self.worker,
            stopped_early=stopped_early,
            earlier_checkpoint=self.checkpointed,
        )
        self.pending = []
        self.released = ended.released
        job_metrics.ended(status, self.runtime(), self.trainer.epoch)
        self.notify(self.job_id)
        return ended.offer


def run_job(
    job_id: str, *, db: Database, settings: Settings, worker: str, send=None, notify=None
) -> Outcome:
    """Train one job if this worker can claim it; see the module docstring.

    ``send(job_id)`` publishes a training message: when a job ends, the tenant's oldest job
    that waits without a message (held back by the running-jobs limit) is offered at once.
    ``notify(job_id)`` tells pollers that the job changed (``messaging.notify``).
    """
    outcome = _run_job(job_id, db=db, settings=settings, worker=worker, notify=notify)
    if send is not None:
        for next_id in outcome.released + ([outcome.offer] if outcome.offer else []):
            try:
                send(next_id)
            except Exception:  # the reconciler sends it later anyway
                log.warning("job %s: could not send job %s", job_id, next_id, exc_info=True)
    return outcome


@dataclass
class Claimed:
    job: object
    arrays: dict[str, np.ndarray]
    state: dict[str, np.ndarray] | None


def claim(session, db, job_id: str, owner: str, *, settings: Settings, worker: str):
    """The claim alone, in a transaction of its own: the tenant's advisory lock and the job
    row's lock are held for the count and the UPDATE only, never while data loads (a worker
    cut off there would stall every other claim of the tenant)."""
    return leases.claim(
        session,
        db,
        job_id,
        owner,
        lease_seconds=settings.lease_seconds,
        max_attempts=settings.max_attempts,
        worker=worker,
        max_running=settings.max_running_jobs_per_tenant,
    )


def load_claimed(session, db, job, owner: str, *, worker: str) -> Claimed:
    """The claimed job's data and checkpoint, and the resume bookkeeping (under the lease)."""
    arrays, state = job_data.load_data_and_checkpoint(session, job)
    if state is not None:
        epoch, batch = int(state["epoch"]), int(state["batch"])
        where = f"epoch {epoch}" + (f", batch {batch}" if batch else "")
        at = progress.prepare_resume(session, db, job.id, owner, epoch)
        leases.record_event(
            session, job.id, "resumed", f"resumed from the checkpoint at {where}",
            worker=worker, at=at,
        )  # fmt: skip
    return Claimed(job, arrays, state)


def _run_job(job_id: str, *, db: Database, settings: Settings, worker: str, notify) -> Outcome:
    store = Store(db, settings)
    notify = notify or (lambda _job_id: None)
    owner = f"{worker}#{uuid.uuid4().hex[:8]}"
    job = store(claim, job_id, owner, settings=settings, worker=worker)
    if job is None:
        log.info("job %s: not claimable (held, finished or cancelled); message ignored", job_id)
        return Outcome("skipped")
    job_metrics.claimed(job)
    if job.sweep_id:  # a trial's changes are its sweep's too (GET /v1/sweeps/{id}/events)
        notify = _with_sweep(notify, job.sweep_id)
    notify(job_id)
    has_callback = bool(job.spec.callback_url)

    lease = LeaseKeeper(store, job_id, owner)  # renewed while the data loads too
    lease.start()
    try:
        claimed = store(load_claimed, job, owner, worker=worker)
        trainer = build_trainer(job.spec, claimed.arrays)
        if claimed.state is not None:
            trainer.load_state_dict(claimed.state)
        verify = job.spec.options.verify_gradients
        if verify and claimed.state is None:  # a resumed job checked before it first trained
            check_gradients(store, job, owner, trainer, claimed.arrays, "before", notify)
        resumed = claimed.state is not None
        run = JobRun(store, job, owner, worker, trainer, lease, notify, resumed)
        check_after = None
        if verify:

            def check_after() -> None:
                check_gradients(store, job, owner, trainer, claimed.arrays, "after", notify)

        outcome = _train(run, trainer, check_after)
        outcome.callback = has_callback and outcome.status in ENDINGS
        outcome.released = run.released
        outcome.sweep_id = job.sweep_id
        return outcome
    except leases.LeaseLost:
        # nothing is written here: the job may have ended elsewhere by now, and its history
        # already tells (lease_expired or worker_lost, then the next claim)
        log.warning("job %s: lease lost; this worker stopped writing", job_id)
        return Outcome("lost")
    except Exception as exc:
        if is_outage(exc):  # the database stayed away: the lease expires, another try resumes
            raise
        # a fault of ours, not of the job's data (which was checked at submit): fail it with
        # a clear type instead of retrying it MAX_ATTEMPTS times; the trace goes to the log
        log.exception("job %s: unexpected error while training", job_id)
        message = f"{type(exc).__name__} in the worker; the operators' log has the details"
        try:
            ended = store(
                scheduling.end_job,
                job_id,
                owner,
                sweep_id=job.sweep_id,
                status=FAILED,
                error_type="internal_error",
                message=message,
                runtime_seconds=job.runtime_seconds,
                worker=worker,
            )
        except leases.LeaseLost:
            return Outcome("lost")
        notify(job_id)
        return Outcome(
            FAILED, "internal_error", ended.offer, has_callback, ended.released, job.sweep_id
        )
    finally:
        lease.stop()


ENDINGS = (SUCCEEDED, FAILED, CANCELLED)


def _with_sweep(notify, sweep_id: str):
    def both(job_id: str) -> None:
        notify(job_id)
        notify(sweep_id)

    return both


def _train(run: JobRun, trainer: Trainer, check_after: Callable | None = None) -> Outcome:
    try:
        ended = trainer.run(on_epoch=run.on_epoch, on_batch=run.on_batch)
    except SoftTimeLimitExceeded:
        # Celery's backstop fired before the job's own limit (time spent loading or waiting
        # for the database counts there): the same ending as the job's own timeout
        run.stop_reason = "timeout"
        ended = STOPPED
    except Diverged as exc:
        # the weights are not finite: keep the last good checkpoint, publish no model
        offer = run.finish(FAILED, error_type="diverged", message=str(exc))
        return Outcome(FAILED, "diverged", offer)

    if ended in (COMPLETED, EARLY_STOPPED):
        if check_after is not None:
            check_after()
        epochs = trainer.epoch
        message = f"{epochs} epochs" + (" (early stopping)" if ended == EARLY_STOPPED else "")
        offer = run.finish(
            SUCCEEDED, message=message, model=trainer.network.to_arrays(), keep_position=True
        )
        return Outcome(SUCCEEDED, offer=offer)
    if run.stop_reason == "lease_lost":
        raise leases.LeaseLost(run.job_id)
    if run.stop_reason == "pruned":  # ASHA: a poor trial ends here, with its model
        decision = run.stopped_at
        offer = run.finish(
            SUCCEEDED,
            message=f"{trainer.epoch} epochs: stopped early at rung {decision['rung']} "
            f"(the best {decision['keep']} of {decision['competitors']} continue)",
            model=trainer.network.to_arrays(),
            stopped_early=True,
            keep_position=True,
        )
        return Outcome(SUCCEEDED, "stopped_early", offer)
    if run.stop_reason == "paused":  # ASHA with promotions: it may be promoted later
        decision = run.stopped_at
        offer = run.finish(
            PAUSED,
            message=f"paused after {trial_epochs(trainer)} at rung {decision['rung']} (the best "
            f"{decision['keep']} of {decision['competitors']} continue); it continues if "
            "promoted",
            model=trainer.network.to_arrays(),
            stopped_early=True,
            keep_position=True,
        )
        return Outcome(PAUSED, offer=offer)
    if run.stop_reason == "cancel":
        offer = run.finish(
            CANCELLED, message=f"cancelled in epoch {trainer.epoch + 1}", keep_position=True
        )
        return Outcome(CANCELLED, offer=offer)
    offer = run.finish(
        FAILED,
        error_type="timeout",
        message=f"stopped after {run.max_runtime} seconds (max_runtime_seconds); "
        f"the checkpoint at epoch {trainer.epoch} is kept",
        keep_position=True,
    )
    return Outcome(FAILED, "timeout", offer)


def trial_epochs(trainer: Trainer) -> str:
    return f"{trainer.epoch} epoch" + ("" if trainer.epoch == 1 else "s")
