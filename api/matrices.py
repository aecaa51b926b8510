"""A matrix a client sends, as JSON rows or a base64 .npy file: read into an array and its
rows checked against a layer's width, every problem named by its field. The reason to change
is a new form of matrix or a new rule on one.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
from numpy.lib import format as npy_format

from .field_errors import field_error
from .schemas.common import NpyArray

MAX_ROW_ERRORS = 10  # per matrix: enough to see the pattern, bounded for huge bodies


def check_rows(rows, loc: tuple, width: int, layer: str, errors: list[dict]) -> bool:
    """Every row must have the width of a layer; reports each row that does not (the first
    MAX_ROW_ERRORS of them, then how many more)."""
    bad = [i for i, row in enumerate(rows) if len(row) != width]
    for i in bad[:MAX_ROW_ERRORS]:
        errors.append(
            field_error(
                (*loc, i),
                f"expected {width} values ({layer}), got {len(rows[i])}",
                "size_mismatch",
            )
        )
    if len(bad) > MAX_ROW_ERRORS:
        errors.append(
            field_error(
                loc,
                f"{len(bad) - MAX_ROW_ERRORS} more rows do not have {width} values",
                "size_mismatch",
            )
        )
    return not bad


def matrix_input(value, loc: tuple, width: int, layer: str, errors: list[dict]):
    """(the matrix, its row count): JSON rows or a decoded .npy array whose rows have the
    layer's width. The matrix is None (with an error) when they do not; the count is None
    only when the value could not be read at all."""
    if isinstance(value, NpyArray):
        array = decode_npy(value.npy, loc, errors)
        if array is None:
            return None, None
        if array.shape[1] != width:
            errors.append(
                field_error(
                    loc,
                    f"expected rows of {width} values ({layer}), "
                    f"got an array of shape {array.shape}",
                    "size_mismatch",
                )
            )
            return None, len(array)
        return array, len(array)
    return (value if check_rows(value, loc, width, layer, errors) else None), len(value)


def decode_npy(text: str, loc: tuple, errors: list[dict]) -> np.ndarray | None:
    """The 2-D array of finite numbers in a base64 .npy file, or None and an error naming
    the field. The header is read and checked against the data's length before anything is
    allocated, so a header that claims a huge shape costs nothing; nothing is unpickled."""
    where = (*loc, "npy")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        errors.append(field_error(where, "expected base64 (RFC 4648) of a .npy file", "npy"))
        return None
    stream = io.BytesIO(raw)
    try:
        version = npy_format.read_magic(stream)
        read_header = {
            (1, 0): npy_format.read_array_header_1_0,
            (2, 0): npy_format.read_array_header_2_0,
        }[version]
        shape, fortran_order, dtype = read_header(stream)
    except (ValueError, KeyError, EOFError, SyntaxError, TypeError):
        message = "expected a .npy file (format 1.0 or 2.0, as numpy.save writes)"
        errors.append(field_error(where, message, "npy"))
        return None
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in "fiu":
        message = f"expected an array of floats or integers, got dtype {dtype.str!r}"
        errors.append(field_error(where, message, "npy"))
        return None
    if len(shape) != 2 or shape[0] < 1 or shape[1] < 1:
        message = (
            f"expected a 2-D array with at least one row (rows are samples), got shape {shape}"
        )
        errors.append(field_error(where, message, "npy"))
        return None
    data = memoryview(raw)[stream.tell() :]
    needed = shape[0] * shape[1] * dtype.itemsize
    if len(data) != needed:
        message = (
            f"the header's shape {shape} and dtype {dtype.str!r} need {needed} bytes of data, "
            f"the file has {len(data)}"
        )
        errors.append(field_error(where, message, "npy"))
        return None
    array = np.frombuffer(data, dtype=dtype)
    array = array.reshape(shape[::-1]).T if fortran_order else array.reshape(shape)
    if dtype.kind == "f":
        finite = np.isfinite(array).all(axis=1)
        if not finite.all():
            row = int(np.argmin(finite))
            errors.append(
                field_error((*loc, row), "expected finite numbers, found NaN or infinity", "npy")
            )
            return None
    return array
