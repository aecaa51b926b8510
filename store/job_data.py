"""A job's stored arrays read back: the data a claimed job trains on (inline, or from its
data sets), its checkpoint, the weights it starts from, and its model. The reason to change
is how a job's data is laid out in storage.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy.orm import Session

from backprop.spec import JobSpec
from core import validation_rows

from . import blobs
from .dataset_reader import read_member
from .jobs import JobConflict
from .models import Dataset, Job

DATA_KINDS = ("inputs", "targets", "batch_sizes", "val_inputs", "val_targets")


def load_data_and_checkpoint(
    session: Session, job: Job
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """What a claimed job needs to train: its arrays and its checkpoint (one lookup)."""
    found = blobs.find_blobs(session, job.id, DATA_KINDS + ("checkpoint", "init"))
    read = blobs.read_small(session, found)  # a small job's blobs in one query
    for kind, blob in found.items():
        if kind not in read:
            read[kind] = (
                blobs.read_arrays(session, blob)
                if blob.format == "npz"
                else blobs.read_array(session, blob)
            )
    checkpoint = read.pop("checkpoint", None)
    arrays = read
    if job.spec.data.form == "dataset":
        arrays |= load_dataset_arrays(session, job.spec)
    return arrays, checkpoint


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
