"""Request bodies that become data sets, read as they stream in: ``.npz`` (zip of ``.npy``
members), CSV, or the JSON form of a job's inline data. Each parser feeds a
``store.dataset_writer.DatasetBuilder`` member by member, so the API process never holds the body;
any rule broken raises ``DatasetInvalid`` naming the member, row or column.
The reason to change is a data set's upload format, or how one is read."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator

import numpy as np
from numpy.lib import format as npy_format
from stream_unzip import UnzipError, stream_unzip

from store.dataset_writer import DatasetBuilder, DatasetInvalid

from .field_errors import SpecError
from .matrices import decode_npy, matrix_input
from .schemas.common import NpyArray

READ_BYTES = 1 << 20
# a 2-D array's .npy header is about 128 bytes; numpy itself reads at most 10,000
MAX_NPY_HEADER = 16 * 1024
NOT_NPY = "not a .npy array (numpy.save's format)"
CSV_BLOCK_ROWS = 4096
CSV_BLOCK_BYTES = 4 * 2**20


def body_chunks(stream, size: int = READ_BYTES) -> Iterator[bytes]:
    while True:
        chunk = stream.read(size)
        if not chunk:
            return
        yield chunk


# --------------------------------------------------------------------------------------- npz


def from_npz(builder: DatasetBuilder, chunks: Iterable[bytes]) -> None:
    """Each member ``inputs.npy`` / ``targets.npy`` (stored or deflated, as numpy.savez and
    numpy.savez_compressed write) is parsed and written as it is unzipped."""
    try:
        for raw_name, _size, member_chunks in stream_unzip(chunks):
            name = raw_name.decode("utf-8", "replace")
            _npy_member(builder, name.removesuffix(".npy"), member_chunks)
    except UnzipError as exc:
        raise DatasetInvalid(
            422,
            (),
            f"not a complete .npz file (a zip of .npy files, as numpy.savez writes): "
            f"{type(exc).__name__}",
            "npz",
        ) from None


def _npy_member(builder: DatasetBuilder, name: str, chunks: Iterator[bytes]) -> None:
    head = bytearray()
    chunks = iter(chunks)
    for chunk in chunks:  # gather the header: at most MAX_NPY_HEADER bytes
        head += chunk
        if len(head) >= 12 and len(head) >= (header_end := _header_length(head, name)):
            break
        if len(head) > MAX_NPY_HEADER:
            _header_length(head, name)  # says too long, or not a .npy
            raise DatasetInvalid(422, (name,), NOT_NPY, "npz")
    else:
        for _ in chunks:
            pass
        raise DatasetInvalid(422, (name,), NOT_NPY, "npz")
    stream = io.BytesIO(bytes(head[:header_end]))
    try:
        version = npy_format.read_magic(stream)
        read = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
        shape, fortran_order, dtype = read[version](stream)
    except (ValueError, KeyError, SyntaxError, TypeError, EOFError):
        raise DatasetInvalid(
            422, (name,), "not a .npy array (numpy.save's format)", "npz"
        ) from None
    if len(shape) != 2:
        raise DatasetInvalid(
            422, (name,), f"expected a 2-D array (rows are samples), got shape {shape}"
        )
    if fortran_order:
        raise DatasetInvalid(
            422, (name,), "expected a C-ordered array: save numpy.ascontiguousarray(array)"
        )
    writer = builder.member(name, shape[1], dtype, rows=shape[0])
    writer.write(bytes(head[header_end:]))
    for chunk in chunks:
        writer.write(chunk)
    builder.close_member(name)


def _header_length(head: bytearray, name: str) -> int:
    if head[:6] != b"\x93NUMPY":
        raise DatasetInvalid(422, (name,), NOT_NPY, "npz")
    major = head[6]
    if major == 1:
        length = 10 + int.from_bytes(head[8:10], "little")
    elif major in (2, 3):
        length = 12 + int.from_bytes(head[8:12], "little")
    else:
        raise DatasetInvalid(422, (name,), f"unsupported .npy format version {major}", "npz")
    if length > MAX_NPY_HEADER:  # refused before it is read: its length costs nothing
        raise DatasetInvalid(
            422, (name,), f"a .npy header of {length} bytes, at most {MAX_NPY_HEADER}", "npz"
        )
    return length


# --------------------------------------------------------------------------------------- csv


def from_csv(
    builder: DatasetBuilder,
    stream,
    *,
    targets: list[str] | None,
    label: str | None,
    dtype: str,
    max_classes: int,
) -> list | None:
    """A header row, then one sample per row. ``targets`` names the target columns, or
    ``label`` a class column that becomes one-hot targets (at most ``max_classes``
    classes); returns the classes (sorted). Rows are converted in blocks of at most
    CSV_BLOCK_BYTES."""
    if bool(targets) == bool(label):
        raise DatasetInvalid(
            422,
            ("query",),
            "name the target columns with ?targets=col1,col2 or a class column with "
            "?label=col (one of the two)",
        )
    text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
    reader = csv.reader(text)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DatasetInvalid(422, (), "the CSV is empty: expected a header row") from None
    except UnicodeDecodeError:
        raise DatasetInvalid(422, (), "the CSV is not UTF-8 text", "csv") from None
    wanted = targets or [label]
    missing = [c for c in wanted if c not in header]
    if missing:
        where = ("query", "targets") if targets else ("query", "label")
        raise DatasetInvalid(
            422,
            where,
            f"no column {missing[0]!r} in the header (columns: {', '.join(header)})",
        )
    target_at = [header.index(c) for c in wanted]
    input_at = [i for i in range(len(header)) if i not in target_at]
    if not input_at:
        raise DatasetInvalid(422, (), "every column is a target: no input columns are left")
    inputs = builder.member("inputs", len(input_at), dtype)
    target_rows = None if label else builder.member("targets", len(target_at), dtype)
    classes_seen: list[str] = []
    distinct: set[str] = set()
    width = (len(input_at) + len(target_at)) * np.dtype(dtype).itemsize
    block_rows = max(1, min(CSV_BLOCK_ROWS, CSV_BLOCK_BYTES // width))
    block_in = np.empty((block_rows, len(input_at)), dtype=dtype)
    block_out = np.empty((block_rows, len(target_at)), dtype=dtype)
    filled = 0
    line = 1
    try:
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise DatasetInvalid(
                    422,
                    ("body", f"line {line}"),
                    f"expected {len(header)} cells (as the header), got {len(row)}",
                    "csv",
                )
            block_in[filled] = [_number(row[i], line, header[i]) for i in input_at]
            if label:
                value = row[target_at[0]].strip()
                classes_seen.append(value)
                distinct.add(value)
                if len(distinct) > max_classes:
                    raise DatasetInvalid(
                        422,
                        ("query", "label"),
                        f"more than {max_classes} classes in column {label!r} (MAX_CLASSES)",
                    )
            else:
                block_out[filled] = [_number(row[i], line, header[i]) for i in target_at]
            filled += 1
            if filled == block_rows:
                inputs.write(block_in.tobytes())
                if target_rows is not None:
                    target_rows.write(block_out.tobytes())
                filled = 0
    except UnicodeDecodeError:
        raise DatasetInvalid(
            400, ("body", f"line {line}"), "the CSV is not UTF-8 text", "csv"
        ) from None
    except csv.Error as exc:
        raise DatasetInvalid(
            400, ("body", f"line {line}"), f"malformed CSV: {exc}", "csv"
        ) from None
    inputs.write(block_in[:filled].tobytes())
    if target_rows is not None:
        target_rows.write(block_out[:filled].tobytes())
    builder.close_member("inputs")
    if target_rows is not None:
        builder.close_member("targets")
        return None
    classes = sorted(set(classes_seen), key=_class_order)
    index = {c: i for i, c in enumerate(classes)}
    codes = np.fromiter((index[c] for c in classes_seen), dtype=np.int64, count=len(classes_seen))
    onehot = builder.member("targets", len(classes), dtype, rows=len(codes))
    rows = max(1, CSV_BLOCK_BYTES // (len(classes) * np.dtype(dtype).itemsize))
    for start in range(0, len(codes), rows):
        part = codes[start : start + rows]
        block = np.zeros((len(part), len(classes)), dtype=dtype)
        block[np.arange(len(part)), part] = 1
        onehot.write(block.tobytes())
    builder.close_member("targets")
    return [_class_value(c) for c in classes]


def _number(cell: str, line: int, column: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise DatasetInvalid(
            422,
            ("body", f"line {line}", column),
            f"expected a number, got {cell[:40]!r}",
            "csv",
        ) from None


def _class_order(value: str):
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, 0.0, value)


def _class_value(value: str):
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if number.is_integer() else number


# -------------------------------------------------------------------------------------- json


def from_json(builder: DatasetBuilder, body) -> None:
    """The JSON form of a job's inline data: ``inputs`` and ``targets`` as rows or npy."""
    errors: list[dict] = []
    arrays = {}
    for name in ("inputs", "targets"):
        value = getattr(body, name)
        if isinstance(value, NpyArray):
            arrays[name] = decode_npy(value.npy, (name,), errors)
        else:  # every row as wide as the first
            matrix, _ = matrix_input(value, (name,), len(value[0]), "as the first row", errors)
            arrays[name] = None if matrix is None else np.asarray(matrix, dtype=np.float64)
    if errors:
        raise SpecError(errors)
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        writer = builder.member(name, array.shape[1], array.dtype, rows=array.shape[0])
        writer.write(memoryview(array).cast("B"))
        builder.close_member(name)
