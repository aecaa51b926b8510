"""docker-compose.yml itself, run by a compose tool on a container engine: what the README's
"Operating it" promises a team, step by step and in this order (the tests share one stack).

Run by the compose stage only (``make test-compose``, .ci/compose/stage.sh), which builds the
stand-in base images and the image, serves podman's Docker API and sets COMPOSE; marker
``compose``, deselected from ``make test``. Each step prints its time.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import time
from datetime import datetime

import numpy as np
import pytest

from tests.support.stack import FINAL, ROOT, Client

pytestmark = pytest.mark.compose

COMPOSE = [
    *shlex.split(os.environ.get("COMPOSE", "docker-compose")),
    "-f",
    str(ROOT / "docker-compose.yml"),
]
ENGINE = os.environ.get("CONTAINER_ENGINE", "podman")
API = "http://127.0.0.1:8000"
FLOWER = "http://127.0.0.1:5555"
XOR = {
    "inputs": [[0, 0], [0, 1], [1, 0], [1, 1]],
    "targets": [[0], [1], [1], [0]],
    "batch_size": 2,
}


def compose(*args: str, timeout: float = 600, quiet: bool = False) -> str:
    """Run the compose tool; its stdout. Prints the command and how long it took."""
    start = time.monotonic()
    result = subprocess.run(
        [*COMPOSE, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    if not quiet:
        print(f"[{time.monotonic() - start:6.1f} s] compose {' '.join(args)}")
    assert result.returncode == 0, f"compose {args}: {result.stdout}\n{result.stderr}"
    return result.stdout


def inspect(container: str) -> dict:
    found = subprocess.run([ENGINE, "inspect", container], capture_output=True, text=True)
    assert found.returncode == 0, found.stderr
    return json.loads(found.stdout)[0]


def containers(service: str) -> list[str]:
    return compose("ps", "-q", service, quiet=True).split()


def moment(text: str) -> datetime:
    """An engine's timestamp (nanoseconds, Z or an offset) as an aware datetime."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.strip()).replace("Z", "+00:00")
    text = re.sub(r" ([+-]\d\d)(\d\d) \w+$", r"\1:\2", text)  # Go's "2006-01-02 15:04:05 -0700 MST"
    return datetime.fromisoformat(text)


def wait_for(what: str, check, timeout: float = 180, every: float = 1.0):
    """check()'s first truthy answer; TimeoutError naming `what` after timeout seconds."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            answer = check()
        except OSError:  # the API is not listening yet
            answer = None
        if answer:
            print(f"[{time.monotonic() - start:6.1f} s] {what}")
            return answer
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout} s")


def ready(client: Client) -> bool:
    return client.get("/readyz").status_code == 200


def healthy(service: str) -> bool:
    ids = containers(service)
    return bool(ids) and all(
        (inspect(c)["State"].get("Health") or {}).get("Status") == "healthy" for c in ids
    )


def weights(client: Client, job_id: str) -> list[np.ndarray]:
    """The job's final model as numpy.load reads it from GET /v1/jobs/{id}/model.npz."""
    response = client.get(f"/v1/jobs/{job_id}/model.npz")
    assert response.status_code == 200, response.text
    arrays = np.load(io.BytesIO(response.content))
    return [arrays[name] for name in sorted(arrays.files) if name != "lineage"]  # names the job


def trained_on(job: dict) -> set[str]:
    """The hostnames (containers) that claimed the job: its history's "host:pid" workers."""
    return {e["worker"].split(":")[0] for e in job["history"] if e["kind"] == "claimed"}


def resumable_spec(seed: int) -> dict:
    """A job of some 30 s on this stack's workers: long enough to checkpoint (every 5 s)
    before a kill, the same weights from the same seed wherever it resumes."""
    rng = np.random.RandomState(seed)
    inputs = rng.rand(2000, 8).round(4)
    targets = np.eye(2)[(inputs.sum(axis=1) > 4).astype(int)]
    return {
        "structure": [8, 32, 2],
        "epochs": 250,
        "learning_rate": 0.5,
        "seed": seed,
        "name": "resumable",
        "data": {"inputs": inputs.tolist(), "targets": targets.tolist(), "batch_size": 1},
    }


class Stack:
    """What the steps learn and later steps check: the token, and what must survive."""

    token: str = ""
    job_ids: list[str] = []
    dataset_id: str = ""

    def client(self) -> Client:
        return Client(API, self.token)


