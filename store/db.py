"""Engines and sessions: one engine per process, a session per request or per task.

A forked child (gunicorn worker, Celery pool process) must not reuse its parent's
connections; ``Database.after_fork`` drops them without closing the parent's sockets.
The reason to change is how a process connects to the database and bounds its waits.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache

from sqlalchemy import Connection, create_engine, event, text, update
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from backprop.settings import Settings, get_settings


class Database:
    def __init__(self, url: str):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            # a busy timeout instead of "database is locked" when api and worker write at once
            self.engine = create_engine(url, connect_args={"timeout": 30})
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            settings = get_settings()
            self.engine = create_engine(url, connect_args=postgres_bounds(settings))
            _ping_when_idle(self.engine, settings.db_ping_idle_seconds)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        # reads that need no transaction: no BEGIN and COMMIT round trips around them
        self.autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.reads = sessionmaker(self.autocommit, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction: committed on success, rolled back on error."""
        with self.sessions() as session, session.begin():
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reads only, each statement on its own (autocommit): what a poll
        needs, in the fewest round trips. Never write through it."""
        with self.reads() as session:
            yield session

    @contextmanager
    def reading_rows(self) -> Iterator[Connection]:
        """``reading`` for Core statements alone: a pooled connection with no ORM session
        around it, for the hottest reads (a poll)."""
        with self.autocommit.connect() as connection:
            yield connection

    def now(self, session: Session) -> datetime:
        """The database's clock (aware UTC): leases compare times from one clock only.

        SQLite lives on this machine, so its clock is this machine's.
        """
        if self.is_sqlite:
            return datetime.now(UTC)
        return session.execute(text("SELECT clock_timestamp()")).scalar_one().astimezone(UTC)

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def after_fork(self) -> None:
        self.engine.dispose(close=False)


def postgres_bounds(settings: Settings) -> dict:
    """libpq connection arguments that bound every wait on a PostgreSQL connection.

    - ``connect_timeout``: fail fast while the server is down (the API answers 503, workers
      retry).
    - TCP keepalives and ``tcp_user_timeout`` at this end: a call whose peer went silent (a
      cut network drops packets without a reset) fails after about TCP_TIMEOUT_SECONDS
      instead of waiting out the kernel's retransmissions (15 minutes and more); a worker
      then sees an outage, and its lease keeper stops it once the lease has run out.
    - The same at the server's end (``-c`` options, per session): a backend whose client
      vanished is ended, and so are its locks.
    - ``idle_in_transaction_session_timeout``: a client cut off inside a transaction holds
      its row and advisory locks for DB_IDLE_IN_TRANSACTION_SECONDS at most, so the job row
      it locked is claimable again (``FOR UPDATE SKIP LOCKED`` passes over a locked row).
    - ``lock_timeout``: nobody waits on another session's lock for longer than
      DB_LOCK_TIMEOUT_SECONDS; the statement fails as an outage and is retried.
    Unix-socket connections ignore the TCP arguments.
    """
    tcp_ms = int(settings.tcp_timeout_seconds * 1000)
    idle, interval, count = settings.tcp_keepalive
    server = {
        "idle_in_transaction_session_timeout": int(settings.db_idle_in_transaction_seconds * 1000),
        "lock_timeout": int(settings.db_lock_timeout_seconds * 1000),
        "tcp_user_timeout": tcp_ms,
        "tcp_keepalives_idle": idle,
        "tcp_keepalives_interval": interval,
        "tcp_keepalives_count": count,
    }
    return {
        "connect_timeout": 3,
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": interval,
        "keepalives_count": count,
        "tcp_user_timeout": tcp_ms,
        "options": " ".join(f"-c {name}={value}" for name, value in server.items()),
    }


def _ping_when_idle(engine, idle_seconds: float) -> None:
    """Ping a pooled connection before use once it has been idle ``idle_seconds`` (the
    server may have restarted or cut it meanwhile; a dead one is replaced, as with
    ``pool_pre_ping``). A connection back in the pool for less than that is trusted: busy
    processes, whose connections come and go every few milliseconds, save the ping's round
    trip on every request. A connection that died in that short while fails its statement
    as an outage (the API answers 503, a worker retries), and the pool replaces it."""

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_connection, record) -> None:
        record.info["returned"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_connection, record, _proxy) -> None:
        returned = record.info.get("returned")
        if returned is None or time.monotonic() - returned < idle_seconds:
            return  # new, or in use a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)  # what pool_pre_ping runs
        except Exception as exc:  # the pool drops it and checks out another
            raise DisconnectionError(str(exc)) from exc


def lock_rows(session: Session, column, ids: list[str]) -> None:
    """Lock the rows of ``column``'s table with these ids, changing nothing (``column`` is
    set to itself: a row lock on PostgreSQL, the write lock on SQLite), before checking who
    needs them (``store.sweeps._hold`` takes the other side)."""
    if ids:
        model = column.class_
        session.execute(
            update(model)
            .where(model.id.in_(ids))
            .values({column: column})
            .execution_options(synchronize_session=False)
        )


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def is_outage(exc: BaseException) -> bool:
    """True for errors that mean 'the database is unreachable', not 'the query is wrong'."""
    if isinstance(exc, OperationalError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


@lru_cache(maxsize=4)
def get_database(url: str) -> Database:
    """The process's Database for a URL (engines are pooled, so one per process)."""
    return Database(url)
