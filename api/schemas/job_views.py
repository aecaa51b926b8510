"""The job as the API shows it: the answers of /v1/jobs and the body of a job's callback.
The reason to change is a field of a job as the API shows it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from .common import Out
from .jobs import EarlyStopping, JobStatus

CallbackState = Literal["waiting", "queued", "delivered", "failed"]


class Progress(Out):
    epoch: int = Field(description="Epochs finished")
    epochs: int


class EpochMetricsOut(Out):
    epoch: int
    cost: float
    accuracy: float | None = None
    val_cost: float | None = None
    val_accuracy: float | None = None
    seconds: float
    learning_rate: float | None = Field(
        None, description="The learning rate of the epoch's last step (after its schedule)"
    )


class JobErrorOut(Out):
    type: str = Field(description="diverged, timeout, attempts_exhausted, invalid_data, ...")
    message: str


class JobEventOut(Out):
    at: datetime
    kind: str
    message: str
    worker: str | None = None


class DataSummary(Out):
    form: Literal["batches", "arrays", "dataset"]
    dataset_id: str | None = Field(None, description="The stored data set it trains on")
    dataset_sha256: str | None = None
    samples: int
    batches: int = Field(description="Mini-batches per epoch")
    batch_size: int | None = None
    shuffle: bool
    validation_samples: int = 0


class OptionsOut(Out):
    activation: str
    output_activation: str
    cost: str
    init: str
    l2: float
    dtype: str
    early_stopping: EarlyStopping | None = None
    validation_split: float | None = None
    max_runtime_seconds: int
    verify_gradients: bool = False
    optimizer: dict | None = Field(None, description="As given, with every parameter")
    schedule: dict | None = Field(None, description="As given, with every parameter")
    clip_norm: float | None = None


class CheckOut(Out):
    worst_relative_error: float
    parameters: int = Field(description="Weights and biases checked (drawn at random)")
    samples: int = Field(description="Rows of the sample batch")


class GradientCheckOut(Out):
    """Theory against practice: backprop's gradient against central differences."""

    before: CheckOut | None = None
    after: CheckOut | None = None
    threshold: float = Field(description="Above it, the job carries a warning")
    warning: bool


class JobSummary(Out):
    id: str
    name: str | None = None
    labels: dict[str, str]
    status: JobStatus
    progress: Progress
    structure: list[int]
    learning_rate: float
    seed: int
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime
    error: JobErrorOut | None = None
    metrics: EpochMetricsOut | None = Field(None, description="The latest finished epoch")
    runtime_seconds: float = Field(description="Seconds of training so far, over all attempts")
    sweep_id: str | None = Field(None, description="The sweep this job is a trial of")
    trial: int | None = Field(None, description="Its trial number in the sweep (1, 2, ...)")
    stopped_early: bool = Field(
        False, description="The sweep's early stopping (ASHA) ended it at a rung; its model is kept"
    )
    continued_from: str | None = Field(
        None, description="The job whose final state this one continues (continueJob)"
    )


class CallbackPayload(Out):
    """The body of a job's callback: its final state, POSTed once to ``callback_url``."""

    id: str
    name: str | None = None
    labels: dict[str, str]
    status: Literal["succeeded", "failed", "cancelled"]
    progress: Progress
    metrics: EpochMetricsOut | None = Field(None, description="The last finished epoch")
    error: JobErrorOut | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime
    runtime_seconds: float = Field(description="Seconds of training, over all attempts")
    sweep_id: str | None = Field(None, description="The sweep this job is a trial of")
    trial: int | None = None
    stopped_early: bool = False


class PromotionOut(Out):
    """Why a paused trial was promoted: its rank among the trials that had reached its rung
    by then."""

    at: datetime
    competitors: int
    keep: int
    cutoff: float | None
    better: int
    value: float


class RungOut(Out):
    """ASHA's decision for a trial that reached a rung, with the figures behind it."""

    rung: int = Field(description="0 at min_epochs, k at min_epochs x reduction_factor^k")
    epoch: int
    value: float | None = Field(description="The trial's objective at that epoch")
    competitors: int = Field(description="Trials that had reached this rung, itself included")
    keep: int = Field(description="How many of them continue: max(1, competitors // factor)")
    cutoff: float | None = Field(description="The keep-th best value: continuing needs it")
    better: int | None = Field(description="Competitors with a better value than this trial")
    decision: Literal["continue", "stop", "pause"]
    promoted: PromotionOut | None = Field(None, description="A paused trial's promotion")


class JobOut(JobSummary):
    options: OptionsOut
    data: DataSummary
    attempts: int
    cancel_requested: bool
    callback_url: str | None = Field(None, description="Deliveries are in history (callback)")
    callback_state: CallbackState | None = Field(
        None,
        description="waiting: the job has not ended (or its delivery waits for the broker); "
        "queued: being delivered; delivered: a 2xx came back; failed: WEBHOOK_ATTEMPTS "
        "attempts got none. None without callback_url (or for a job stored before "
        "callbacks were kept on the job)",
    )
    gradient_check: GradientCheckOut | None = None
    params: dict[str, Any] | None = Field(None, description="A trial's searched values, by path")
    rungs: list[RungOut] | None = Field(None, description="A trial's ASHA decisions")
    history: list[JobEventOut]


class JobList(Out):
    jobs: list[JobSummary]
    next_cursor: str | None = None


class MetricsOut(Out):
    job_id: str
    metrics: list[EpochMetricsOut]


class FieldDiffOut(Out):
    field: str = Field(description="A dotted path of the stored spec, e.g. options.l2")
    this: Any = Field(None, description="This job's value (null: absent)")
    other: Any = Field(None, description="The other job's value (null: absent)")


class ComparedMetrics(Out):
    cost: float
    accuracy: float | None = None
    val_cost: float | None = None
    val_accuracy: float | None = None
    learning_rate: float | None = None


class JobDiffOut(Out):
    """Two runs side by side: with a seed, training is exact, so where their metrics part
    is where what differs between them took effect."""

    job_id: str
    other_id: str
    spec: list[FieldDiffOut] = Field(description="The spec's fields that differ")
    epochs_compared: int = Field(description="Epochs both jobs have finished")
    first_divergent_epoch: int | None = Field(
        None,
        description="The first of those whose metrics (cost, accuracies, learning rate) "
        "differ, bit for bit; null when none does",
    )
    this_metrics: ComparedMetrics | None = Field(None, description="At that epoch")
    other_metrics: ComparedMetrics | None = Field(None, description="At that epoch")
    weights_equal: bool | None = Field(
        None, description="Both succeeded: whether their models are the same bits"
    )
    state_epoch: int | None = Field(
        None,
        description="Both jobs kept a state (a checkpoint, or the final state an ended job "
        "keeps) at the same position, before the first divergent epoch: its finished epochs",
    )
    states_equal: bool | None = Field(
        None, description="Whether the weights were the same bits at that state"
    )
