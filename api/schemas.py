"""The HTTP contract as pydantic models: requests are validated with them and the OpenAPI
document is generated from them (``api/openapi.py``), so the two cannot disagree.

Requests are strict: a number must be a JSON number (not ``true``, not ``"5"``), an integer
field takes integers (``13.0`` too: JSON Schema calls it an integer), every float must be
finite, and unknown fields are rejected. Rules that need the settings or span several fields
(sizes against the structure, limits, the compute budget) are in ``api/validation.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
)
from pydantic_core import PydanticCustomError


def _integral_float_to_int(value: Any) -> Any:
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def json_int(**constraints) -> Any:
    """An integer field that takes 13.0 as 13; the constraints come first so that the
    document states them as JSON Schema's minimum/maximum."""
    return Annotated[int, Field(**constraints), BeforeValidator(_integral_float_to_int)]


JsonInt = json_int()
# numpy.save(buffer, numpy.array([[0.0, 1.0]])), base64-encoded
NPY_EXAMPLE = (
    "k05VTVBZAQB2AHsnZGVzY3InOiAnPGY4JywgJ2ZvcnRyYW5fb3JkZXInOiBGYWxzZSwgJ3NoYXBlJzogKDEsIDIp"
    "LCB9ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAoAAAAA"
    "AAAAAAAAAAAAAPA/"
)
PositiveInt = json_int(ge=1)
Row = Annotated[list[float], Field(min_length=1)]
Matrix = Annotated[list[Row], Field(min_length=1)]


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class NpyArray(Strict):
    """A matrix as a .npy file (what `numpy.save` writes), base64-encoded: about 11 bytes
    a float64 and 5.3 a float32 instead of about 20 as JSON text, read into one array
    without a Python object per number, and exact to the last bit."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"npy": NPY_EXAMPLE}]},
    )

    npy: str = Field(
        description="base64 (RFC 4648) of a .npy file (format 1.0 or 2.0, as numpy.save "
        "writes): a 2-D array of finite floats or integers with at least one row, rows are "
        "samples; e.g. base64.b64encode(buffer.getvalue()) after numpy.save(buffer, array)",
        json_schema_extra={
            # checked by api/validation.decode_npy, whose message says what is expected
            "pattern": r"^[A-Za-z0-9+/]*={0,2}$",
            "format": "npy-base64",
            "contentEncoding": "base64",
            "contentMediaType": "application/x-npy",
        },
    )


def _matrix_form(value: Any) -> str:
    return "npy-file" if isinstance(value, dict) else "json-rows"


# rows of JSON numbers, or a .npy file: pydantic names the chosen form in an error's path
# (these tags), which problems.py leaves out of the field it reports
MatrixInput = Annotated[
    Annotated[Matrix, Tag("json-rows")] | Annotated[NpyArray, Tag("npy-file")],
    Discriminator(_matrix_form),
]


class Out(BaseModel):
    """Response models: documented, not re-validated on the way out."""

    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------------ requests


class EarlyStopping(Strict):
    """Stop when the monitored cost (validation if given, else training) stops improving."""

    patience: PositiveInt = Field(description="Epochs without improvement before stopping")
    min_delta: Annotated[float, Field(ge=0)] = Field(0.0, description="Smallest improvement")


class ValidationSet(Strict):
    """Held-out samples evaluated after every epoch."""

    inputs: MatrixInput
    targets: MatrixInput


DATASET_ID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


class ValidationDataset(Strict):
    """A stored data set evaluated after every epoch."""

    dataset_id: Annotated[str, Field(pattern=DATASET_ID)] = Field(
        description="A data set of this tenant (POST /v1/datasets)"
    )


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

    dataset_id: Annotated[str, Field(pattern=DATASET_ID)] = Field(
        description="A data set of this tenant"
    )
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


def _keys_by_pattern(schema: dict) -> None:
    """pydantic writes patternProperties, which lets keys of any other form through; say
    that every key has the pattern and every value the value's schema."""
    ((pattern, values),) = schema.pop("patternProperties").items()
    schema["propertyNames"] = {"pattern": pattern}
    schema["additionalProperties"] = values


