"""An Idempotency-Key's record: kept once, replayed while it lives, replaced once it expired,
on both dialects."""

import uuid
from datetime import timedelta

import pytest

from store import idempotency
from store.db import get_database


@pytest.fixture
def db(database_url):
    return get_database(database_url)


def keep(db, tenant, key, answer, *, request_hash="h1", now=None, ttl=60):
    with db.session() as s:
        idempotency.remember(
            s, db, tenant=tenant, key=key, request_hash=request_hash, status_code=202,
            response=answer, job_id=None, ttl_seconds=ttl, now=now,
        )  # fmt: skip


def find(db, tenant, key, request_hash="h1"):
    with db.session() as s:
        return idempotency.lookup(s, db, tenant, key, request_hash)


def test_a_kept_answer_is_replayed_while_it_lives(db):
    tenant, key = f"t-{uuid.uuid4().hex[:6]}", "k"
    answer = {"id": "x", "history": [{"kind": "queued"}], "labels": {}}
    keep(db, tenant, key, answer)
    assert find(db, tenant, key) == idempotency.Replay(202, answer, None)
    assert find(db, f"other-{tenant}", key) is None  # a key is the tenant's own
    with pytest.raises(idempotency.KeyReused):
        find(db, tenant, key, request_hash="h2")


def test_a_live_key_is_taken_and_nothing_changes(db):
    tenant, key = f"t-{uuid.uuid4().hex[:6]}", "k"
    keep(db, tenant, key, {"n": 1})
    with pytest.raises(idempotency.KeyTaken):
        keep(db, tenant, key, {"n": 2})
    assert find(db, tenant, key).response == {"n": 1}


def test_an_expired_record_gives_way(db):
    tenant, key = f"t-{uuid.uuid4().hex[:6]}", "k"
    with db.session() as s:
        past = db.now(s) - timedelta(hours=2)
    keep(db, tenant, key, {"n": 1}, now=past, ttl=60)
    assert find(db, tenant, key) is None  # expired: not replayed
    keep(db, tenant, key, {"n": 2}, request_hash="h2")
    assert find(db, tenant, key, request_hash="h2").response == {"n": 2}
