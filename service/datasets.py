"""A tenant's data sets: removal (uploads are parsed by the API and stored by
``store.datasets``). The reason to change is what deleting a data set must respect."""

from __future__ import annotations

from store import datasets

from .context import Context


def remove_dataset(ctx: Context, dataset_id: str) -> None:
    """Delete the tenant's data set (DatasetNotFound, or DatasetInUse naming who uses it)."""
    with ctx.db.session() as session:
        datasets.delete_dataset(session, ctx.tenant, dataset_id)
