"""Reading a data set's members back: into one preallocated array of the job's dtype, as
blocks of whole rows, or chunk by chunk for a download. The reason to change is how stored
members are read.

Reading fills the array chunk by chunk, converting to the job's dtype and, for a validation
split, scattering each row straight into the training or the validation array, so a worker
holds the data once.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from .datasets import MEMBERS, DatasetNotFound
from .models import Dataset, DatasetChunk
from .npz import npz_stream


def _chunks(session: Session, dataset_id: str, member: str) -> Iterator[bytes]:
    query = (
        select(DatasetChunk.data)
        .where(DatasetChunk.dataset_id == dataset_id, DatasetChunk.member == member)
        .order_by(DatasetChunk.seq)
        .execution_options(yield_per=8)
    )
    yield from session.scalars(query)


def read_member(
    session: Session,
    dataset: Dataset,
    member: str,
    dtype=None,
    split: np.ndarray | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The member as one array of ``dtype`` (its own by default), filled chunk by chunk.

    With ``split`` (a boolean per row: True for validation), returns (training rows,
    validation rows) in their original order, each row written once, straight into place.
    """
    rows, columns = dataset.members[member]["shape"]
    dtype = np.dtype(dtype or dataset.members[member]["dtype"])
    blocks = row_blocks(session, dataset, member)
    if split is None:
        out = np.empty((rows, columns), dtype=dtype)
        row = 0
        for block in blocks:
            out[row : row + len(block)] = block
            row += len(block)
        _check_complete(dataset, member, row, rows)
        return out
    train = np.empty((rows - int(split.sum()), columns), dtype=dtype)
    val = np.empty((int(split.sum()), columns), dtype=dtype)
    # where each row goes: its index in train, or in val
    place = np.empty(rows, dtype=np.int64)
    place[~split] = np.arange(len(train))
    place[split] = np.arange(len(val))
    row = 0
    for block in blocks:
        where = slice(row, row + len(block))
        to_val = split[where]
        train[place[where][~to_val]] = block[~to_val]
        val[place[where][to_val]] = block[to_val]
        row += len(block)
    _check_complete(dataset, member, row, rows)
    return train, val


def _check_complete(dataset: Dataset, member: str, read: int, rows: int) -> None:
    if read != rows:
        raise ValueError(f"data set {dataset.id}: {member} has {read} of its {rows} rows")


def row_blocks(session: Session, dataset: Dataset, member: str, dtype=None) -> Iterator[np.ndarray]:
    """The member's rows, a stored chunk at a time (whole rows each), as ``dtype`` (by
    default as stored: views of the chunks, no copy)."""
    return as_rows(_chunks(session, dataset.id, member), dataset, member, dtype)


def as_rows(chunks: Iterator[bytes], dataset: Dataset, member: str, dtype=None):
    """Stored chunks of the member as blocks of whole rows (see ``row_blocks``)."""
    info = dataset.members[member]
    columns, stored = info["shape"][1], np.dtype(info["dtype"])
    for chunk in chunks:
        yield (
            np.frombuffer(chunk, dtype=stored)
            .reshape(-1, columns)
            .astype(dtype or stored, copy=False)
        )


#: chunks taken per read transaction when a download is sent (see ``detached_chunks``)
FETCH_CHUNKS = 8


def detached_chunks(database, dataset: Dataset, member: str) -> Iterator[bytes]:
    """The member's stored chunks for a download: ``FETCH_CHUNKS`` at a time, each handful in
    a short read of its own, so no database connection is held while the client takes its
    time over what was sent. Data sets do not change, but one may be deleted meanwhile: a
    member that ends short raises ``DatasetNotFound`` instead of ending the download as if
    complete (the server then cuts the connection, and the client sees it incomplete)."""
    info = dataset.members[member]
    expected = int(np.prod(info["shape"])) * np.dtype(info["dtype"]).itemsize
    sent, after = 0, -1
    while sent < expected:
        with database.reading() as session:
            rows = session.execute(
                select(DatasetChunk.seq, DatasetChunk.data)
                .where(
                    DatasetChunk.dataset_id == dataset.id,
                    DatasetChunk.member == member,
                    DatasetChunk.seq > after,
                )
                .order_by(DatasetChunk.seq)
                .limit(FETCH_CHUNKS)
            ).all()
        if not rows:
            raise DatasetNotFound(dataset.id)
        for _seq, data in rows:
            sent += len(data)
            yield data
        after = rows[-1].seq


def stream_npz(database, dataset: Dataset) -> Iterator[bytes]:
    """The data set as an ``.npz`` (``numpy.load`` reads it), produced chunk by chunk
    through ``detached_chunks``."""
    return npz_stream(
        (
            name,
            dataset.members[name]["dtype"],
            dataset.members[name]["shape"],
            detached_chunks(database, dataset, name),
        )
        for name in MEMBERS
    )
