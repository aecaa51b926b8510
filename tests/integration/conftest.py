"""The whole service as processes: gunicorn + API, a Celery worker, Redis, PostgreSQL/SQLite."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import pytest

from tests.conftest import drop, make_token, new_database
from tests.support.services import free_port
from tests.support.stack import Client, ManagedProcess, service_env, start_api, start_worker


@dataclass
class Stack:
    base: str
    database_url: str
    env: dict
    worker: ManagedProcess
    api: ManagedProcess
    tokens: dict[str, str]

    def client(self, tenant: str = "alice") -> Client:
        return Client(self.base, self.tokens[tenant])


@pytest.fixture(scope="session")
def stack(test_settings, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    s = test_settings
    env = service_env(
        database_url=s.database_url,
        redis_url=s.redis_url,
        training_queue=s.training_queue,
        control_queue=s.control_queue,
        var_dir=s.var_dir,
        lease_seconds=5,
        heartbeat_seconds=0.2,
        requeue_after_seconds=10,
        max_content_length=4 * 2**20,
        max_queued_jobs_per_tenant=50,
        auth_cache_seconds=1,
        auth_failure_limit="1000/minute",  # the corpus sends many bad tokens from one address
        callback_allow_private_networks=True,  # the callback tests' receiver is on loopback
        webhook_backoff_seconds=0.2,
        webhook_attempts=4,
    )
    worker = start_worker(env, logs, "worker")
    api, base = start_api(env, logs)
    tokens = {t: make_token(s.database_url, t) for t in ("alice", "bob")}
    yield Stack(base, s.database_url, env, worker, api, tokens)
    api.stop()
    worker.stop()


@pytest.fixture
def own_env(stack, request, tmp_path):
    """The session stack's environment with a database and queues of this test alone, for
    processes it starts itself: no other test's job, reconciler or callback touches them."""
    kind = "sqlite" if stack.database_url.startswith("sqlite") else "postgresql"
    admin = request.getfixturevalue("pg_admin") if kind == "postgresql" else None
    database_url = new_database(kind, admin, tmp_path)
    tag = uuid.uuid4().hex[:8]
    yield stack.env | {
        "DATABASE_URL": database_url,
        "TRAINING_QUEUE": f"training-{tag}",
        "CONTROL_QUEUE": f"control-{tag}",
        "CALLBACK_QUEUE": f"callbacks-{tag}",
    }
    drop(kind, admin, database_url)


@pytest.fixture
def make_run(tmp_path):
    """`make run` as a user starts it, with its state under tmp_path/var and short timings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "DATABASE_URL", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")
    }
    env.update(
        VAR_DIR=str(tmp_path / "var"),
        HEARTBEAT_SECONDS="0.5",
        LEASE_SECONDS="5",
        REQUEUE_AFTER_SECONDS="5",
        RECONCILE_SECONDS="2",
    )
    port = free_port()
    process = ManagedProcess(
        "make-run", ["make", "run", f"PORT={port}"], env, tmp_path / "make-run.log"
    )
    process.start(ready_marker="backprop-jobs is running at", timeout=180)
    yield process, f"http://127.0.0.1:{port}", tmp_path / "var"
    if process.alive:
        process.kill()