# \s means other characters in pydantic's regex (Unicode White_Space: U+0085), JSON Schema's
# (ECMA-262: U+FEFF) and Python's: naming both makes the set the same everywhere
CALLBACK_URL = r"^https?://[^\s\x85\ufeff/?#]+"
LabelKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,63}$")]
# no control characters (PostgreSQL text cannot hold NUL, and logs should not hold the rest)
Text = Annotated[str, Field(pattern=r"^[^\x00-\x1f\x7f]*$")]
LabelValue = Annotated[Text, Field(max_length=63)]


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
    seed: json_int(ge=0, le=2**32 - 1) | None = Field(
        None,
        description="Makes initialisation equal to np.random.seed(seed); Network(structure) "
        "and the whole run reproducible; chosen at random when omitted",
    )
    name: Annotated[Text, Field(max_length=200)] | None = None
    labels: Annotated[
        dict[LabelKey, LabelValue],
        Field(max_length=20, json_schema_extra=_keys_by_pattern),
    ] = {}
    options: Options = Options()
    data: TrainingData
    callback_url: Annotated[str, Field(max_length=2000, pattern=CALLBACK_URL)] | None = Field(
        None,
        description="When the job ends, its final state is POSTed here, signed with the "
        "tenant's webhook secret (X-Backprop-Signature, X-Backprop-Timestamp)",
    )
    init_from: Annotated[str, Field(pattern=DATASET_ID)] | None = Field(
        None,
        description="Start from the weights of this tenant's succeeded job (same structure): "
        "to continue training it or fine-tune it",
    )


class PredictRequest(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [{"inputs": [[0, 1], [1, 1]]}]})

    inputs: MatrixInput


class PredictDatasetRequest(Strict):
    """Outputs for every row of a stored data set's inputs."""

    dataset_id: Annotated[str, Field(pattern=DATASET_ID)] = Field(
        description="A data set of this tenant"
    )


class DatasetCreate(Strict):
    """A data set as JSON: the same inputs and targets as a job's inline data."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"name": "xor", "inputs": [[0, 0], [0, 1]], "targets": [[0], [1]]}]
        }
    )

    inputs: MatrixInput
    targets: MatrixInput
    name: Annotated[Text, Field(max_length=200)] | None = None
    labels: Annotated[
        dict[LabelKey, LabelValue],
        Field(max_length=20, json_schema_extra=_keys_by_pattern),
    ] = {}


class DatasetUploadQuery(BaseModel):
    """How to read a raw (.npz, CSV or form) upload; query strings, so converted."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[Text, Field(max_length=200)] | None = None
    targets: Annotated[str, Field(min_length=1, max_length=2000)] | None = Field(
        None, description="CSV: the target columns, comma-separated"
    )
    label: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        None, description="CSV: a class column; its values become one-hot targets"
    )
    dtype: Literal["float64", "float32"] = Field("float64", description="CSV: the stored dtype")


class ListQuery(BaseModel):
    """Query parameters arrive as strings, so this model converts (it is not strict)."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None
    label: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,63}:.{0,63}$")] | None = Field(
        None, description="key:value; only jobs with that label"
    )
    limit: Annotated[int, Field(ge=1, le=200)] = 50
    cursor: Annotated[str, Field(pattern=r"^[0-9]{1,17}\.[0-9a-f]{32}$")] | None = Field(
        None,
        description="next_cursor of the previous page: the page continues after that "
        "position (creation time in microseconds, then job id)",
    )
    sweep: Annotated[str, Field(pattern=DATASET_ID)] | None = Field(
        None, description="Only the trials of this sweep"
    )


class EventsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout: Annotated[float, Field(ge=1, le=60)] = Field(
        25,
        description="End the stream after this many seconds without the job ending (an "
        "EventSource then reconnects with Last-Event-ID)",
    )


class JobQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wait: Annotated[float, Field(ge=0, le=60)] = Field(
        0,
        description="Long poll: answer as soon as the job's status or progress changes "
        "(from what If-None-Match names, else from the state when the request arrived), "
        "or after this many seconds with the current state; a finished job answers at once",
    )


# ------------------------------------------------------------------------------ responses


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
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
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


class RungOut(Out):
    """ASHA's decision for a trial that reached a rung, with the figures behind it."""

    rung: int = Field(description="0 at min_epochs, k at min_epochs x reduction_factor^k")
    epoch: int
    value: float | None = Field(description="The trial's objective at that epoch")
    competitors: int = Field(description="Trials that had reached this rung, itself included")
    keep: int = Field(description="How many of them continue: max(1, competitors // factor)")
    cutoff: float | None = Field(description="The keep-th best value: continuing needs it")
    better: int | None = Field(description="Competitors with a better value than this trial")
    decision: Literal["continue", "stop"]


