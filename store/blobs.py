"""NumPy arrays as ``.npy``/``.npz`` byte streams in bounded chunks.

Writing streams the array's ``.npy`` header and its buffer into chunk rows, so no second
copy of the array is ever built. Reading an ``.npy`` blob parses the header from the
first chunk, allocates the array once and copies each chunk into place: the reader holds the
array and one chunk, never the whole byte stream next to it. The reason to change is how a job's
arrays are laid out in chunk rows.
"""

from __future__ import annotations

import io

import numpy as np
from sqlalchemy import delete, insert, literal, select
from sqlalchemy.orm import Session

from .models import Blob, BlobChunk, utcnow

_BLOB, _CHUNK = Blob.__table__, BlobChunk.__table__
# built once: Core on the tables, a fraction of the ORM's cost per statement
_INSERT_BLOBS = insert(_BLOB).returning(_BLOB.c.id, sort_by_parameter_order=True)
_INSERT_CHUNKS = insert(_CHUNK)


class _ChunkWriter:
    """A write-only file object that turns what it is given into chunk rows."""

    def __init__(self, session: Session, blob_id: int, chunk_bytes: int):
        self.session, self.blob_id, self.chunk_bytes = session, blob_id, chunk_bytes
        self.pending = bytearray()
        self.seq = 0
        self.size = 0

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        self.size += len(data)
        self.pending += data
        while len(self.pending) >= self.chunk_bytes:
            self._emit(bytes(self.pending[: self.chunk_bytes]))
            del self.pending[: self.chunk_bytes]
        return len(data)

    def close(self) -> None:
        if self.pending or self.seq == 0:
            self._emit(bytes(self.pending))
            self.pending.clear()

    def _emit(self, chunk: bytes) -> None:
        self.session.execute(
            insert(BlobChunk), [{"blob_id": self.blob_id, "seq": self.seq, "data": chunk}]
        )
        self.seq += 1


def _new_blob(session: Session, job_id: str, kind: str, fmt: str, size: int = 0) -> Blob:
    blob = Blob(job_id=job_id, kind=kind, format=fmt, size=size, created_at=utcnow())
    session.add(blob)
    session.flush()  # assigns blob.id
    return blob


def copy_blob(session: Session, source: Blob, job_id: str, kind: str) -> Blob:
    """A copy of ``source`` as the job's ``kind``, made inside the database: its chunks are
    copied by one INSERT ... SELECT, never read into this process."""
    blob = _new_blob(session, job_id, kind, source.format, size=source.size)
    chunks = select(literal(blob.id), BlobChunk.seq, BlobChunk.data).where(
        BlobChunk.blob_id == source.id
    )
    session.execute(insert(BlobChunk).from_select(["blob_id", "seq", "data"], chunks))
    return blob


def _npy_header(array: np.ndarray) -> bytes:
    """The ``.npy`` header ``numpy.save`` writes for a C-ordered array (format 1.0)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    return header.getvalue()


def write_array(
    session: Session, job_id: str, kind: str, array: np.ndarray, chunk_bytes: int
) -> Blob:
    """Store one array as ``.npy`` bytes (C order, no pickles), streamed in chunks."""
    array = np.ascontiguousarray(array)
    header = _npy_header(array)
    blob = _new_blob(session, job_id, kind, "npy", size=len(header) + array.nbytes)
    writer = _ChunkWriter(session, blob.id, chunk_bytes)
    writer.write(header)
    if array.size:
        writer.write(memoryview(array).cast("B"))
    writer.close()
    return blob


def write_npy_arrays(
    session: Session, job_id: str, arrays: dict[str, np.ndarray], chunk_bytes: int
) -> None:
    """Store several arrays as ``.npy`` blobs of one job. The small ones (one chunk each, the
    usual case of a submit) take one INSERT of their blob rows and one of their chunks."""
    small, large = npy_bytes(arrays, chunk_bytes)
    write_npy_parts(session, job_id, small, large, chunk_bytes)


def write_npy_parts(
    session: Session,
    job_id: str,
    small: dict[str, bytes],
    large: dict[str, np.ndarray],
    chunk_bytes: int,
) -> None:
    """``write_npy_arrays`` of arrays split by ``npy_bytes``."""
    for kind, array in large.items():
        write_array(session, job_id, kind, array, chunk_bytes)
    _insert_small(session, job_id, "npy", small)


def npy_bytes(
    arrays: dict[str, np.ndarray], chunk_bytes: int
) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    """The ``.npy`` bytes of the arrays that fit one chunk, and the larger arrays (streamed
    in chunks by ``write_array``)."""
    small, large = {}, {}
    for kind, array in arrays.items():
        array = np.ascontiguousarray(array)
        header = _npy_header(array)
        if len(header) + array.nbytes > chunk_bytes:
            large[kind] = array
        else:
            small[kind] = header + array.tobytes()
    return small, large


def _insert_small(session: Session, job_id: str, fmt: str, small: dict[str, bytes]) -> dict:
    """Blobs of one chunk each: one INSERT of their rows, one of their chunks. Returns each
    kind's blob id."""
    if not small:
        return {}
    now = utcnow()
    rows = session.execute(
        _INSERT_BLOBS,
        [
            dict(job_id=job_id, kind=kind, format=fmt, size=len(data), created_at=now)
            for kind, data in small.items()
        ],
    ).scalars()
    ids = dict(zip(small, rows))
    session.execute(
        _INSERT_CHUNKS,
        [dict(blob_id=ids[kind], seq=0, data=data) for kind, data in small.items()],
    )
    return ids


