"""A pooled PostgreSQL connection is pinged before use only after it sat idle
(store.db._ping_when_idle): a busy process saves the round trip, and a connection the
server ended while it was idle is replaced without the caller seeing an error."""

from __future__ import annotations

import time

import psycopg
from sqlalchemy import create_engine, event, text

from store.db import _ping_when_idle
from tests.support import services


def test_an_idle_connection_the_server_ended_is_replaced_and_a_busy_one_is_not_pinged(pg_admin):
    url = services.sqlalchemy_url(services.create_database(pg_admin))
    engine = create_engine(url)
    _ping_when_idle(engine, 0.3)
    statements, pings = [], []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    ping = engine.dialect.do_ping
    engine.dialect.do_ping = lambda dbapi_connection: pings.append(1) or ping(dbapi_connection)
    try:
        with engine.connect() as connection:
            first = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        # used again at once: no ping, the same connection
        for _ in range(5):
            with engine.connect() as connection:
                assert connection.execute(text("SELECT pg_backend_pid()")).scalar_one() == first
        assert pings == []
        # the server ends the idle connection; after the idle time it is pinged, found
        # dead and replaced: the caller gets an answer, from a new backend
        with psycopg.connect(pg_admin, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (first,))
        time.sleep(0.4)
        with engine.connect() as connection:
            second = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert second != first and len(pings) == 1  # the failed ping; the new one needs none
    finally:
        engine.dispose()
        services.drop_database(pg_admin, url.replace("+psycopg", ""))
    # the ping goes through the DBAPI cursor, not the engine: only the test's statements show
    assert statements == ["SELECT pg_backend_pid()"] * 7