class JobOut(JobSummary):
    options: OptionsOut
    data: DataSummary
    attempts: int
    cancel_requested: bool
    callback_url: str | None = Field(None, description="Deliveries are in history (callback)")
    callback_state: Literal["waiting", "queued", "delivered", "failed"] | None = Field(
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


class MemberOut(Out):
    shape: list[int]
    dtype: str = Field(description="NumPy's dtype string, e.g. <f4")


class DatasetOut(Out):
    id: str
    name: str | None = None
    labels: dict[str, str]
    samples: int
    inputs: MemberOut
    targets: MemberOut
    classes: list[str | int | float] | None = Field(
        None, description="A CSV label column's classes, in the order of the one-hot columns"
    )
    bytes: int = Field(description="Stored bytes of inputs and targets")
    sha256: str = Field(description="Of the arrays' names, dtypes, shapes and bytes")
    created_at: datetime


class DatasetList(Out):
    datasets: list[DatasetOut]
    next_cursor: str | None = None


class DatasetListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: Annotated[int, Field(ge=1, le=200)] = 50
    cursor: Annotated[str, Field(pattern=r"^[0-9]{1,17}\.[0-9a-f]{32}$")] | None = Field(
        None, description="next_cursor of the previous page"
    )


class StoredOut(Out):
    count: int
    bytes: int


class UsageOut(Out):
    jobs: StoredOut = Field(description="Jobs, with their inline data, checkpoints and models")
    datasets: StoredOut
    dataset_quota_bytes: int = Field(description="MAX_DATASET_STORAGE_BYTES")
    job_quota_bytes: int = Field(
        description="MAX_JOB_STORAGE_BYTES: what the tenant's jobs may store (a submit that "
        "would pass it gets 413)"
    )


class WebhookSecretOut(Out):
    secret: str = Field(
        description="The tenant's new signing secret: X-Backprop-Signature is v1= and the "
        "hex HMAC-SHA256 of '<X-Backprop-Timestamp>.<body>' with it"
    )


class JobList(Out):
    jobs: list[JobSummary]
    next_cursor: str | None = None


class MetricsOut(Out):
    job_id: str
    metrics: list[EpochMetricsOut]


class Lineage(Out):
    """Where a model comes from: enough to train it again."""

    job_id: str
    data: str = Field(description="inline, or dataset:<id>")
    data_sha256: str | None = Field(None, description="The data set's content hash")
    validation: str | None = Field(None, description="split:<fraction>, dataset:<id>, inline")
    init_from: str | None = Field(None, description="The job whose weights it started from")
    seed: int
    epochs: int = Field(description="Epochs asked for")
    epochs_run: int
    learning_rate: float
    batch_size: int | None = None
    options: OptionsOut
    metrics: EpochMetricsOut | None = Field(None, description="The last epoch's")
    gradient_check: GradientCheckOut | None = None
    finished_at: datetime | None = None


class ModelOut(Out):
    job_id: str
    lineage: Lineage
    structure: list[int]
    activation: str
    output_activation: str
    cost: str
    dtype: str
    weights: list[list[list[float]]] = Field(description="weights[l] is n_l x n_(l+1)")
    biases: list[list[list[float]]] = Field(description="biases[l] is n_(l+1) x 1, as the seed")


class PredictOut(Out):
    outputs: list[list[float]]


class Health(Out):
    status: Literal["ok"]


class Readiness(Out):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str]


class FieldError(Out):
    loc: list[str | int] = Field(description="Path to the field, e.g. ['data', 'inputs', 3]")
    field: str = Field(description="The same path as text: data.inputs[3]")
    msg: str
    type: str


class Problem(Out):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    errors: list[FieldError] | None = None


# ------------------------------------------------------------------------------ sweeps


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
IntBounds = Annotated[list[JsonInt], Field(min_length=2, max_length=2), AfterValidator(_ordered)]
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


DIMENSION_KINDS = ("choice", "uniform", "log_uniform", "int_uniform", "int_log_uniform")


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


class SweepObjective(Strict):
    metric: Literal["val_accuracy", "val_cost", "accuracy", "cost"] = Field(
        description="A trial's metric at its last epoch"
    )
    goal: Literal["max", "min"] | None = Field(
        None, description="max or min; accuracies default to max, costs to min"
    )


