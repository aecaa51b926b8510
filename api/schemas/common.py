"""The building blocks every request and response model shares: the strict base for
requests, the base for responses, number, matrix, text, label and cursor fields, and the
problem body of every error.
The reason to change is a field type or rule that every resource shares.

Requests are strict: a number must be a JSON number (not ``true``, not ``"5"``), an integer
field takes integers (``13.0`` too: JSON Schema calls it an integer), every float must be
finite, and unknown fields are rejected. Rules that need the settings or span several fields
(sizes against the structure, limits, the compute budget) are in ``api/validation.py`` and
``api/budget.py``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag


def _integral_float_to_int(value: Any) -> Any:
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def json_int(**constraints) -> Any:
    """An integer field that takes 13.0 as 13; the constraints come first so that the
    document states them as JSON Schema's minimum/maximum."""
    return Annotated[int, Field(**constraints), BeforeValidator(_integral_float_to_int)]


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
            # checked by api/matrices.decode_npy, whose message says what is expected
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


class Query(BaseModel):
    """Query strings: every value arrives as text, so these models convert (not strict)."""

    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    """Response models: documented, not re-validated on the way out."""

    model_config = ConfigDict(extra="forbid")


def keys_by_pattern(schema: dict) -> None:
    """pydantic writes patternProperties, which lets keys of any other form through; say
    that every key has the pattern and every value the value's schema."""
    ((pattern, values),) = schema.pop("patternProperties").items()
    schema["propertyNames"] = {"pattern": pattern}
    schema["additionalProperties"] = values


# a job's, a data set's or a sweep's id
ResourceId = Annotated[
    str, Field(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
]
Seed = json_int(ge=0, le=2**32 - 1)
# no control characters (PostgreSQL text cannot hold NUL, and logs should not hold the rest)
Text = Annotated[str, Field(pattern=r"^[^\x00-\x1f\x7f]*$")]
Name = Annotated[Text, Field(max_length=200)]
LabelKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,63}$")]
LabelValue = Annotated[Text, Field(max_length=63)]
Labels = Annotated[
    dict[LabelKey, LabelValue], Field(max_length=20, json_schema_extra=keys_by_pattern)
]
# \s means other characters in pydantic's regex (Unicode White_Space: U+0085), JSON Schema's
# (ECMA-262: U+FEFF) and Python's: naming both makes the set the same everywhere
CallbackUrl = Annotated[str, Field(max_length=2000, pattern=r"^https?://[^\s\x85\ufeff/?#]+")]
PageSize = Annotated[int, Field(ge=1, le=200)]
# a page's next_cursor: creation time in microseconds, then the id
Cursor = Annotated[str, Field(pattern=r"^[0-9]{1,17}\.[0-9a-f]{32}$")]


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
