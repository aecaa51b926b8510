"""Stored data sets: what a client uploads, the queries of /v1/datasets and the answers.
The reason to change is a field of the data sets' requests or answers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from .common import Cursor, Labels, MatrixInput, Name, Out, PageSize, Query, Strict


class DatasetCreate(Strict):
    """A data set as JSON: the same inputs and targets as a job's inline data."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"name": "xor", "inputs": [[0, 0], [0, 1]], "targets": [[0], [1]]}]
        }
    )

    inputs: MatrixInput
    targets: MatrixInput
    name: Name | None = None
    labels: Labels = {}


class DatasetUploadQuery(Query):
    """How to read a raw (.npz, CSV or form) upload; query strings, so converted."""

    name: Name | None = None
    targets: Annotated[str, Field(min_length=1, max_length=2000)] | None = Field(
        None, description="CSV: the target columns, comma-separated"
    )
    label: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        None, description="CSV: a class column; its values become one-hot targets"
    )
    dtype: Literal["float64", "float32"] = Field("float64", description="CSV: the stored dtype")


class DatasetListQuery(Query):
    limit: PageSize = 50
    cursor: Cursor | None = Field(None, description="next_cursor of the previous page")


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