def one_chunk_blobs_sql(job_id: str, tenant: str, fmt: str, after: str = "") -> str:
    """PostgreSQL: the CTEs ``blob_rows`` and ``chunk_rows`` of a statement that stores
    blobs of one chunk each, bound as arrays in order (``:blob_kinds``, ``:blob_sizes``,
    ``:blob_data``) and ``:blobs_at``. ``job_id`` and ``tenant`` are the SQL naming the job
    and its tenant (given, since the database cannot fill the tenant in from a job row the
    same statement writes), ``fmt`` the blobs' format, ``after`` a CTE the rows depend on
    (none written when it has no row); ``blob_rows`` returns each blob's id and kind."""
    source = f"{after}, " if after else ""
    return f"""blob_rows AS (
  INSERT INTO blob (job_id, tenant, kind, format, size, created_at)
  SELECT {job_id}, {tenant}, b.kind, '{fmt}', b.size, :blobs_at
  FROM {source}unnest(CAST(:blob_kinds AS text[]), CAST(:blob_sizes AS bigint[]))
    WITH ORDINALITY AS b(kind, size, n)
  ORDER BY b.n
  RETURNING id, kind
), chunk_rows AS (
  INSERT INTO blob_chunk (blob_id, seq, data)
  SELECT blob_rows.id, 0, d.data
  FROM blob_rows JOIN unnest(CAST(:blob_kinds AS text[]), CAST(:blob_data AS bytea[]))
    AS d(kind, data) USING (kind)
)"""


def write_npz_blobs(
    session: Session, job_id: str, named: dict[str, dict[str, np.ndarray]], chunk_bytes: int
) -> dict[str, int]:
    """Store several sets of named arrays, one ``.npz`` blob of each ``kind`` (a job's end:
    its final state and its model). The small ones take one INSERT of their blob rows and
    one of their chunks. Returns each kind's blob id."""
    small, large = npz_bytes(named, chunk_bytes)
    ids = {kind: write_npz(session, job_id, kind, buffer, chunk_bytes).id
           for kind, buffer in large.items()}  # fmt: skip
    return ids | _insert_small(session, job_id, "npz", small)


def npz_bytes(
    named: dict[str, dict[str, np.ndarray]], chunk_bytes: int
) -> tuple[dict[str, bytes], dict[str, io.BytesIO]]:
    """Each kind's named arrays as the ``.npz`` bytes a blob stores, split into those of one
    chunk (bytes, ``_insert_small``'s or one statement's) and larger ones (buffers, for
    ``write_npz``): every set is serialized once."""
    small, large = {}, {}
    for kind, arrays in named.items():
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        if buffer.tell() > chunk_bytes:
            large[kind] = buffer
        else:
            small[kind] = buffer.getvalue()
    return small, large


