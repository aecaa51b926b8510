"""The whole service against its own parts: what HTTP, Celery and the database cost.

    python benchmarks/service_bench.py [--stacks embedded,postgresql] [--quick] [--json PATH]
                                       [--load auto|wrk|python] [--profile DIR]

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
``--profile DIR`` records the API and the worker with py-spy during the tiny-job, GET, POST
and drain rows (``profiling.py``; not for figures either).

Beside this script: ``bench_stack.py`` starts a stack and waits as a client does,
``load.py`` makes the HTTP load, ``celery_baseline.py`` is the no-op Celery baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere; tests.support is part of the checkout

import profiling  # noqa: E402  (this folder's modules: profiling, bench_stack, ...)
from bench_stack import (  # noqa: E402
    ManagedProcess,
    Stack,
    cpu_seconds,
    log,
    moment,
    npy,
    open_stack,
    percentile,
    run_threads,
    split,
    submit,
    submit_and_wait,
    wait_drained,
)
from celery_baseline import SUBMIT_THREADS, CeleryBaseline  # noqa: E402
from load import Load, choose_tool, load_rate  # noqa: E402

from cli.dev import api_argv  # noqa: E402

STACKS = ("embedded", "postgresql")
LONG_JOB_PACE = 0.025  # a long job's client polls at most 40 times a second


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


# ------------------------------------------------------------------------------ job specs


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
