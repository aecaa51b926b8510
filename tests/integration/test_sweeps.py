"""Sweeps against the real stack: grid, random and TPE trials as jobs, ASHA's decisions,
cancel, reproducible trial values, and a 422 naming the path for every invalid space."""

from __future__ import annotations

import itertools
import json
import time

import numpy as np
import pytest
import requests

from store import job_data
from store.db import get_database
from store.models import Job
from tests.faults.conftest import model_weights, reference_weights
from tests.support.stack import most_at_once, server_sent_events
from tuning.sampling import Past, sample

FINAL = ("succeeded", "failed", "cancelled")


def store_classes(stack, name: str, samples: int, seed: int, tenant: str = "alice") -> str:
    """A stored data set of the tenant: noisy features of 3 one-hot classes, 4 columns."""
    rng = np.random.RandomState(seed)
    labels = rng.randint(3, size=samples)
    noise = rng.rand(samples, 1)
    inputs = np.hstack([np.eye(3)[labels], noise]) * 0.6 + rng.rand(samples, 4) * 0.4
    body = {"name": name, "inputs": inputs.round(4).tolist()}
    body["targets"] = np.eye(3)[labels].tolist()
    response = stack.client(tenant).post("/v1/datasets", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.fixture(scope="module")
def classes(stack):
    return store_classes(stack, "three-classes", 150, 3)


@pytest.fixture(scope="module")
def fewer(stack):
    """A second data set of the same width: 90 other samples."""
    return store_classes(stack, "fewer", 90, 4)


@pytest.fixture(scope="module")
def wider(stack):
    """A data set of 5 input columns: it does not fit a 4-input base."""
    body = {"inputs": [[0.1 * k] * 5 for k in range(10)], "targets": [[1, 0, 0]] * 10}
    response = stack.client().post("/v1/datasets", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def base(dataset_id: str, **changes) -> dict:
    job = {
        "structure": [4, 6, 3],
        "epochs": 6,
        "learning_rate": 2.0,
        "data": {"dataset_id": dataset_id, "batch_size": 10},
        "options": {"validation_split": 0.2},
    }
    return {**job, **changes}


def submit(client, body: dict) -> dict:
    response = client.post("/v1/sweeps", json=body)
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/v1/sweeps/{response.json()['id']}"
    return response.json()


def wait(client, sweep_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        sweep = client.get(f"/v1/sweeps/{sweep_id}", params={"limit": 200}).json()
        if sweep["status"] in FINAL:
            return sweep
        assert time.monotonic() < deadline, f"sweep still {sweep['status']}: {sweep['counts']}"
        time.sleep(0.2)


def trials(client, sweep_id: str) -> list[dict]:
    """The sweep's trial jobs in full, by trial number (GET /v1/jobs?sweep=)."""
    listed = client.get("/v1/jobs", params={"sweep": sweep_id, "limit": 200}).json()["jobs"]
    return sorted((client.job(j["id"]) for j in listed), key=lambda j: j["trial"])


def test_a_grid_runs_every_point_in_order_and_names_the_best(stack, classes):
    client = stack.client()
    search = {"learning_rate": {"choice": [0.5, 3.0]}, "structure[1]": {"choice": [3, 8]}}
    sweep = submit(
        client,
        {
            "name": "grid",
            "base": base(classes),
            "search": search,
            "method": "grid",
            "objective": {"metric": "val_accuracy"},
            "max_parallel": 2,
        },
    )
    assert sweep["trials"] == 4 and sweep["objective"] == {"metric": "val_accuracy", "goal": "max"}
    done = wait(client, sweep["id"])
    assert done["status"] == "succeeded"
    assert done["counts"] == {
        "pending": 0, "queued": 0, "running": 0, "paused": 0, "succeeded": 4, "failed": 0,
        "cancelled": 0,
    }  # fmt: skip
    jobs = trials(client, sweep["id"])
    points = list(itertools.product([0.5, 3.0], [3, 8]))
    assert [(j["params"]["learning_rate"], j["params"]["structure[1]"]) for j in jobs] == points
    for job in jobs:  # a trial is the base job with its values
        assert job["sweep_id"] == sweep["id"] and job["status"] == "succeeded"
        assert job["learning_rate"] == job["params"]["learning_rate"]
        assert job["structure"] == [4, job["params"]["structure[1]"], 3]
        assert job["progress"]["epoch"] == 6 and not job["stopped_early"]
    # the leaderboard: best objective first, and the best trial's model
    board = [row["objective"] for row in done["leaderboard"]]
    assert board == sorted(board, reverse=True)
    assert done["best"]["objective"] == max(j["metrics"]["val_accuracy"] for j in jobs)
    page = client.get(f"/v1/sweeps/{sweep['id']}", params={"limit": 3}).json()
    assert len(page["leaderboard"]) == 3 and page["next_offset"] == 3
    rest = client.get(f"/v1/sweeps/{sweep['id']}", params={"limit": 3, "offset": 3}).json()
    assert [r["trial"] for r in page["leaderboard"] + rest["leaderboard"]] == [
        r["trial"] for r in done["leaderboard"]
    ]
    model = client.get(f"/v1/sweeps/{sweep['id']}/best/model").json()
    assert model["job_id"] == done["best"]["job_id"]
    assert done["epochs"] == {"run": 24, "full": 24, "saved": 0.0}
    # never more than max_parallel trials queued or running: each was released as one ended
    spans = [(j["created_at"], j["finished_at"]) for j in jobs]
    assert most_at_once(spans) <= 2
    assert_listed_as_detailed(client, sweep["id"])


def assert_listed_as_detailed(client, sweep_id: str) -> None:
    """The list's summary (its trials counted in SQL, the best kept on the sweep's row)
    says what the sweep's own page (every trial loaded and ranked) says."""
    listed = {s["id"]: s for s in client.get("/v1/sweeps").json()["sweeps"]}[sweep_id]
    detail = client.get(f"/v1/sweeps/{sweep_id}").json()
    assert listed == {key: detail[key] for key in listed}


def test_random_trials_are_reproducible_from_the_seed_and_bitwise_exact(stack, classes):
    client = stack.client()
    body = {
        "base": base(classes, epochs=3),
        "search": {
            "learning_rate": {"log_uniform": [0.1, 5]},
            "options.l2": {"uniform": [0, 0.001]},
            "data.batch_size": {"choice": [5, 10, 20]},
        },
        "method": "random",
        "trials": 3,
        "seed": 11,
        "objective": {"metric": "val_cost"},
        "max_parallel": 3,
    }
    first, second = submit(client, body), submit(client, body)
    wait(client, first["id"]), wait(client, second["id"])
    a, b = trials(client, first["id"]), trials(client, second["id"])
    assert [j["params"] for j in a] == [j["params"] for j in b]
    assert [j["params"] for j in a] == [sample("random", body["search"], k, 11) for k in (1, 2, 3)]
    assert len({j["params"]["learning_rate"] for j in a}) == 3
    # each trial has its own seed, from the sweep's, and trains like any job: bit for bit
    assert len({j["seed"] for j in a}) == 3 and [j["seed"] for j in a] == [j["seed"] for j in b]
    for job in a[:2]:
        exact = reference_weights(stack.database_url, job["id"])
        served = model_weights(client, job["id"])
        assert all(np.array_equal(x, y) for x, y in zip(exact, served))


def test_tpe_samples_from_the_finished_trials_results(stack, classes):
    client = stack.client()
    search = {
        "learning_rate": {"log_uniform": [0.01, 10]},
        "structure[1]": {"int_uniform": [2, 12]},
    }
    body = {
        "base": base(classes, epochs=4),
        "search": search,
        "method": "tpe",
        "trials": 6,
        "seed": 5,
        "objective": {"metric": "val_cost", "goal": "min"},
        "max_parallel": 1,  # each trial sees every earlier one finished
    }
    done = wait(client, submit(client, body)["id"])
    assert done["status"] == "succeeded" and done["counts"]["succeeded"] == 6
    jobs = trials(client, done["id"])
    # the service's values are what Optuna's TPE gives on the earlier trials' results
    # (2 random start-up trials here), and those results change them
    informed = 0
    for k, job in enumerate(jobs, start=1):
        past = [Past(j["params"], "complete", j["metrics"]["val_cost"]) for j in jobs[: k - 1]]
        assert job["params"] == sample("tpe", search, k, 5, goal="min", past=past, trials=6)
        informed += job["params"] != sample("tpe", search, k, 5, goal="min", trials=6)
    assert informed >= 3


def test_asha_stops_poor_trials_and_records_the_figures_behind_each_stop(stack, classes):
    client = stack.client()
    sweep = submit(
        client,
        {
            "base": base(classes, epochs=9),
            "search": {"learning_rate": {"log_uniform": [0.001, 20]}},
            "method": "random",
            "trials": 9,
            "seed": 2,
            "objective": {"metric": "val_accuracy"},
            "early_stopping": {"min_epochs": 1, "reduction_factor": 3},
            "max_parallel": 3,
        },
    )
    done = wait(client, sweep["id"])
    assert done["status"] == "succeeded" and done["counts"]["succeeded"] == 9
    jobs = trials(client, sweep["id"])
    stopped = [j for j in jobs if j["stopped_early"]]
    assert stopped, "no trial was stopped"
    at_rung: dict[int, list[float]] = {0: [], 1: []}
    for job in jobs:
        for decision in job["rungs"]:
            at_rung[decision["rung"]].append(decision["value"])
    for job in jobs:
        assert [d["epoch"] for d in job["rungs"]] == [1, 3][: len(job["rungs"])]
        for decision in job["rungs"]:
            n, keep, value = decision["competitors"], decision["keep"], decision["value"]
            assert keep == max(1, n // 3)
            assert n <= len(at_rung[decision["rung"]])  # those that reached the rung before
            assert decision["cutoff"] in at_rung[decision["rung"]]
            if decision["decision"] == "stop":  # worse than the keep-th best: not in the top
                assert value < decision["cutoff"] and decision["better"] >= keep
            else:
                assert value >= decision["cutoff"] and decision["better"] < keep
        if job["stopped_early"]:  # ended at its last rung, succeeded, with its model
            last = job["rungs"][-1]
            assert last["decision"] == "stop" and job["progress"]["epoch"] == last["epoch"]
            assert job["status"] == "succeeded"
            assert any(e["kind"] == "rung" for e in job["history"])
            assert client.get(f"/v1/jobs/{job['id']}/model").status_code == 200
        else:
            assert job["progress"]["epoch"] == 9
            assert all(d["decision"] == "continue" for d in job["rungs"])
    assert done["epochs"]["full"] == 81 and done["epochs"]["run"] < 81
    assert done["epochs"]["run"] == sum(j["progress"]["epoch"] for j in jobs)
    assert_listed_as_detailed(client, sweep["id"])


def test_cancel_stops_queued_and_running_trials_and_keeps_finished_ones(stack, classes):
    client = stack.client()
    sweep = submit(
        client,
        {
            "base": base(classes, epochs=400, data={"dataset_id": classes, "batch_size": 1}),
            "search": {"learning_rate": {"uniform": [0.5, 3]}},
            "trials": 5,
            "seed": 1,
            "objective": {"metric": "cost"},
            "max_parallel": 2,
        },
    )
    deadline = time.monotonic() + 60
    while client.get(f"/v1/sweeps/{sweep['id']}").json()["counts"]["running"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    response = client.post(f"/v1/sweeps/{sweep['id']}/cancel")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "cancelled"
    deadline = time.monotonic() + 60
    while True:
        jobs = trials(client, sweep["id"])
        if all(j["status"] in FINAL for j in jobs):
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert len(jobs) == 2 and {j["status"] for j in jobs} == {"cancelled"}  # none released
    after = client.get(f"/v1/sweeps/{sweep['id']}").json()
    assert after["status"] == "cancelled" and after["counts"]["pending"] == 0
    again = client.post(f"/v1/sweeps/{sweep['id']}/cancel")
    assert again.status_code == 409
    assert again.headers["Content-Type"] == "application/problem+json"
    assert client.get(f"/v1/sweeps/{sweep['id']}/best/model").status_code == 409
    assert_listed_as_detailed(client, sweep["id"])


def sweep_events(stack, sweep_id: str) -> list[tuple[str, dict]]:
    """(event, data) of a sweep's stream, read as it arrives, until it closes."""
    with requests.get(
        f"{stack.base}/v1/sweeps/{sweep_id}/events",
        params={"timeout": 60, "limit": 3},
        headers={"Authorization": f"Bearer {stack.tokens['alice']}"},
        stream=True,
        timeout=90,
    ) as response:
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("text/event-stream")
        return [(e["event"], json.loads(e["data"])) for e in server_sent_events(response)]


def test_a_sweep_s_event_stream_shows_every_trial_end_and_closes_with_the_sweep(stack, classes):
    client = stack.client()
    sweep = submit(
        client,
        {
            "base": base(classes, epochs=60, data={"dataset_id": classes, "batch_size": 1}),
            "search": {"learning_rate": {"choice": [0.5, 1.0, 2.0, 4.0]}},
            "method": "grid",
            "objective": {"metric": "cost"},
            "max_parallel": 1,
        },
    )
    seen = sweep_events(stack, sweep["id"])
    kinds = [kind for kind, _ in seen]
    assert kinds[-1] == "end" and set(kinds[:-1]) == {"sweep"}
    final = seen[-1][1]
    assert final["status"] == "succeeded" and final["counts"]["succeeded"] == 4
    assert final == client.get(f"/v1/sweeps/{sweep['id']}", params={"limit": 3}).json()
    assert len(final["leaderboard"]) == 3 and final["leaderboard_total"] == 4
    # woken by the workers' notifications: each of the four ends is seen, in order (the
    # database is read every 2 s otherwise, and a trial takes less than a second)
    ended = [data["counts"]["succeeded"] for _, data in seen]
    assert ended == sorted(ended) and set(ended) >= {1, 2, 3, 4}, ended
    runs = [data["epochs"]["run"] for _, data in seen]
    assert runs == sorted(runs) and runs[-1] == 240
    assert len({json.dumps(data) for kind, data in seen if kind == "sweep"}) == len(seen) - 1
    again = sweep_events(stack, sweep["id"])  # a reconnect starts from the current state
    assert [kind for kind, _ in again] == ["sweep", "end"] and again[0][1] == final
    other = requests.get(
        f"{stack.base}/v1/sweeps/{sweep['id']}/events",
        headers={"Authorization": f"Bearer {stack.tokens['bob']}"},
        timeout=30,
    )
    assert other.status_code == 404
    bad = client.get(f"/v1/sweeps/{sweep['id']}/events", params={"limit": 0})
    assert bad.status_code == 422 and "limit" in bad.text


def test_a_sweep_is_deleted_with_its_trials_once_it_ended(stack, classes):
    client = stack.client()
    body = {
        "base": base(classes, epochs=300, data={"dataset_id": classes, "batch_size": 1}),
        "search": {"learning_rate": {"choice": [1.0, 2.0]}},
        "method": "grid",
        "objective": {"metric": "cost"},
        "max_parallel": 1,
    }
    key = {"Idempotency-Key": f"delete-{time.time_ns()}"}
    response = client.post("/v1/sweeps", json=body, headers=key)
    assert response.status_code == 202, response.text
    sweep = response.json()
    running = client.delete(f"/v1/sweeps/{sweep['id']}")
    assert running.status_code == 409, running.text
    assert running.headers["Content-Type"] == "application/problem+json"
    assert running.json()["type"].endswith("sweep-not-finished")
    first = client.get("/v1/jobs", params={"sweep": sweep["id"]}).json()["jobs"][0]
    alone = client.delete(f"/v1/jobs/{first['id']}")  # a trial goes with its sweep only
    assert alone.status_code == 409 and alone.json()["type"].endswith("job-is-a-trial")
    assert stack.client("bob").delete(f"/v1/sweeps/{sweep['id']}").status_code == 404

    client.post(f"/v1/sweeps/{sweep['id']}/cancel")
    deadline = time.monotonic() + 60
    while any(j["status"] not in FINAL for j in trials(client, sweep["id"])):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    ids = [j["id"] for j in trials(client, sweep["id"])]
    assert client.delete(f"/v1/sweeps/{sweep['id']}").status_code == 204
    assert client.get(f"/v1/sweeps/{sweep['id']}").status_code == 404
    assert client.delete(f"/v1/sweeps/{sweep['id']}").status_code == 404
    assert all(client.get(f"/v1/jobs/{job_id}").status_code == 404 for job_id in ids)
    assert client.get("/v1/jobs", params={"sweep": sweep["id"]}).json()["jobs"] == []
    assert sweep["id"] not in [s["id"] for s in client.get("/v1/sweeps").json()["sweeps"]]
    assert client.get(f"/v1/datasets/{classes}").status_code == 200  # the data set stays
    retry = client.post("/v1/sweeps", json=body, headers=key)  # no replay of a deleted sweep
    assert retry.status_code == 202 and retry.json()["id"] != sweep["id"]
    assert "Idempotent-Replayed" not in retry.headers
    client.post(f"/v1/sweeps/{retry.json()['id']}/cancel")


def grid(client, base_body: dict, search: dict, metric: str):
    """A grid sweep run to its end: (its request, its final state, its trials)."""
    body = {"base": base_body, "search": search, "method": "grid", "objective": {"metric": metric}}
    sweep = wait(client, submit(client, body)["id"])
    assert sweep["status"] == "succeeded", sweep
    return body, sweep, trials(client, sweep["id"])


def cancel_and_settle(client, sweep_id: str) -> None:
    """Cancel the sweep and wait until each of its trials stopped."""
    client.post(f"/v1/sweeps/{sweep_id}/cancel")
    wait(client, sweep_id)
    deadline = time.monotonic() + 60
    while any(j["status"] not in FINAL for j in trials(client, sweep_id)):
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_a_sweep_searches_stored_data_sets_and_keeps_them_while_it_runs(stack, classes, fewer):
    client = stack.client()
    body, sweep, made = grid(
        client, base(classes), {"data.dataset_id": {"choice": [classes, fewer]}}, "val_accuracy"
    )
    assert [j["params"]["data.dataset_id"] for j in made] == [classes, fewer]
    for job, samples in zip(made, (150, 90)):
        stored = client.get(f"/v1/datasets/{job['params']['data.dataset_id']}").json()
        assert job["data"]["dataset_id"] == stored["id"]
        assert job["data"]["dataset_sha256"] == stored["sha256"]
        held = job["data"]["validation_samples"]  # a stratified split of 0.2 of this one
        assert job["data"]["samples"] + held == samples and 0.15 < held / samples < 0.25
        assert job["metrics"]["val_accuracy"] is not None
    # a searched data set is kept while a sweep that may train on it runs
    slow = dict(body, max_parallel=1)
    slow["base"] = base(classes, epochs=400, data={"dataset_id": classes, "batch_size": 1})
    running = submit(client, slow)
    refused = client.delete(f"/v1/datasets/{fewer}")
    assert refused.status_code == 409, refused.text
    assert running["id"] in refused.json()["detail"]
    cancel_and_settle(client, running["id"])
    assert client.delete(f"/v1/datasets/{fewer}").status_code == 204  # ended: it may go
    assert client.get(f"/v1/sweeps/{sweep['id']}").json()["status"] == "succeeded"


def test_trials_start_from_finished_jobs_weights_and_keep_them_from_deletion(stack, classes):
    client = stack.client()
    sources = [client.submit(base(classes, seed=seed)) for seed in (1, 2)]
    sources = [client.wait(job["id"]) for job in sources]
    assert [job["status"] for job in sources] == ["succeeded"] * 2
    first, second = (job["id"] for job in sources)
    body, sweep, made = grid(
        client,
        base(classes, epochs=3, init_from=first),
        {"init_from": {"choice": [first, second]}},
        "val_cost",
    )
    lineage = [client.get(f"/v1/jobs/{j['id']}/model").json()["lineage"] for j in made]
    started = [(j["params"]["init_from"], line["init_from"]) for j, line in zip(made, lineage)]
    assert started == [(first, first), (second, second)]
    db = get_database(stack.database_url)
    for job, source in zip(made, (first, second)):
        with db.session() as session:  # the trial keeps a copy of the weights it started from
            row = session.get(Job, job["id"])
            start = job_data.load_data_and_checkpoint(session, row)[0]["init"]
        served = model_weights(client, source)
        layers = len(served) // 2
        assert all(np.array_equal(start[f"W{n}"], served[n]) for n in range(layers))
        assert all(np.array_equal(start[f"b{n}"], served[layers + n]) for n in range(layers))
        exact = reference_weights(stack.database_url, job["id"])  # and trains from it exactly
        assert all(np.array_equal(x, y) for x, y in zip(exact, model_weights(client, job["id"])))
    # a job a running sweep starts trials from stays until the sweep ended
    slow = dict(body, max_parallel=1)
    slow["base"] = base(classes, epochs=400, data={"dataset_id": classes, "batch_size": 1})
    running = submit(client, slow)
    refused = client.delete(f"/v1/jobs/{second}")
    assert refused.status_code == 409 and running["id"] in refused.json()["detail"], refused.text
    cancel_and_settle(client, running["id"])
    assert client.delete(f"/v1/jobs/{second}").status_code == 204


def test_another_tenant_sees_no_sweep(stack, classes):
    sweep = submit(
        stack.client(),
        {
            "base": base(classes, epochs=2),
            "search": {"learning_rate": {"choice": [1.0]}},
            "method": "grid",
            "objective": {"metric": "cost"},
        },
    )
    other = stack.client("bob")
    assert other.get(f"/v1/sweeps/{sweep['id']}").status_code == 404
    assert other.post(f"/v1/sweeps/{sweep['id']}/cancel").status_code == 404
    assert other.get("/v1/jobs", params={"sweep": sweep["id"]}).json()["jobs"] == []
    wait(stack.client(), sweep["id"])


INVALID = [
    # (what changes in the request, the field the 422 names)
    ({"search": {"lerning_rate": {"choice": [1.0]}}}, "search.lerning_rate"),
    ({"search": {"data.inputs": {"choice": [1.0]}}}, "search.data.inputs"),
    ({"search": {"name": {"choice": ["a"]}}}, "search.name"),
    ({"search": {"structure[0]": {"choice": [4]}}}, "search.structure[0]"),
    ({"search": {"structure[2]": {"choice": [4]}}}, "search.structure[2]"),
    ({"search": {"options.l2[1]": {"choice": [0.1]}}}, "search.options.l2[1]"),
    ({"search": {"Learning-Rate": {"choice": [0.1]}}}, "search.Learning-Rate"),
    ({"search": {"learning_rate": {"normal": [0, 1]}}}, "search.learning_rate"),
    ({"search": {"learning_rate": {"uniform": [1]}}}, "search.learning_rate.uniform"),
    ({"search": {"learning_rate": {"uniform": [2, 1]}}}, "search.learning_rate.uniform"),
    ({"search": {"learning_rate": {"log_uniform": [0, 1]}}}, "search.learning_rate.log_uniform"),
    ({"search": {"learning_rate": {"uniform": [-1, 1]}}}, "search.learning_rate"),
    ({"search": {"learning_rate": {"choice": []}}}, "search.learning_rate.choice"),
    ({"search": {"epochs": {"uniform": [1, 3]}}}, "search.epochs"),
    ({"search": {"epochs": {"int_uniform": [1, 200000]}}}, "search.epochs"),
    ({"search": {"structure[1]": {"choice": [4, 100000]}}}, "search.structure[1]"),
    ({"search": {"structure": {"choice": [[4, 5, 3], [4, 5, 2]]}}}, "search.structure"),
    (
        {"search": {"options.activation": {"choice": ["relu", "swish"]}}},
        "search.options.activation",
    ),
    (
        {
            "search": {"options.cost": {"choice": ["cross_entropy"]}},
            "base": {"options": {"output_activation": "relu"}},
        },
        "search.options.cost",
    ),  # noqa: E501
    (
        {"search": {"options.validation_split": {"uniform": [0.1, 1.0]}}},
        "search.options.validation_split",
    ),  # noqa: E501
    ({"search": {"data.batch_size": {"int_uniform": [0, 10]}}}, "search.data.batch_size"),
    # over the compute budget, under MAX_PARAMETERS (9 million weights)
    (
        {"search": {"structure": {"choice": [[4, 3000, 3000, 3]]}}, "base": {"epochs": 100000}},
        "search.structure",
    ),  # noqa: E501
    (
        {"search": {"structure": {"choice": [[4, 3000, 3000, 3]]}, "epochs": {"choice": [100000]}}},
        "search.epochs",
    ),  # noqa: E501
    ({"search": {"structure": {"choice": [[4, 8192, 8192, 3]]}}}, "search.structure"),
    ({"method": "grid"}, "search.learning_rate"),
    (
        {"method": "grid", "search": {"learning_rate": {"choice": [1.0, 2.0]}}, "trials": 3},
        "trials",
    ),  # noqa: E501
    ({"trials": 100000}, "trials"),
    ({"max_parallel": 1000}, "max_parallel"),
    ({"objective": {"metric": "val_accuracy"}, "base": {"options": {}}}, "objective.metric"),
    ({"early_stopping": {"min_epochs": 6}}, "early_stopping.min_epochs"),
    ({"base": {"data": {"inputs": [[0, 0, 0, 0]], "targets": [[0, 0, 1]]}}}, "base.data"),
    ({"base": {"epochs": 0}}, "base.epochs"),
    ({"base": {"structure": [5, 6, 3]}}, "base.data.dataset_id"),
    ({"callback_url": "ftp://example.com/hook"}, "callback_url"),
    ({"base": {"init_from": "00000000-0000-4000-8000-000000000000"}}, "base.init_from"),
    (
        {"search": {"init_from": {"choice": ["00000000-0000-4000-8000-000000000000"]}}},
        "search.init_from",
    ),
    ({"search": {"init_from": {"uniform": [0, 1]}}}, "search.init_from"),
    (
        {"search": {"data.dataset_id": {"choice": ["00000000-0000-4000-8000-000000000000"]}}},
        "search.data.dataset_id",
    ),
    ({"search": {"data.dataset_id": {"uniform": [0, 1]}}}, "search.data.dataset_id"),
    ({"search": {"data.dataset_id": {"choice": ["WIDER"]}}}, "search.data.dataset_id"),
    ({"base": {"callback_url": "ftp://example.com/hook"}}, "base.callback_url"),
]


@pytest.mark.parametrize("change, field", INVALID, ids=[f for _, f in INVALID])
def test_every_invalid_space_gets_a_422_naming_the_path(stack, classes, wider, change, field):
    client = stack.client()
    change = json.loads(json.dumps(change).replace("WIDER", wider))
    body = {
        "base": base(classes),
        "search": {"learning_rate": {"log_uniform": [0.1, 5]}},
        "trials": 4,
        "objective": {"metric": "val_accuracy"},
    }
    for key, value in change.items():
        if key == "base":
            body["base"] = {**body["base"], **value}
        else:
            body[key] = value
    before = len(client.get("/v1/sweeps", params={"limit": 200}).json()["sweeps"])
    response = client.post("/v1/sweeps", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    fields = [e["field"] for e in response.json()["errors"]]
    assert field in fields, response.json()
    assert len(client.get("/v1/sweeps", params={"limit": 200}).json()["sweeps"]) == before


def test_trials_run_the_optimizer_they_were_given_with_only_its_parameters(stack, classes):
    client = stack.client()
    search = {
        "options.optimizer.name": {"choice": ["sgd", "adam"]},
        "options.optimizer.beta1": {"choice": [0.8, 0.95]},
    }
    body = {
        "base": base(classes, epochs=3, learning_rate=0.5),
        "search": search,
        "method": "grid",
        "objective": {"metric": "val_cost"},
        "max_parallel": 2,
    }
    sweep = submit(client, body)
    assert sweep["trials"] == 4
    assert wait(client, sweep["id"])["status"] == "succeeded"
    jobs = trials(client, sweep["id"])
    points = list(itertools.product(["sgd", "adam"], [0.8, 0.95]))
    given = [
        (j["params"]["options.optimizer.name"], j["params"]["options.optimizer.beta1"])
        for j in jobs
    ]
    assert given == points
    adam = {"name": "adam", "beta2": 0.999, "eps": 1e-08, "weight_decay": 0.0}
    for job, (name, beta1) in zip(jobs, points):
        assert job["status"] == "succeeded"
        # an sgd trial has no beta1: the parameter applies only where the optimizer takes it
        expected = {"name": "sgd"} if name == "sgd" else adam | {"beta1": beta1}
        assert job["options"]["optimizer"] == expected
        # and it trained with that optimizer: core on the stored spec gives its weights
        exact = reference_weights(stack.database_url, job["id"])
        served = model_weights(client, job["id"])
        assert all(np.array_equal(x, y) for x, y in zip(exact, served))
