"""The real service as processes: gunicorn with the API, Celery workers, and an HTTP client."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

from cli.dev import api_argv, worker_argv

from .services import free_port

ROOT = Path(__file__).resolve().parents[2]
FINAL = ("succeeded", "failed", "cancelled")
# the processes started since the running test began: a failing test's report carries the end
# of each one's log (tests/conftest.py)
STARTED: list[ManagedProcess] = []


def _own_group_dies_with_us() -> None:
    """In the child: lead a process group (so tests can signal it whole) and get SIGKILL if
    the test run dies first, so no service outlives an interrupted session."""
    os.setsid()
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def service_env(**settings) -> dict[str, str]:
    """The environment of a service process: ours plus settings as UPPER_CASE variables."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    # tests start several workers on one host: none serves metrics unless its test asks
    env.setdefault("WORKER_METRICS_PORT", "0")
    for name, value in settings.items():
        env[name.upper()] = str(value)
    return env


class ManagedProcess:
    """A child process in its own process group, its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict, log_path: Path, cwd: Path = ROOT):
        self.name, self.argv, self.env, self.log_path, self.cwd = name, argv, env, log_path, cwd
        self.process: subprocess.Popen | None = None

    def start(self, ready_marker: str | None = None, timeout: float = 60.0) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_own_group_dies_with_us,
        )
        log.close()
        STARTED.append(self)
        if ready_marker:
            self.wait_for_output(ready_marker, timeout, offset)
        return self

    def output(self, offset: int = 0) -> str:
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def wait_for_output(self, marker: str, timeout: float, offset: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.output(offset):
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.output(offset)[-3000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"{self.name}: no {marker!r} in {timeout}s:\n{self.output()[-3000:]}")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole group: the process and every child it forked."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    def stop(self, grace: float = 10.0) -> None:
        if not self.alive:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()


def worker_process(env: dict, log_dir: Path, name: str) -> ManagedProcess:
    """The worker `make run` starts, on the queues named in env."""
    callbacks = env.get("CALLBACK_QUEUE") or f"{env['CONTROL_QUEUE']}.callbacks"
    queues = f"{env['TRAINING_QUEUE']},{env['CONTROL_QUEUE']},{callbacks}"
    concurrency = int(env.get("WORKER_CONCURRENCY") or 1)  # one pool child unless asked
    argv = worker_argv(None, f"{name}@%h", queues=queues, concurrency=concurrency)
    return ManagedProcess(name, argv, env, log_dir / f"{name}.log")


def start_worker(env: dict, log_dir: Path, name: str, **kwargs) -> ManagedProcess:
    return worker_process(env, log_dir, name, **kwargs).start(ready_marker=" ready.")


def start_api(env: dict, log_dir: Path, name: str = "api") -> tuple[ManagedProcess, str]:
    port = free_port()
    argv = api_argv(f"127.0.0.1:{port}")
    api = ManagedProcess(name, argv, env, log_dir / f"{name}.log").start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                return api, base
        # gunicorn listens before its worker has imported the app: on a loaded machine the
        # first requests can wait more than the 1 s timeout, which is not a failure to start
        except (requests.ConnectionError, requests.Timeout):
            time.sleep(0.1)
        if not api.alive:
            break
    raise RuntimeError(f"api did not start:\n{api.output()[-3000:]}")


def _session() -> requests.Session:
    """A session that sends a GET once more when its connection broke before an answer came:
    a server may close a kept-alive connection just as the next request goes out on it, and
    HTTP lets a client retry an idempotent request then (RFC 9112, section 9.3.1). Nothing
    else is sent twice, and no answer is retried for its status."""
    retry = Retry(
        total=1, connect=1, read=1, status=0, other=0, redirect=0,
        allowed_methods={"GET", "HEAD"}, raise_on_status=False,
    )  # fmt: skip
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry))
    return session


@dataclass
class Client:
    """requests with a base URL and a bearer token; helpers for polling jobs."""

    base: str
    token: str | None = None
    session: requests.Session = field(default_factory=_session)

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if self.token is not None:
            headers.setdefault("Authorization", f"Bearer {self.token}")
        return self.session.request(method, self.base + path, headers=headers, timeout=30, **kwargs)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def submit(self, spec: dict) -> dict:
        response = self.post("/v1/jobs", json=spec)
        assert response.status_code == 202, response.text
        return response.json()

    def job(self, job_id: str) -> dict:
        response = self.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait(self, job_id: str, statuses=FINAL, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in statuses:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']}: {job}")
            time.sleep(0.1)


def server_sent_events(response):
    """The events of a text/event-stream response as they arrive: a dict of each event's
    fields (id, event, data), comments left out."""
    fields = {}
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith(":"):
            continue
        if line:
            key, _, value = line.partition(": ")
            fields[key] = value
            continue
        yield fields
        fields = {}


def most_at_once(intervals) -> int:
    """The largest number of half-open [start, end) intervals that overlap at a moment."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = best = 0
    for _, step in points:
        now += step
        best = max(best, now)
    return best