class AshaOptions(Strict):
    """Asynchronous successive halving: at epochs min_epochs x reduction_factor^k (rungs),
    a trial continues only if it is among the best 1/reduction_factor of the trials that
    reached that rung; the others end succeeded, stopped early, with their model."""

    method: Literal["asha"] = "asha"
    min_epochs: PositiveInt = Field(1, description="The first rung")
    reduction_factor: json_int(ge=2, le=100) = Field(3, description="Keep 1 in this many")


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

    name: Annotated[Text, Field(max_length=200)] | None = None
    labels: Annotated[
        dict[LabelKey, LabelValue],
        Field(max_length=20, json_schema_extra=_keys_by_pattern),
    ] = {}
    base: JobCreate = Field(
        description="The job every trial starts from; it trains on a stored data set"
    )
    search: Annotated[
        dict[SearchPath, Dimension],
        Field(min_length=1, max_length=20, json_schema_extra=_keys_by_pattern),
    ] = Field(
        description="Field paths of the job (learning_rate, epochs, seed, structure, "
        "structure[i], options.*, data.batch_size, data.shuffle, data.dataset_id, "
        "init_from) and what to try there"
    )
    method: Literal["grid", "random", "tpe"] = Field(
        "random",
        description="grid: every combination of the choices, in order; random: independent "
        "draws; tpe: Optuna's model-based sampler on the finished trials",
    )
    trials: PositiveInt | None = Field(
        None, description="How many trials; a grid's size by default (random and tpe: 10)"
    )
    seed: json_int(ge=0, le=2**32 - 1) | None = Field(
        None, description="The same seed gives the same trial values (chosen when omitted)"
    )
    objective: SweepObjective
    early_stopping: AshaOptions | None = None
    max_parallel: PositiveInt = Field(4, description="Trials queued or running at once")
    callback_url: Annotated[str, Field(max_length=2000, pattern=CALLBACK_URL)] | None = Field(
        None,
        description="Once the sweep ended and none of its trials still runs, its state is "
        "POSTed here (the sweepFinished webhook), signed as a job's callback is. Trials call "
        "back only when base has a callback_url",
    )


class SweepQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: Annotated[int, Field(ge=1, le=200)] = Field(50, description="Leaderboard rows")
    offset: Annotated[int, Field(ge=0, le=100_000)] = Field(
        0, description="Leaderboard rows to skip"
    )


class SweepEventsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: Annotated[int, Field(ge=1, le=200)] = Field(
        10, description="Leaderboard rows in each event"
    )
    timeout: Annotated[float, Field(ge=1, le=60)] = Field(
        25,
        description="End the stream after this many seconds without the sweep ending (an "
        "EventSource then reconnects and starts from the current state)",
    )


class SweepListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: Annotated[int, Field(ge=1, le=200)] = 50
    cursor: Annotated[str, Field(pattern=r"^[0-9]{1,17}\.[0-9a-f]{32}$")] | None = Field(
        None, description="next_cursor of the previous page"
    )


class TrialOut(Out):
    trial: int
    job_id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
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
    succeeded: int
    failed: int
    cancelled: int


class SweepEpochs(Out):
    run: int = Field(description="Epochs the trials trained")
    full: int = Field(description="Epochs they would train without early stopping")
    saved: float = Field(description="1 - run / full: the share of compute early stopping saved")


class ObjectiveOut(Out):
    metric: str
    goal: Literal["max", "min"]


class SweepSummary(Out):
    id: str
    name: str | None = None
    labels: dict[str, str]
    status: Literal["running", "succeeded", "failed", "cancelled"]
    method: Literal["grid", "random", "tpe"]
    trials: int
    max_parallel: int
    seed: int
    objective: ObjectiveOut
    early_stopping: AshaOptions | None = None
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
    state: Literal["waiting", "queued", "delivered", "failed"] = Field(
        description="waiting: the sweep runs (or a cancelled sweep's trials are stopping); "
        "queued: being delivered; delivered: a 2xx came back; failed: WEBHOOK_ATTEMPTS "
        "attempts got none"
    )
    attempts: list[CallbackAttemptOut]


class SweepOut(SweepSummary):
    callback: SweepCallbackOut | None = Field(
        None, description="The sweep's callback and its deliveries (none without callback_url)"
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
