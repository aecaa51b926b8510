"""A job's stored arrays read back: the data a claimed job trains on (inline, or from its
data sets), its checkpoint, the weights it starts from, and its model. The reason to change
is how a job's data is laid out in storage.
"""

from __future__ import annotations

import io

import numpy as np
from sqlalchemy import and_, bindparam, select
from sqlalchemy.orm import Session

from backprop.spec import JobSpec
from core import validation_rows

from . import blobs
from .dataset_reader import read_member
from .jobs import JobConflict
from .models import Blob, BlobChunk, Dataset, Job

DATA_KINDS = ("inputs", "targets", "batch_sizes", "val_inputs", "val_targets")


def load_data_and_checkpoint(
    session: Session, job: Job
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """What a claimed job needs to train: its arrays and its checkpoint. One query finds the
    newest blob of each kind and brings the chunks of the small ones (``blobs.SMALL_BYTES``,
    a small job's data, state and start weights) with it; larger blobs are read after."""
    found, parts = {}, {}
    for row in session.execute(_CLAIMED_BLOBS, {"job_id": job.id}):
        found[row.kind] = row  # ordered by id: the newest of each kind stays
        if row.data is not None:
            parts.setdefault(row.id, []).append(row.data)
    read = {}
    for kind, blob in found.items():
        if blob.size <= blobs.SMALL_BYTES:
            read[kind] = _decode(blob, b"".join(parts.get(blob.id, ())))
        elif blob.format == "npz":
            read[kind] = blobs.read_arrays(session, blob)
        else:
            read[kind] = blobs.read_array(session, blob)
    checkpoint = read.pop("checkpoint", None)
    arrays = read
    if job.spec.data.form == "dataset":
        arrays |= load_dataset_arrays(session, job.spec)
    return arrays, checkpoint


_blob, _chunk = Blob.__table__, BlobChunk.__table__

#: a job's blobs of the kinds a claim reads, oldest first, each small one with its chunks in
#: order (a large one comes as one row without data)
_CLAIMED_BLOBS = (
    select(_blob.c.id, _blob.c.kind, _blob.c.format, _blob.c.size, _chunk.c.data)
    .select_from(
        _blob.outerjoin(
            _chunk, and_(_chunk.c.blob_id == _blob.c.id, _blob.c.size <= blobs.SMALL_BYTES)
        )
    )
    .where(
        _blob.c.job_id == bindparam("job_id"),
        _blob.c.kind.in_(DATA_KINDS + ("checkpoint", "init")),
    )
    .order_by(_blob.c.id, _chunk.c.seq)
)


def _decode(blob, data: bytes) -> np.ndarray | dict[str, np.ndarray]:
    """A small blob's bytes as ``blobs.read_small`` reads them: ``.npz`` as a dict of
    arrays, ``.npy`` as one C-ordered numeric array."""
    if blob.format == "npz":
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    array = np.load(io.BytesIO(data), allow_pickle=False)
    if array.dtype.hasobject or not array.flags.c_contiguous:
        raise ValueError(f"blob {blob.id}: expected a C-ordered numeric array")
    return array


def load_dataset_arrays(session: Session, spec: JobSpec) -> dict[str, np.ndarray]:
    """A data set job's arrays in the job's dtype, each row read once into its place: the
    training rows, and the validation rows of its split or of its validation data set."""
    dtype, dataset_id = spec.options.dtype, spec.data.dataset_id
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise ValueError(f"data set {dataset_id} is gone")
    arrays = {}
    fraction = spec.options.validation_split
    if fraction:
        targets = read_member(session, dataset, "targets", dtype)
        split = validation_rows(targets, fraction, spec.seed)
        arrays["inputs"], arrays["val_inputs"] = read_member(
            session, dataset, "inputs", dtype, split=split
        )
        arrays["targets"], arrays["val_targets"] = targets[~split], targets[split]
        return arrays
    arrays["inputs"] = read_member(session, dataset, "inputs", dtype)
    arrays["targets"] = read_member(session, dataset, "targets", dtype)
    if spec.val_dataset_id:
        val = session.get(Dataset, spec.val_dataset_id)
        arrays["val_inputs"] = read_member(session, val, "inputs", dtype)
        arrays["val_targets"] = read_member(session, val, "targets", dtype)
    return arrays


def load_checkpoint(session: Session, job_id: str) -> dict[str, np.ndarray] | None:
    blob = blobs.find_blob(session, job_id, "checkpoint")
    return None if blob is None else blobs.read_arrays(session, blob)


def load_model(session: Session, job_id: str) -> dict[str, np.ndarray]:
    blob = blobs.find_blob(session, job_id, "model")
    if blob is None:
        raise JobConflict("the job has no model")
    return blobs.read_arrays(session, blob)
