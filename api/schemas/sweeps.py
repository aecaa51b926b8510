"""Hyperparameter sweeps: the search space and its dimensions, the sweep a client submits,
the queries of /v1/sweeps, the answers and the body of a sweep's callback.
The reason to change is a field of a sweep, its search space or its answers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag
from pydantic_core import PydanticCustomError

from tuning.space import DIMENSION_KINDS

from .common import (
    CallbackUrl,
    Cursor,
    Labels,
    Name,
    Out,
    PageSize,
    PositiveInt,
    Query,
    Seed,
    Strict,
    json_int,
    keys_by_pattern,
)
from .job_views import CallbackState, Progress, RungOut
from .jobs import JobCreate, JobStatus


def _ordered(bounds: list) -> list:
    if not bounds[0] < bounds[1]:
        message = "expected [low, high] with low < high, got {bounds}"
        raise PydanticCustomError("search_range", message, {"bounds": bounds})
    return bounds


def _positive(bounds: list) -> list:
    if bounds[0] <= 0:
        message = "a log scale needs low > 0, got {low}"
        raise PydanticCustomError("search_range", message, {"low": bounds[0]})
    return bounds


Bounds = Annotated[list[float], Field(min_length=2, max_length=2), AfterValidator(_ordered)]
IntBounds = Annotated[list[json_int()], Field(min_length=2, max_length=2), AfterValidator(_ordered)]
ChoiceValue = (
    bool
    | int
    | float
    | Annotated[str, Field(max_length=100)]
    | Annotated[list[PositiveInt], Field(min_length=2, max_length=64)]
)


class ChoiceDimension(Strict):
    choice: Annotated[list[ChoiceValue], Field(min_length=1, max_length=100)] = Field(
        description="Values to choose from (a structure takes lists of layer sizes)"
    )


class UniformDimension(Strict):
    uniform: Bounds = Field(description="[low, high]: any float between, bounds included")


class LogUniformDimension(Strict):
    log_uniform: Annotated[Bounds, AfterValidator(_positive)] = Field(
        description="[low, high] with low > 0: uniform in the logarithm"
    )


class IntUniformDimension(Strict):
    int_uniform: IntBounds = Field(description="[low, high]: any integer between, included")


class IntLogUniformDimension(Strict):
    int_log_uniform: Annotated[IntBounds, AfterValidator(_positive)] = Field(
        description="[low, high] with low > 0: integers, uniform in the logarithm"
    )


def _dimension_kind(value: Any) -> str | None:
    if isinstance(value, dict) and len(value) == 1:
        (name,) = value
        return name if name in DIMENSION_KINDS else None
    if isinstance(value, BaseModel):
        return next(iter(type(value).model_fields))
    return None


Dimension = Annotated[
    Annotated[ChoiceDimension, Tag("choice")]
    | Annotated[UniformDimension, Tag("uniform")]
    | Annotated[LogUniformDimension, Tag("log_uniform")]
    | Annotated[IntUniformDimension, Tag("int_uniform")]
    | Annotated[IntLogUniformDimension, Tag("int_log_uniform")],
    Discriminator(
        _dimension_kind,
        custom_error_type="dimension",
        custom_error_message="expected one key: choice, uniform, log_uniform, int_uniform or "
        'int_log_uniform, e.g. {"log_uniform": [0.01, 10]}',
    ),
]


SearchPath = Annotated[
    str, Field(pattern=r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*(\[[0-9]{1,3}\])?$")
]
Goal = Literal["max", "min"]
Method = Literal["grid", "random", "tpe"]


class SweepObjective(Strict):
    metric: Literal["val_accuracy", "val_cost", "accuracy", "cost"] = Field(
        description="A trial's metric at its last epoch"
    )
    goal: Goal | None = Field(
        None, description="max or min; accuracies default to max, costs to min"
    )


class AshaOptions(Strict):
    """Asynchronous successive halving: at epochs min_epochs x reduction_factor^k (rungs),
    a trial continues only if it is among the best 1/reduction_factor of the trials that
    reached that rung; the others end succeeded, stopped early, with their model."""

    method: Literal["asha"] = "asha"
    min_epochs: PositiveInt = Field(1, description="The first rung")
    reduction_factor: json_int(ge=2, le=100) = Field(3, description="Keep 1 in this many")
    promotions: bool = Field(
        False,
        description="Pause a trial at its rung instead of stopping it, and promote it later "
        "(it continues from its pause, exactly) once it ranks among the best "
        "1/reduction_factor of the trials that reached the rung; paused trials not promoted "
        "by the sweep's end end succeeded, stopped early",
    )


class SweepCreate(Strict):
    """A hyperparameter search: trials are jobs made from ``base`` with values from ``search``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "digits-width-rate",
                    "base": {
                        "structure": [64, 30, 10],
                        "epochs": 30,
                        "learning_rate": 3.0,
                        "data": {
                            "dataset_id": "00000000-0000-4000-8000-000000000000",
                            "batch_size": 10,
                        },
                        "options": {"validation_split": 0.2},
                    },
                    "search": {
                        "learning_rate": {"log_uniform": [0.05, 10]},
                        "structure[1]": {"choice": [16, 32, 64, 128]},
                        "options.l2": {"uniform": [0, 0.001]},
                        "data.batch_size": {"choice": [10, 32]},
                    },
                    "method": "random",
                    "trials": 27,
                    "seed": 7,
                    "objective": {"metric": "val_accuracy", "goal": "max"},
                    "early_stopping": {"method": "asha", "min_epochs": 3, "reduction_factor": 3},
                    "max_parallel": 4,
                }
            ]
        }
    )

    name: Name | None = None
    labels: Labels = {}
    base: JobCreate = Field(
        description="The job every trial starts from; it trains on a stored data set"
    )
    search: Annotated[
        dict[SearchPath, Dimension],
        Field(min_length=1, max_length=20, json_schema_extra=keys_by_pattern),
    ] = Field(
        description="Field paths of the job (learning_rate, epochs, seed, structure, "
        "structure[i], options.*, data.batch_size, data.shuffle, data.dataset_id, "
        "init_from) and what to try there"
    )
    method: Method = Field(
        "random",
        description="grid: every combination of the choices, in order; random: independent "
        "draws; tpe: Optuna's model-based sampler on the finished trials",
    )
    trials: PositiveInt | None = Field(
        None, description="How many trials; a grid's size by default (random and tpe: 10)"
    )
    seed: Seed | None = Field(
        None, description="The same seed gives the same trial values (chosen when omitted)"
    )
    objective: SweepObjective
    early_stopping: AshaOptions | None = None
    replicates: json_int(ge=1, le=20) = Field(
        1,
        description="Train each configuration with this many seeds (the first the trial's, "
        "the others derived from it) and rank configurations by their mean objective; "
        "trials counts configurations (so trials x replicates jobs). Not with "
        "early_stopping",
    )
    max_parallel: PositiveInt = Field(4, description="Trials queued or running at once")
    callback_url: CallbackUrl | None = Field(
        None,
        description="Once the sweep ended and none of its trials still runs, its state is "
        "POSTed here (the sweepFinished webhook), signed as a job's callback is. Trials call "
        "back only when base has a callback_url",
    )