@pytest.fixture(scope="module")
def stack():
    compose("--profile", "monitor", "down", "-v", "--remove-orphans")  # an interrupted run's
    try:
        yield Stack()
    finally:
        compose("--profile", "monitor", "down", "-v", "--remove-orphans")


def test_up_waits_for_health_and_runs_the_migration_first(stack):
    compose("up", "-d", timeout=900)
    migrate = inspect(containers("migrate")[0])
    assert migrate["State"]["Status"] == "exited" and migrate["State"]["ExitCode"] == 0
    migrated_at = moment(migrate["State"]["FinishedAt"])
    for service in ("api", "worker", "control", "beat"):
        started_at = moment(inspect(containers(service)[0])["State"]["StartedAt"])
        assert started_at > migrated_at, f"{service} started before the migration ended"
    # migrate waited for postgres's first passing healthcheck; the app for redis's
    for database, dependent in (("postgres", migrate), ("redis", inspect(containers("api")[0]))):
        log = inspect(containers(database)[0])["State"]["Health"]["Log"]
        first_pass = min(moment(entry["End"]) for entry in log if entry["ExitCode"] == 0)
        assert moment(dependent["State"]["StartedAt"]) > first_pass, database
    wait_for("the api answers /readyz", lambda: ready(Client(API)))
    wait_for("the api's and the worker's checks pass", lambda: healthy("api") and healthy("worker"))


def test_the_first_token_as_the_readme_says(stack):
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"^docker compose (exec api backprop tokens create .*)$", readme, re.M)
    assert command, "README.md shows how to get the first token with docker compose exec"
    # -T: no terminal here (Compose v2 notices that by itself, docker-compose 1.29 does not)
    printed = compose("exec", "-T", *shlex.split(command.group(1))[1:])
    stack.token = re.findall(r"bpj_\S+", printed)[-1]
    assert stack.client().get("/v1/jobs").status_code == 200


def test_a_job_submitted_over_http_succeeds(stack):
    client = stack.client()
    job = client.submit(
        {"structure": [2, 4, 1], "epochs": 200, "learning_rate": 2.0, "seed": 7, "data": XOR}
    )
    done = client.wait(job["id"], timeout=120)
    assert done["status"] == "succeeded", done
    stack.job_ids.append(job["id"])


def test_a_sweep_on_an_uploaded_data_set_ends(stack):
    client = stack.client()
    rng = np.random.RandomState(3)
    labels = rng.randint(3, size=120)
    inputs = np.hstack([np.eye(3)[labels], rng.rand(120, 1)]) * 0.6 + rng.rand(120, 4) * 0.4
    uploaded = client.post(
        "/v1/datasets",
        json={
            "name": "three-classes",
            "inputs": inputs.round(4).tolist(),
            "targets": np.eye(3)[labels].tolist(),
        },
    )
    assert uploaded.status_code == 201, uploaded.text
    stack.dataset_id = uploaded.json()["id"]
    submitted = client.post(
        "/v1/sweeps",
        json={
            "name": "grid",
            "base": {
                "structure": [4, 6, 3],
                "epochs": 6,
                "learning_rate": 2.0,
                "data": {"dataset_id": stack.dataset_id, "batch_size": 10},
                "options": {"validation_split": 0.2},
            },
            "search": {"learning_rate": {"choice": [0.5, 3.0]}, "structure[1]": {"choice": [3, 8]}},
            "method": "grid",
            "objective": {"metric": "val_accuracy"},
            "max_parallel": 2,
        },
    )
    assert submitted.status_code == 202, submitted.text
    sweep_id = submitted.json()["id"]

    def ended():
        sweep = client.get(f"/v1/sweeps/{sweep_id}").json()
        return sweep["status"] in FINAL and sweep

    done = wait_for("the sweep's 4 trials end", ended)
    assert done["status"] == "succeeded" and done["counts"]["succeeded"] == 4, done
    assert done["best"]["job_id"]
    stack.job_ids.append(done["best"]["job_id"])


def test_the_dashboard_serves_its_sign_in_page(stack):
    page = Client(API).get("/sign-in")
    assert page.status_code == 200 and "<form" in page.text


