"""What a client sends about jobs: the training job (network, data, options) and the
queries of /v1/jobs. The reason to change is a field a client may send about a job."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Discriminator, Field, Tag

from .common import (
    CallbackUrl,
    Cursor,
    Labels,
    MatrixInput,
    Name,
    PageSize,
    PositiveInt,
    Query,
    ResourceId,
    Row,
    Seed,
    Strict,
)
from .training import ClipNorm, Optimizer, Schedule

JobStatus = Literal["queued", "running", "paused", "succeeded", "failed", "cancelled"]


class EarlyStopping(Strict):
    """Stop when the monitored cost (validation if given, else training) stops improving."""

    patience: PositiveInt = Field(description="Epochs without improvement before stopping")
    min_delta: Annotated[float, Field(ge=0)] = Field(0.0, description="Smallest improvement")


class ValidationSet(Strict):
    """Held-out samples evaluated after every epoch."""

    inputs: MatrixInput
    targets: MatrixInput


class ValidationDataset(Strict):
    """A stored data set evaluated after every epoch."""

    dataset_id: ResourceId = Field(description="A data set of this tenant (POST /v1/datasets)")


def _validation_form(value: Any) -> str:
    return "dataset" if isinstance(value, dict) and "dataset_id" in value else "inline"


Validation = Annotated[
    Annotated[ValidationSet, Tag("inline")] | Annotated[ValidationDataset, Tag("dataset")],
    Discriminator(_validation_form),
]


class Options(Strict):
    """The core's training options; every one has the seed notebook's behaviour as default."""

    activation: Literal["sigmoid", "tanh", "relu"] = "sigmoid"
    output_activation: Literal["sigmoid", "tanh", "relu", "identity", "softmax"] = "sigmoid"
    cost: Literal["quadratic", "cross_entropy"] = "quadratic"
    init: Literal["normal", "scaled"] = Field(
        "normal", description="normal: N(0, 1) as in the seed; scaled: N(0, 1/n_in)"
    )
    l2: Annotated[float, Field(ge=0)] = Field(0.0, description="L2 weight decay lambda")
    dtype: Literal["float64", "float32"] = "float64"
    early_stopping: EarlyStopping | None = None
    validation: Validation | None = None
    validation_split: Annotated[float, Field(gt=0, lt=1)] | None = Field(
        None,
        description="Hold out this fraction of the training rows for validation, chosen "
        "from the job's seed (stratified by class for one-hot targets); not with validation",
    )
    max_runtime_seconds: PositiveInt | None = Field(
        None, description="Fail the job with error type 'timeout' after this long"
    )
    verify_gradients: bool = Field(
        False,
        description="Compare backprop with central finite differences on a sample batch "
        "before training and at the end (core.gradient_check); shown as gradient_check",
    )
    optimizer: Optimizer | None = Field(
        None, description="How each step moves the weights; absent: sgd (the seed's)"
    )
    schedule: Schedule | None = Field(
        None,
        description="How the learning rate changes (learning_rate is its base); absent: constant",
    )
    clip_norm: ClipNorm | None = Field(
        None,
        description="Scale each step's gradient down to this global norm (all weights "
        "and biases together), as torch.nn.utils.clip_grad_norm_",
    )


Pair = Annotated[
    list[Row], Field(min_length=2, max_length=2, description="[x, y]: one input, one target")
]


class BatchData(Strict):
    """Explicit mini-batches of [x, y] pairs, trained in order every epoch (the seed's form)."""

    batches: Annotated[list[Annotated[list[Pair], Field(min_length=1)]], Field(min_length=1)]


class ArrayData(Strict):
    """Inputs and targets as matrices (rows are samples), cut into batches of batch_size;
    either may be JSON rows or a base64 .npy file."""

    inputs: MatrixInput
    targets: MatrixInput
    batch_size: PositiveInt = 10
    shuffle: bool = Field(True, description="Reshuffle before every epoch (seeded)")


class DatasetData(Strict):
    """A stored data set (POST /v1/datasets), cut into batches of batch_size."""

    dataset_id: ResourceId = Field(description="A data set of this tenant")
    batch_size: PositiveInt = 10
    shuffle: bool = Field(True, description="Reshuffle before every epoch (seeded)")


def _data_form(value: Any) -> str:
    """Which form ``data`` takes: from a request's dict, or from a model being serialized."""
    if isinstance(value, BatchData) or isinstance(value, dict) and "batches" in value:
        return "batches"
    if isinstance(value, DatasetData) or isinstance(value, dict) and "dataset_id" in value:
        return "dataset"
    return "arrays"


TrainingData = Annotated[
    Annotated[BatchData, Tag("batches")]
    | Annotated[ArrayData, Tag("arrays")]
    | Annotated[DatasetData, Tag("dataset")],
    Discriminator(_data_form),
]


class JobCreate(Strict):
    """A training job: the network, the data and how to train it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "structure": [2, 3, 1],
                    "epochs": 5,
                    "learning_rate": 2.0,
                    "seed": 2023,
                    "name": "xor",
                    "labels": {"project": "demo"},
                    "data": {
                        "inputs": [[0, 0], [0, 1], [1, 0], [1, 1]],
                        "targets": [[0], [1], [1], [0]],
                        "batch_size": 2,
                    },
                }
            ]
        }
    )

    structure: Annotated[list[PositiveInt], Field(min_length=2)] = Field(
        description="Layer sizes, input first, e.g. [784, 30, 10]"
    )
    epochs: PositiveInt
    learning_rate: Annotated[float, Field(gt=0)]
    seed: Seed | None = Field(
        None,
        description="Makes initialisation equal to np.random.seed(seed); Network(structure) "
        "and the whole run reproducible; chosen at random when omitted",
    )
    name: Name | None = None
    labels: Labels = {}
    options: Options = Options()
    data: TrainingData
    callback_url: CallbackUrl | None = Field(
        None,
        description="When the job ends, its final state is POSTed here, signed with the "
        "tenant's webhook secret (X-Backprop-Signature, X-Backprop-Timestamp)",
    )
    init_from: ResourceId | None = Field(
        None,
        description="Start from the weights of this tenant's succeeded job (same structure): "
        "to continue training it or fine-tune it",
    )


class ContinueJob(Strict):
    """More epochs for an ended job, from its final state: the new job's weights and metrics
    are the bits of one job trained for the whole run from the start."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"epochs": 10}]})

    epochs: PositiveInt = Field(description="How many more epochs to train")
    max_runtime_seconds: PositiveInt | None = Field(
        None, description="The new job's time limit; the service's when omitted"
    )
    name: Name | None = Field(None, description="The job's name when omitted")
    labels: Labels | None = Field(None, description="The job's labels when omitted")


class ListQuery(Query):
    """Query parameters arrive as strings, so this model converts (it is not strict)."""

    status: JobStatus | None = None
    label: (
        Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,63}:[^\x00-\x1f\x7f]{0,63}$")] | None
    ) = Field(None, description="key:value (a label's own characters); only jobs with it")
    limit: PageSize = 50
    cursor: Cursor | None = Field(
        None,
        description="next_cursor of the previous page: the page continues after that "
        "position (creation time in microseconds, then job id)",
    )
    sweep: ResourceId | None = Field(None, description="Only the trials of this sweep")


class EventsQuery(Query):
    timeout: Annotated[float, Field(ge=1, le=60)] = Field(
        25,
        description="End the stream after this many seconds without the job ending (an "
        "EventSource then reconnects with Last-Event-ID)",
    )


class JobQuery(Query):
    wait: Annotated[float, Field(ge=0, le=60)] = Field(
        0,
        description="Long poll: answer as soon as the job's status or progress changes "
        "(from what If-None-Match names, else from the state when the request arrived), "
        "or after this many seconds with the current state; a finished job answers at once",
    )


class DiffQuery(Query):
    other: ResourceId = Field(description="The job to compare with: one of this tenant's")
