"""The baseline of the service's latency and drain rows: a no-op Celery task on an app of its
own (Redis broker and result backend, late acks, prefetch 1) run by a ``--pool solo``
worker. The reason to change is what that baseline is.

    python benchmarks/celery_baseline.py QUEUE BROKER_URL   (the worker, as CeleryBaseline runs it)
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench_stack import ManagedProcess, Stack, forget_queues, moment, run_threads, split

PING_TASK = "bench.noop"
SUBMIT_THREADS = 4  # the threads that publish a drain's tasks, as the service's drain submits


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
        argv = [sys.executable, str(Path(__file__).resolve()), self.queue, self.stack.redis_url]
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


if __name__ == "__main__":
    run_ping_worker(sys.argv[2], sys.argv[1])