class ExtendTrials(Strict):
    top: json_int(ge=1, le=100) = Field(description="How many of the best succeeded trials")
    epochs: PositiveInt = Field(description="How many more epochs each trains")


class SweepContinue(Strict):
    """More for a sweep to do: it resumes its cancelled trials (each from where it stopped)
    and ASHA's paused ones, and runs again until every trial has ended."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{}, {"add_trials": 9}, {"extend": {"top": 3, "epochs": 20}}]
        }
    )

    add_trials: json_int(ge=0, le=10_000) = Field(
        0, description="More trials, their values drawn on from the sweep's seed"
    )
    rerun_failed: bool = Field(False, description="Run failed trials again from the start")
    extend: ExtendTrials | None = Field(
        None,
        description="Continue the best trials by more epochs, each as a new trial that "
        "continues from the trial's final state (continueJob)",
    )


class SweepQuery(Query):
    limit: PageSize = Field(50, description="Leaderboard rows")
    offset: Annotated[int, Field(ge=0, le=100_000)] = Field(
        0, description="Leaderboard rows to skip"
    )


class SweepEventsQuery(Query):
    limit: PageSize = Field(10, description="Leaderboard rows in each event")
    timeout: Annotated[float, Field(ge=1, le=60)] = Field(
        25,
        description="End the stream after this many seconds without the sweep ending (an "
        "EventSource then reconnects and starts from the current state)",
    )


class SweepListQuery(Query):
    limit: PageSize = 50
    cursor: Cursor | None = Field(None, description="next_cursor of the previous page")


class TrialOut(Out):
    trial: int
    job_id: str
    status: JobStatus
    params: dict[str, Any] = Field(description="The searched values, by path")
    objective: float | None = Field(description="The objective metric at its latest epoch")
    progress: Progress
    stopped_early: bool
    rungs: list[RungOut]
    runtime_seconds: float


class SweepCounts(Out):
    pending: int = Field(description="Trials not released yet")
    queued: int
    running: int
    paused: int = Field(0, description="Trials paused at a rung, which may still be promoted")
    succeeded: int
    failed: int
    cancelled: int


class SweepEpochs(Out):
    run: int = Field(description="Epochs the trials trained")
    full: int = Field(description="Epochs they would train without early stopping")
    saved: float = Field(description="1 - run / full: the share of compute early stopping saved")


class ObjectiveOut(Out):
    metric: str
    goal: Goal


class SweepSummary(Out):
    id: str
    name: str | None = None
    labels: dict[str, str]
    status: Literal["running", "succeeded", "failed", "cancelled"]
    method: Method
    trials: int
    max_parallel: int
    seed: int
    objective: ObjectiveOut
    early_stopping: AshaOptions | None = None
    replicates: int = Field(1, description="Seeds per configuration")
    search: dict[str, dict[str, list[Any]]]
    counts: SweepCounts
    best: TrialOut | None = Field(None, description="The best succeeded trial so far")
    epochs: SweepEpochs
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None


class CallbackAttemptOut(Out):
    attempt: int
    at: datetime
    outcome: str = Field(description="HTTP <status>, no answer (<why>), or refused: <why>")
    milliseconds: float


class SweepCallbackOut(Out):
    url: str
    state: CallbackState = Field(
        description="waiting: the sweep runs (or a cancelled sweep's trials are stopping); "
        "queued: being delivered; delivered: a 2xx came back; failed: WEBHOOK_ATTEMPTS "
        "attempts got none"
    )
    attempts: list[CallbackAttemptOut]


class ConfigurationOut(Out):
    configuration: int = Field(description="1, 2, ...: its replicates' trials are consecutive")
    params: dict[str, Any]
    job_ids: list[str] = Field(description="Its replicates' trial jobs")
    finished: int = Field(description="Succeeded replicates with an objective")
    mean: float | None
    std: float | None = Field(description="Sample standard deviation (0 for one replicate)")


class SweepOut(SweepSummary):
    callback: SweepCallbackOut | None = Field(
        None, description="The sweep's callback and its deliveries (none without callback_url)"
    )
    configurations: list[ConfigurationOut] | None = Field(
        None,
        description="With replicates: each configuration's mean and standard deviation over "
        "its succeeded replicates, best mean first (best is the best replicate of the first)",
    )
    leaderboard: list[TrialOut] = Field(description="Trials, best objective first")
    leaderboard_total: int
    next_offset: int | None = Field(None, description="offset of the next leaderboard page")


class BestTrialOut(Out):
    trial: int
    job_id: str
    params: dict[str, Any] = Field(description="The searched values, by path")
    objective: float | None


class SweepCallbackPayload(Out):
    """The body of a sweep's callback: its state once it ended, POSTed to ``callback_url``."""

    id: str
    name: str | None = None
    labels: dict[str, str]
    status: Literal["succeeded", "failed", "cancelled"]
    trials: int
    counts: SweepCounts
    objective: ObjectiveOut
    best: BestTrialOut | None = Field(None, description="The best succeeded trial")
    epochs: SweepEpochs
    created_at: datetime
    finished_at: datetime


class SweepList(Out):
    sweeps: list[SweepSummary]
    next_cursor: str | None = None
