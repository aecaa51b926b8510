"""The data set table: a tenant's data sets found, listed and deleted (never while a job or
a running sweep needs one), and what they store. The reason to change is what the data set
rows hold or how they are queried.

A data set is a tenant's inputs and targets, stored once and trained on by many jobs; its
members' bytes are written by ``store.dataset_writer`` and read by ``store.dataset_reader``.
"""

from __future__ import annotations

from sqlalchemy import func, or_, select, text
from sqlalchemy.orm import Session

from .db import lock_rows
from .models import QUEUED, RUNNING, Dataset, DatasetChunk, Job, Sweep, SweepDataset
from .paging import Page, page

MEMBERS = ("inputs", "targets")


class DatasetInUse(Exception):
    def __init__(self, job_ids: list[str]):
        self.job_ids = job_ids
        super().__init__(", ".join(job_ids))


class DatasetNotFound(LookupError):
    pass


def find_duplicate(session: Session, dataset: Dataset) -> Dataset | None:
    """An older data set of the same tenant with the same content."""
    return session.scalars(
        select(Dataset).where(
            Dataset.tenant == dataset.tenant,
            Dataset.sha256 == dataset.sha256,
            Dataset.id != dataset.id,
        )
    ).first()


def by_sha256(session: Session, tenant: str, sha256: str) -> Dataset | None:
    return session.scalars(
        select(Dataset).where(Dataset.tenant == tenant, Dataset.sha256 == sha256)
    ).first()


def get_dataset(session: Session, tenant: str, dataset_id: str) -> Dataset:
    found = session.scalars(
        select(Dataset).where(
            Dataset.id == dataset_id,
            Dataset.tenant == tenant,
            ~Dataset.sha256.startswith("pending-"),
        )
    ).first()
    if found is None:
        raise DatasetNotFound(dataset_id)
    return found


def list_datasets(session: Session, tenant: str, limit: int, cursor: str | None = None) -> Page:
    """The tenant's data sets, newest first, a page at a time (``store.paging``)."""
    return page(session, select(Dataset).where(Dataset.tenant == tenant), Dataset, limit, cursor)


def jobs_using(session: Session, dataset_id: str) -> list[str]:
    """Queued or running jobs that train on it (or validate on it), and running sweeps
    (``sweep <id>``) that will make more."""
    busy = list(
        session.scalars(
            select(Job.id).where(
                or_(Job.dataset_id == dataset_id, Job.val_dataset_id == dataset_id),
                Job.status.in_((QUEUED, RUNNING)),
            )
        )
    )
    searched = select(SweepDataset.sweep_id).where(SweepDataset.dataset_id == dataset_id)
    sweeps = session.scalars(
        select(Sweep.id).where(
            or_(
                Sweep.dataset_id == dataset_id,
                Sweep.val_dataset_id == dataset_id,
                Sweep.id.in_(searched),
            ),
            Sweep.status == RUNNING,
        )
    )
    return busy + [f"sweep {sweep_id}" for sweep_id in sweeps]


def delete_dataset(session: Session, tenant: str, dataset_id: str) -> None:
    """Deletes it and its chunks; raises DatasetInUse while a queued or running job uses it.
    Finished jobs that trained on it keep their models; their ``dataset_id`` stays."""
    dataset = get_dataset(session, tenant, dataset_id)
    lock_rows(session, Dataset.bytes, [dataset_id])  # a sweep being stored waits, or is seen
    busy = jobs_using(session, dataset_id)
    if busy:
        raise DatasetInUse(busy)
    for model, column in (
        (Job, Job.dataset_id),
        (Job, Job.val_dataset_id),
        (Sweep, Sweep.dataset_id),
        (Sweep, Sweep.val_dataset_id),
    ):
        session.query(model).filter(column == dataset_id).update(
            {column: None}, synchronize_session=False
        )
    session.query(SweepDataset).filter(SweepDataset.dataset_id == dataset_id).delete()
    session.query(DatasetChunk).filter(DatasetChunk.dataset_id == dataset_id).delete()
    session.delete(dataset)


def stored_bytes_in_turn(session: Session, tenant: str) -> int:
    """``stored_bytes`` counted in the tenant's turn: on PostgreSQL, concurrent uploads of
    one tenant take turns on an advisory lock (held until the commit), so each counts the
    ones committed before it and no two overshoot the quota together; on SQLite the upload's
    first INSERT already holds the database's single write lock until the commit."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(2, hashtext(:tenant))"), {"tenant": tenant}
        )
    return stored_bytes(session, tenant)


def stored_bytes(session: Session, tenant: str) -> int:
    total = session.scalar(
        select(func.coalesce(func.sum(Dataset.bytes), 0)).where(Dataset.tenant == tenant)
    )
    return int(total or 0)