def write_arrays(
    session: Session, job_id: str, kind: str, arrays: dict[str, np.ndarray], chunk_bytes: int
) -> Blob:
    """Store named arrays as one ``.npz`` (checkpoints, models: read whole, kept small)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return write_npz(session, job_id, kind, buffer, chunk_bytes)


def write_npz(session: Session, job_id: str, kind: str, buffer: io.BytesIO, chunk_bytes: int):
    """Store an ``.npz`` already serialized into ``buffer`` as the job's ``kind``, in
    chunks."""
    blob = _new_blob(session, job_id, kind, "npz", size=buffer.tell())
    writer = _ChunkWriter(session, blob.id, chunk_bytes)
    writer.write(buffer.getbuffer())
    writer.close()
    return blob


STREAM_ROWS = 8


def _chunks(session: Session, blob: Blob):
    query = select(BlobChunk.data).where(BlobChunk.blob_id == blob.id).order_by(BlobChunk.seq)
    if blob.size > STREAM_ROWS * 2**20:
        # stream rows instead of fetching them all (a server-side cursor on PostgreSQL,
        # which costs round trips of its own: small blobs come in one fetch)
        query = query.execution_options(yield_per=STREAM_ROWS)
    return session.scalars(query)


def read_small(session: Session, found: dict[str, Blob]) -> dict[str, np.ndarray | dict]:
    """The blobs of one chunk each (the usual size of a small job's data and state) read in
    one query: ``.npy`` ones as arrays, ``.npz`` ones as dicts of arrays. Larger blobs are
    left out, for ``read_array`` and ``read_arrays``."""
    small = {blob.id: kind for kind, blob in found.items() if blob.size <= SMALL_BYTES}
    if not small:
        return {}
    rows = session.execute(
        select(BlobChunk.blob_id, BlobChunk.seq, BlobChunk.data).where(BlobChunk.blob_id.in_(small))
    ).all()
    parts: dict[int, list] = {}
    for blob_id, seq, data in rows:
        parts.setdefault(blob_id, []).append((seq, data))
    out = {}
    for blob_id, kind in small.items():
        chunks = [data for _, data in sorted(parts.get(blob_id, []))]
        data = b"".join(chunks)
        if found[kind].format == "npz":
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                out[kind] = {name: npz[name] for name in npz.files}
        else:
            out[kind] = np.load(io.BytesIO(data), allow_pickle=False)
            if out[kind].dtype.hasobject or not out[kind].flags.c_contiguous:
                raise ValueError(f"blob {blob_id}: expected a C-ordered numeric array")
    return out


#: blobs up to this size are read together (``read_small``)
SMALL_BYTES = 64 * 1024


def read_array(session: Session, blob: Blob) -> np.ndarray:
    """Load an ``.npy`` blob into one freshly allocated array."""
    chunks = iter(_chunks(session, blob))
    first = next(chunks)
    header = io.BytesIO(first)
    version = np.lib.format.read_magic(header)
    read_header = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }.get(version)
    if read_header is None:
        raise ValueError(f"blob {blob.id}: unsupported .npy version {version}")
    shape, fortran_order, dtype = read_header(header)
    if fortran_order or dtype.hasobject:
        raise ValueError(f"blob {blob.id}: expected a C-ordered numeric array")
    array = np.empty(shape, dtype=dtype)
    target = memoryview(array).cast("B") if array.size else memoryview(b"")
    filled = 0
    for chunk in _prepend(first[header.tell() :], chunks):
        target[filled : filled + len(chunk)] = chunk
        filled += len(chunk)
    if filled != array.nbytes:
        raise ValueError(f"blob {blob.id}: {filled} bytes stored, {array.nbytes} expected")
    return array


def read_arrays(session: Session, blob: Blob) -> dict[str, np.ndarray]:
    """Load an ``.npz`` blob as a dict of arrays."""
    data = b"".join(_chunks(session, blob))
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def find_blobs(session: Session, job_id: str, kinds: tuple[str, ...]) -> dict[str, Blob]:
    """The newest blob of each of these kinds, in one query."""
    found: dict[str, Blob] = {}
    query = select(Blob).where(Blob.job_id == job_id, Blob.kind.in_(kinds)).order_by(Blob.id)
    for blob in session.scalars(query):
        found[blob.kind] = blob
    return found


def find_blob(session: Session, job_id: str, kind: str) -> Blob | None:
    return session.scalars(
        select(Blob).where(Blob.job_id == job_id, Blob.kind == kind).order_by(Blob.id.desc())
    ).first()


def delete_blobs(session: Session, job_id: str, kind: str, keep: int | None = None) -> None:
    """Delete a job's blobs of one kind (their chunks go with them), except ``keep``."""
    ids = select(Blob.id).where(Blob.job_id == job_id, Blob.kind == kind)
    if keep is not None:
        ids = ids.where(Blob.id != keep)
    ids = list(session.scalars(ids))
    if ids:
        session.execute(delete(BlobChunk).where(BlobChunk.blob_id.in_(ids)))
        session.execute(delete(Blob).where(Blob.id.in_(ids)))


def _prepend(head: bytes, rest):
    if head:
        yield head
    yield from rest