def test_scaled_to_two_workers_both_train(stack):
    compose("up", "-d", "--scale", "worker=2", timeout=600)
    assert len(containers("worker")) == 2
    wait_for("both workers' healthchecks pass", lambda: healthy("worker"))
    client = stack.client()
    spec = {"structure": [2, 16, 1], "epochs": 3000, "learning_rate": 2.0, "data": XOR}
    ids = [client.submit({**spec, "seed": seed})["id"] for seed in range(8)]
    jobs = [client.wait(job_id, timeout=300) for job_id in ids]
    assert all(job["status"] == "succeeded" for job in jobs), jobs
    hosts = set().union(*(trained_on(job) for job in jobs))
    print(f"8 jobs trained on {sorted(hosts)}")
    worker_hosts = {inspect(c)["Config"]["Hostname"] for c in containers("worker")}
    assert hosts == worker_hosts, f"trained on {hosts}, the workers are {worker_hosts}"
    stack.job_ids += ids


def test_a_worker_killed_mid_job_resumes_to_the_same_weights(stack):
    client = stack.client()
    start = time.monotonic()
    reference = client.submit(resumable_spec(seed=11))
    done = client.wait(reference["id"], timeout=300)
    assert done["status"] == "succeeded", done
    print(f"[{time.monotonic() - start:6.1f} s] the undisturbed run succeeded")

    victim = client.submit(resumable_spec(seed=11))

    def checkpointed():
        job = client.job(victim["id"])
        assert job["status"] not in FINAL, f"the job ended before it could be killed: {job}"
        return any(event["kind"] == "checkpoint" for event in job["history"]) and job

    running = wait_for("the second run checkpointed", checkpointed, every=0.2)
    [host] = trained_on(running)
    [container] = [c for c in containers("worker") if inspect(c)["Config"]["Hostname"] == host]
    # a crash, as an OOM kill: SIGKILL to the container's first process from the host (podman
    # takes `podman kill` for a stop by the user and then never restarts the container)
    before = inspect(container)["State"]
    subprocess.run(["kill", "-s", "KILL", str(before["Pid"])], check=True)
    print(f"killed worker {host} at epoch {running['progress']['epoch']}")
    killed_at = time.monotonic()

    resumed = client.wait(victim["id"], timeout=300)
    assert resumed["status"] == "succeeded", resumed
    print(f"[{time.monotonic() - killed_at:6.1f} s] the killed run succeeded")
    claims = [e["worker"] for e in resumed["history"] if e["kind"] == "claimed"]
    print(f"claimed by {claims}")
    assert len(claims) >= 2 and claims[0].startswith(f"{host}:")
    for ours, undisturbed in zip(
        weights(client, victim["id"]), weights(client, reference["id"]), strict=True
    ):
        assert ours.dtype == undisturbed.dtype and ours.tobytes() == undisturbed.tobytes()
    wait_for(
        "restart: unless-stopped brought the killed worker back",
        lambda: (
            (state := inspect(container)["State"])["Status"] == "running"
            and state["StartedAt"] != before["StartedAt"]
        ),
        timeout=60,
    )
    stack.job_ids += [reference["id"], victim["id"]]


def test_down_and_up_keep_jobs_data_sets_and_tokens(stack):
    client = stack.client()
    before = {job_id: client.job(job_id)["status"] for job_id in stack.job_ids}
    compose("down")
    compose("up", "-d", timeout=900)
    wait_for("the api answers /readyz again", lambda: ready(Client(API)))
    assert {job_id: client.job(job_id)["status"] for job_id in stack.job_ids} == before
    assert client.get(f"/v1/datasets/{stack.dataset_id}").status_code == 200
    # and they still train: the token, the data set and a worker
    job = client.submit(
        {
            "structure": [4, 5, 3],
            "epochs": 2,
            "learning_rate": 1.0,
            "data": {"dataset_id": stack.dataset_id, "batch_size": 10},
        }
    )
    assert client.wait(job["id"], timeout=120)["status"] == "succeeded"


def test_the_monitor_profile_serves_flower(stack):
    compose("--profile", "monitor", "up", "-d", timeout=600)
    flower = Client(FLOWER)
    wait_for("flower answers /healthcheck", lambda: flower.get("/healthcheck").text == "OK")
    wait_for("flower's healthcheck passes", lambda: healthy("flower"))
    assert "Flower" in flower.get("/").text
