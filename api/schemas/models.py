"""A succeeded job's model: its weights and lineage, and predictions from it.
The reason to change is a field of a model, its lineage or a prediction."""

from __future__ import annotations

from datetime import datetime

from pydantic import ConfigDict, Field

from .common import MatrixInput, Out, ResourceId, Strict
from .job_views import EpochMetricsOut, GradientCheckOut, OptionsOut


class PredictRequest(Strict):
    model_config = ConfigDict(json_schema_extra={"examples": [{"inputs": [[0, 1], [1, 1]]}]})

    inputs: MatrixInput


class PredictDatasetRequest(Strict):
    """Outputs for every row of a stored data set's inputs."""

    dataset_id: ResourceId = Field(description="A data set of this tenant")


class Lineage(Out):
    """Where a model comes from: enough to train it again."""

    job_id: str
    data: str = Field(description="inline, or dataset:<id>")
    data_sha256: str | None = Field(None, description="The data set's content hash")
    validation: str | None = Field(None, description="split:<fraction>, dataset:<id>, inline")
    init_from: str | None = Field(None, description="The job whose weights it started from")
    continued_from: str | None = Field(
        None, description="The job whose final state it continued from"
    )
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
