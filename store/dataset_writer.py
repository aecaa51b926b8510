"""Writing a data set's members: each (``inputs``, ``targets``) a C-ordered 2-D array kept as
raw bytes in ``dataset_chunk`` rows of ``chunk_bytes`` each, its shape and dtype in the
``dataset`` row. The reason to change is what an upload is checked for or how its bytes are
stored.

Writing goes member by member through ``MemberWriter``, which checks the bytes as they
arrive (finite floats, whole rows) and never holds more than a chunk. The content hash
(``sha256``) covers each member's name, dtype, shape and bytes: the same arrays uploaded
again, in any container, are the same data set.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import insert
from sqlalchemy.orm import Session

from .datasets import MEMBERS
from .models import Dataset, DatasetChunk, utcnow


class DatasetInvalid(ValueError):
    """The upload breaks a rule; ``errors`` are FieldError dicts, ``status`` 400 or 422."""

    def __init__(self, status: int, loc: tuple, msg: str, kind: str = "dataset"):
        self.status = status
        where = ".".join(str(p) for p in loc) or "body"
        self.errors = [{"loc": list(loc), "field": where, "msg": msg, "type": kind}]
        super().__init__(f"{where}: {msg}")


def accepted_dtype(dtype: np.dtype, member: str) -> np.dtype:
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in "fiu":
        raise DatasetInvalid(
            422,
            (member,),
            f"expected an array of floats or integers, got dtype {dtype.str!r}"
            + (" (a pickled object array is never loaded)" if dtype.hasobject else ""),
        )
    return dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype


class ChunkSink:
    """Where a builder's chunk rows go. On PostgreSQL a thread of its own writes them on the
    session's connection while the caller reads and checks the next ones (at most
    ``depth`` chunks wait between the two, so memory stays bounded); the caller touches the
    session again only after ``drain()``. On SQLite the rows are written in line."""

    INSERT = "INSERT INTO dataset_chunk (dataset_id, member, seq, data) VALUES (%s, %s, %s, %s)"

    def __init__(self, session: Session, depth: int = 4):
        self.session = session
        self._threaded = session.get_bind().dialect.name == "postgresql"
        self._failed: BaseException | None = None
        if self._threaded:
            self._raw = session.connection().connection.driver_connection
            self._queue: queue.Queue = queue.Queue(maxsize=depth)
            self._thread = threading.Thread(target=self._write, daemon=True)
            self._thread.start()

    def put(self, dataset_id: str, member: str, seq: int, data: bytes) -> None:
        if not self._threaded:
            row = dict(dataset_id=dataset_id, member=member, seq=seq, data=data)
            self.session.execute(insert(DatasetChunk), [row])
            return
        if self._failed is not None:
            raise self._failed
        self._queue.put((dataset_id, member, seq, data))

    def drain(self) -> None:
        """Wait for every row to be written; re-raise the writer's error, if any."""
        if self._threaded and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._failed is not None:
            raise self._failed

    def _write(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._failed is None:
                try:
                    self._raw.execute(self.INSERT, item)
                except BaseException as exc:  # re-raised in the caller's thread
                    self._failed = exc


@dataclass
class MemberWriter:
    """One member's raw bytes into chunk rows, checked as they arrive.

    ``rows`` may be None (a CSV's length is known at its end); ``columns`` is fixed.
    Big-endian input is swapped to little-endian row by row; floats must be finite.
    """

    sink: ChunkSink
    dataset_id: str
    member: str
    columns: int
    dtype: np.dtype  # as given; stored little-endian
    rows: int | None
    chunk_bytes: int
    hasher: object = field(default_factory=hashlib.sha256)
    size: int = 0
    # what a job's checks need later without reading the data again
    low: float = float("inf")
    high: float = float("-inf")
    one_hot: bool = True
    rows_sum_to_one: bool = True
    _pending: bytearray = field(default_factory=bytearray)
    _seq: int = 0
    spend: Callable[[int], None] | None = None  # the builder's count of every member's bytes

    def __post_init__(self):
        self.stored = accepted_dtype(self.dtype, self.member)
        self.row_bytes = self.columns * self.dtype.itemsize
        self.column_sums = np.zeros(max(self.columns, 1))
        if self.columns < 1:
            raise DatasetInvalid(422, (self.member,), "expected at least one column")
        # whole rows per chunk, so that any chunk can be checked and converted alone
        self.chunk_bytes = max(1, self.chunk_bytes // self.row_bytes) * self.row_bytes

    def write(self, data) -> None:
        data = memoryview(data).cast("B")
        self.size += len(data)
        if self.spend is not None:
            self.spend(len(data))
        if self.rows is not None and self.size > self.rows * self.row_bytes:
            raise DatasetInvalid(
                422, (self.member,), f"more data than its shape ({self.rows}, {self.columns}) holds"
            )
        self._pending += data
        while len(self._pending) >= self.chunk_bytes:
            self._emit(bytes(self._pending[: self.chunk_bytes]))
            del self._pending[: self.chunk_bytes]

    def summary(self, rows: int) -> dict:
        info = {
            "shape": [rows, self.columns],
            "dtype": self.stored.str,
            "min": self.low,
            "max": self.high,
        }
        if self.member == "targets":
            info["rows_sum_to_one"] = self.rows_sum_to_one
            info["one_hot"] = self.one_hot and self.columns > 1
        if info.get("one_hot"):
            info["class_counts"] = [int(n) for n in self.column_sums]
        return info

    def close(self) -> int:
        """Writes the rest; returns the number of rows."""
        if len(self._pending) % self.row_bytes:
            raise DatasetInvalid(422, (self.member,), "the data ends inside a row")
        if self._pending:
            self._emit(bytes(self._pending))
            self._pending.clear()
        rows = self.size // self.row_bytes
        if self.rows is not None and rows != self.rows:
            raise DatasetInvalid(
                422,
                (self.member,),
                f"its shape ({self.rows}, {self.columns}) needs {self.rows * self.row_bytes} "
                f"bytes, the data has {self.size}",
            )
        if rows < 1:
            raise DatasetInvalid(422, (self.member,), "expected at least one row")
        return rows

    def _emit(self, chunk: bytes) -> None:
        values = np.frombuffer(chunk, dtype=self.dtype)
        if self.stored.kind == "f" and not np.isfinite(values).all():
            first = self._seq * (self.chunk_bytes // self.row_bytes)
            row = first + int(np.argmin(np.isfinite(values).reshape(-1, self.columns).all(1)))
            raise DatasetInvalid(
                422, (self.member, row), "expected finite numbers, found NaN or infinity"
            )
        if self.stored != self.dtype:
            chunk = values.astype(self.stored).tobytes()
        block = values.reshape(-1, self.columns)
        if block.size:
            self.low = min(self.low, float(block.min()))
            self.high = max(self.high, float(block.max()))
            if self.member == "targets":  # what a job's cost and a split need to know
                sums = block.sum(axis=1, dtype=np.float64)
                self.rows_sum_to_one &= bool(np.allclose(sums, 1.0))
                self.one_hot &= bool(((block == 0) | (block == 1)).all() and (sums == 1).all())
                self.column_sums += block.sum(axis=0, dtype=np.float64)
        self.hasher.update(chunk)
        self.sink.put(self.dataset_id, self.member, self._seq, chunk)
        self._seq += 1


class DatasetBuilder:
    """Builds one data set in the caller's transaction: ``member()`` for each of inputs and
    targets, then ``finish()``. A failure anywhere leaves the rollback to the caller."""

    def __init__(
        self,
        session: Session,
        tenant: str,
        name,
        labels,
        chunk_bytes: int,
        *,
        max_columns: int | None = None,
        max_bytes: int | None = None,
    ):
        """``max_columns`` bounds a row (and so what is buffered of it); ``max_bytes`` bounds
        the bytes of both members together, counted as they arrive (decompressed), so an
        upload stops as soon as it passes the limit or the tenant's remaining quota."""
        self.session, self.chunk_bytes = session, chunk_bytes
        self.max_columns, self.max_bytes, self.received = max_columns, max_bytes, 0
        self.row = Dataset(
            id=str(uuid.uuid4()),
            tenant=tenant,
            name=name,
            labels=labels or {},
            samples=0,
            members={},
            bytes=0,
            sha256=f"pending-{uuid.uuid4().hex}",  # unique until finish() sets the real one
            created_at=utcnow(),
        )
        session.add(self.row)
        session.flush()
        self.sink = ChunkSink(session)
        self.writers: dict[str, MemberWriter] = {}
        self.rows: dict[str, int] = {}

    def member(self, name: str, columns: int, dtype, rows: int | None = None) -> MemberWriter:
        if name not in MEMBERS:
            raise DatasetInvalid(
                422, (name,), "unexpected member: a data set holds inputs and targets only"
            )
        if name in self.writers:
            raise DatasetInvalid(422, (name,), "the member appears twice")
        if self.max_columns is not None and columns > self.max_columns:
            raise DatasetInvalid(
                422,
                (name,),
                f"{columns} columns, at most {self.max_columns} (MAX_LAYER_WIDTH: no network "
                "could take more)",
            )
        if rows is not None and self.max_bytes is not None:
            declared = rows * columns * np.dtype(dtype).itemsize
            if self.received + declared > self.max_bytes:
                self._too_large(self.received + declared)
        other = self.writers.get("targets" if name == "inputs" else "inputs")
        if rows is not None and other is not None and other.rows not in (None, rows):
            raise DatasetInvalid(
                422,
                ("targets",),
                f"expected {other.rows if name == 'targets' else rows} rows (one per input "
                f"row), got {rows if name == 'targets' else other.rows}",
            )
        writer = MemberWriter(
            self.sink,
            self.row.id,
            name,
            columns,
            np.dtype(dtype),
            rows,
            self.chunk_bytes,
            spend=self._spend,
        )
        self.writers[name] = writer
        return writer

    def _spend(self, size: int) -> None:
        self.received += size
        if self.max_bytes is not None and self.received > self.max_bytes:
            self._too_large(self.received)

    def _too_large(self, size: int) -> None:
        raise DatasetInvalid(
            413,
            (),
            f"the data set would take {size} bytes or more: the limit is {self.max_bytes} "
            "(MAX_DATASET_BYTES, or what is left of the tenant's storage quota)",
            "too_large",
        )

    def close_member(self, name: str) -> None:
        self.rows[name] = self.writers[name].close()

    def abandon(self) -> None:
        """Stop the sink's thread after a failure (the caller rolls back)."""
        try:
            self.sink.drain()
        except Exception:
            pass

    def finish(self, classes: list | None = None) -> Dataset:
        self.sink.drain()
        for name in MEMBERS:
            if name not in self.rows:
                raise DatasetInvalid(422, (name,), "missing: a data set needs inputs and targets")
        if self.rows["inputs"] != self.rows["targets"]:
            raise DatasetInvalid(
                422,
                ("targets",),
                f"expected {self.rows['inputs']} rows (one per input row), "
                f"got {self.rows['targets']}",
            )
        content = hashlib.sha256()
        members = {}
        for name in MEMBERS:
            w = self.writers[name]
            members[name] = w.summary(self.rows[name])
            content.update(f"{name}:{w.stored.str}:{self.rows[name]}x{w.columns}:".encode())
            content.update(w.hasher.digest())
        self.row.members = members
        self.row.samples = self.rows["inputs"]
        self.row.bytes = sum(w.size for w in self.writers.values())
        self.sha256 = self.row.sha256 = content.hexdigest()
        self.row.classes = classes
        self.session.flush()
        return self.row
