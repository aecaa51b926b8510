"""A data set a sweep being stored needs, deleted at the same moment, on PostgreSQL and
SQLite: either the delete sees the sweep (DatasetInUse) or the sweep sees the data set
gone (SourceGone), never a sweep left needing a data set that is gone."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from sqlalchemy import update

from store import datasets, scheduling, sweeps
from store.db import get_database
from store.models import Dataset, Sweep, utcnow
from tests.support.specs import inline_spec


@pytest.fixture
def db(database_url):
    return get_database(database_url)


def stored_data_set(db, tenant: str) -> str:
    dataset_id = str(uuid.uuid4())
    with db.session() as s:
        s.add(
            Dataset(
                id=dataset_id, tenant=tenant, name=None, labels={}, samples=1, members={},
                bytes=0, sha256=uuid.uuid4().hex * 2, created_at=utcnow(),
            )
        )  # fmt: skip
    return dataset_id


def create(db, tenant: str, dataset_id: str) -> str:
    """A sweep that searches the data set (its trials are never released here)."""
    with db.session() as s:
        sweep, _ = scheduling.create_sweep(
            s, db, tenant=tenant, name=None, labels={},
            spec={
                "base": inline_spec().to_json(),
                "search": {"data.dataset_id": {"choice": [dataset_id]}},
                "objective": {"metric": "cost", "goal": "min"},
            },
            trials=0, max_parallel=1, dataset_id=None, val_dataset_id=None,
            searched_datasets=[dataset_id],
        )  # fmt: skip
        return sweep.id


def test_a_delete_holding_the_data_set_makes_the_sweep_see_it_gone(db):
    tenant = f"src-{uuid.uuid4().hex[:6]}"
    dataset_id = stored_data_set(db, tenant)
    deleting, outcome = threading.Event(), {}

    def delete_slowly():
        with db.session() as s:
            datasets.delete_dataset(s, tenant, dataset_id)  # its row is locked from here
            deleting.set()
            time.sleep(1.0)  # the sweep is being stored meanwhile

    thread = threading.Thread(target=delete_slowly)
    thread.start()
    assert deleting.wait(10)
    try:
        create(db, tenant, dataset_id)
    except sweeps.SourceGone as exc:
        outcome["gone"] = exc
    thread.join()
    assert outcome["gone"].field == ("search", "data.dataset_id")
    with db.session() as s:
        assert s.get(Dataset, dataset_id) is None
        assert s.query(Sweep).filter(Sweep.tenant == tenant).count() == 0


def test_a_stored_sweep_keeps_its_searched_data_set_from_deletion(db):
    tenant = f"src-{uuid.uuid4().hex[:6]}"
    dataset_id = stored_data_set(db, tenant)
    sweep_id = create(db, tenant, dataset_id)
    with db.session() as s:  # still running: trials to release (none are, here)
        s.execute(update(Sweep).where(Sweep.id == sweep_id).values(status="running"))
    with pytest.raises(datasets.DatasetInUse) as refused, db.session() as s:
        datasets.delete_dataset(s, tenant, dataset_id)
    assert f"sweep {sweep_id}" in str(refused.value.args[0])
