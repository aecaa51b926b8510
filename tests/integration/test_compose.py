"""docker-compose.yml: valid, and each service's own command and environment run the service.

Our machines have no Docker engine, so each service's command is started here as a process,
with the compose file's environment, pointed at the local PostgreSQL and Redis instead of the
compose hostnames; then a job goes through them.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import uuid

import pytest
import yaml

from tests.conftest import drop, new_database
from tests.support.services import free_port
from tests.support.stack import ROOT, Client, ManagedProcess, service_env

COMPOSE = ROOT / "docker-compose.yml"


def compose():
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_passes_docker_compose_config():
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (.ci/run installs Debian's package)")
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_compose_declares_the_stack():
    services = compose()["services"]
    assert set(services) >= {"postgres", "redis", "migrate", "api", "worker", "control", "beat"}
    for name in ("postgres", "redis", "api", "worker"):
        assert "healthcheck" in services[name], name
    assert services["migrate"]["command"] == ["alembic", "upgrade", "head"]
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert (
        services["postgres"].get("restart") == services["worker"].get("restart") == "unless-stopped"
    )
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command and "--maxmemory-policy noeviction" in redis_command
    assert "ports" not in services["worker"], "workers must scale with --scale worker=N"


def run_as_compose(service: dict, overrides: dict) -> tuple[list[str], dict]:
    """The service's argv (python tools from our venv) and its environment with overrides."""
    env = service_env(**{**service.get("environment", {}), **overrides})
    argv = list(service["command"])
    tool = {"alembic": "alembic", "gunicorn": "gunicorn", "celery": "celery"}[argv[0]]
    return [sys.executable, "-m", tool, *argv[1:]], env


@pytest.fixture
def pg_database(pg_admin, tmp_path):
    url = new_database("postgresql", pg_admin, tmp_path)
    drop_after = url
    yield url
    drop("postgresql", pg_admin, drop_after)


def test_each_compose_service_command_runs_a_job(pg_database, redis_url, tmp_path):
    services = compose()["services"]
    queue = f"training-compose-{uuid.uuid4().hex[:8]}"
    control = f"control-compose-{uuid.uuid4().hex[:8]}"
    overrides = {
        "DATABASE_URL": pg_database,
        "REDIS_URL": redis_url,
        "TRAINING_QUEUE": queue,
        "CONTROL_QUEUE": control,
        "VAR_DIR": str(tmp_path / "var"),  # the image's volume
    }
    processes = []
    try:
        argv, env = run_as_compose(services["migrate"], overrides)
        migrated = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True)
        assert migrated.returncode == 0, migrated.stderr

        port = free_port()
        argv, env = run_as_compose(services["api"], overrides)
        argv[argv.index("0.0.0.0:8000")] = f"127.0.0.1:{port}"
        api = ManagedProcess("api", argv, env, tmp_path / "api.log").start("Booting worker")
        processes.append(api)

        argv, env = run_as_compose(services["worker"], overrides)
        argv[argv.index("training")] = queue  # not the shared queues
        worker = ManagedProcess("worker", argv, env, tmp_path / "worker.log").start(" ready.")
        processes.append(worker)

        argv, env = run_as_compose(services["control"], overrides)
        argv[argv.index("celery", argv.index("--queues"))] = control
        reconciler = ManagedProcess("control", argv, env, tmp_path / "control.log")
        processes.append(reconciler.start(" ready."))

        argv, env = run_as_compose(services["beat"], overrides)
        argv[argv.index("/tmp/celerybeat-schedule")] = str(tmp_path / "beat-schedule")
        beat = ManagedProcess("beat", argv, env, tmp_path / "beat.log").start("beat: Starting")
        processes.append(beat)

        token = subprocess.run(
            [sys.executable, "-m", "cli", "tokens", "create", "--tenant", "compose"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        client = Client(f"http://127.0.0.1:{port}", token)
        _wait_ready(client)
        job = client.submit(
            {
                "structure": [2, 3, 1],
                "epochs": 5,
                "learning_rate": 2.0,
                "data": {
                    "inputs": [[0, 0], [0, 1], [1, 0], [1, 1]],
                    "targets": [[0], [1], [1], [0]],
                    "batch_size": 2,
                },
            }
        )
        done = client.wait(job["id"], timeout=60)
        assert done["status"] == "succeeded", done
        # beat's reconciler tasks run on the control worker, not on the training worker
        reconciler.wait_for_output("Task backprop.reconcile[", timeout=60)
        assert "Task backprop.reconcile[" not in worker.output()

        kind, shell_command = services["api"]["healthcheck"]["test"]
        assert kind == "CMD-SHELL"
        probe = [sys.executable, *shlex.split(shell_command)[1:]]  # python -c "..."
        probe[-1] = probe[-1].replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        assert subprocess.run(probe, env=env).returncode == 0
    finally:
        for process in reversed(processes):
            process.stop()


def _wait_ready(client: Client) -> None:
    import time

    for _ in range(100):
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.1)
    raise TimeoutError("api never became ready")
