"""A tenant's webhook secret made on first use by many deliveries at once: every one gets the
same secret, and none fails on the unique key (store.webhooks.secret_for)."""

from __future__ import annotations

import threading
import uuid

from store import webhooks
from store.db import get_database


def test_deliveries_at_once_all_get_the_one_secret_made_on_first_use(database_url):
    db, tenant = get_database(database_url), f"hooks-{uuid.uuid4().hex[:8]}"
    start, got, errors = threading.Barrier(6), [], []

    def first_use():
        start.wait()
        try:
            with db.session() as session:
                got.append(webhooks.secret_for(session, tenant))
        except Exception as exc:  # the race this guards against raised IntegrityError
            errors.append(exc)

    threads = [threading.Thread(target=first_use) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(got) == 6 and len(set(got)) == 1
    with db.session() as session:
        assert webhooks.secret_for(session, tenant) == got[0]
        rotated = webhooks.secret_for(session, tenant, rotate=True)
    assert rotated != got[0]
    with db.session() as session:
        assert webhooks.secret_for(session, tenant) == rotated
