"""The product end to end: HTTP into gunicorn, a real Celery worker, Redis, the database."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from core import Network
from store.db import get_database
from store.models import Job
from tests.faults.conftest import model_weights, reference_weights


def seed_cell_batch():
    """The notebook's 64-sample cell: np.random.seed(2023) then 64 (x, y) column pairs."""
    np.random.seed(2023)
    xs = [np.random.rand(3, 1) for _ in range(64)]
    ys = [np.random.rand(2, 1) for _ in range(64)]
    return list(zip(xs, ys))


def test_seed_notebook_cell_as_a_job_matches_core(stack):
    batch = seed_cell_batch()
    client = stack.client()
    job = client.submit(
        {
            "structure": [3, 2, 2],
            "epochs": 1,
            "learning_rate": 3.0,
            "seed": 2023,
            "data": {"batches": [[[x.ravel().tolist(), y.ravel().tolist()] for x, y in batch]]},
        }
    )
    assert job["status"] == "queued" and job["seed"] == 2023
    done = client.wait(job["id"])
    assert done["status"] == "succeeded", done

    np.random.seed(2023)
    reference = Network([3, 2, 2])
    reference.gradient_descent(batch, 3.0)
    model = client.get(f"/v1/jobs/{job['id']}/model").json()
    for got, want in zip(model["weights"] + model["biases"], reference.W_n + reference.B_n):
        assert np.array_equal(np.array(got), want)  # JSON floats round-trip exactly
    assert [np.array(b).shape for b in model["biases"]] == [(2, 1), (2, 1)]


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    X, Y = d.data / 16.0, np.eye(10)[d.target]
    return train_test_split(X, Y, test_size=0.25, stratify=d.target, random_state=0)


def test_digits_job_reaches_95_percent_and_predict_agrees(stack, digits):
    X_train, X_test, Y_train, Y_test = digits
    client = stack.client()
    job = client.submit(
        {
            "structure": [64, 30, 10],
            "epochs": 30,
            "learning_rate": 3.0,
            "seed": 1,
            "name": "digits",
            "labels": {"dataset": "digits"},
            "data": {"inputs": X_train.tolist(), "targets": Y_train.tolist(), "batch_size": 10},
            "options": {"validation": {"inputs": X_test.tolist(), "targets": Y_test.tolist()}},
        }
    )
    done = client.wait(job["id"], timeout=120)
    assert done["status"] == "succeeded", done
    assert done["progress"] == {"epoch": 30, "epochs": 30}

    model = client.get(f"/v1/jobs/{job['id']}/model").json()
    net = Network([64, 30, 10], rng=0)
    net.set_parameters(model["weights"], model["biases"])
    accuracy = np.mean(net.predict(X_test).argmax(1) == Y_test.argmax(1))
    assert accuracy >= 0.95

    predicted = client.post(f"/v1/jobs/{job['id']}/predict", json={"inputs": X_test.tolist()})
    assert predicted.status_code == 200
    np.testing.assert_allclose(predicted.json()["outputs"], net.predict(X_test), atol=1e-12)

    metrics = client.get(f"/v1/jobs/{job['id']}/metrics").json()["metrics"]
    assert [m["epoch"] for m in metrics] == list(range(1, 31))
    assert metrics[-1]["val_accuracy"] == pytest.approx(accuracy)
    assert done["metrics"] == metrics[-1]

    npz = client.get(f"/v1/jobs/{job['id']}/model.npz")
    assert npz.status_code == 200
    arrays = np.load(io.BytesIO(npz.content), allow_pickle=False)
    assert np.array_equal(arrays["W0"], np.array(model["weights"][0]))

    listed = client.get("/v1/jobs", params={"label": "dataset:digits"}).json()["jobs"]
    assert job["id"] in [j["id"] for j in listed]


def as_npy(array: np.ndarray) -> dict:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return {"npy": base64.b64encode(buffer.getvalue()).decode()}


def test_npy_data_trains_to_the_same_bits_as_json_rows(stack, digits):
    X_train, X_test, Y_train, Y_test = digits
    X32, Y32 = X_train[:600].astype(np.float32), Y_train[:600].astype(np.float32)
    client = stack.client()
    common = {"structure": [64, 20, 10], "epochs": 3, "learning_rate": 3.0, "seed": 7}
    options = {"dtype": "float32"}
    as_rows = {
        **common,
        "options": {
            **options,
            "validation": {"inputs": X_test.tolist(), "targets": Y_test.tolist()},
        },
        "data": {"inputs": X32.tolist(), "targets": Y32.tolist(), "batch_size": 25},
    }
    as_files = {  # Fortran order, big-endian and integers are all plain matrices underneath
        **common,
        "options": {
            **options,
            "validation": {"inputs": as_npy(X_test.astype(">f8")), "targets": as_npy(Y_test)},
        },
        "data": {
            "inputs": as_npy(np.asfortranarray(X32)),
            "targets": as_npy(Y32.astype(np.int16)),
            "batch_size": 25,
        },
    }
    models = []
    for spec in (as_rows, as_files):
        job = client.submit(spec)
        done = client.wait(job["id"], timeout=120)
        assert done["status"] == "succeeded", done
        assert done["data"]["samples"] == 600 and done["data"]["validation_samples"] == len(X_test)
        npz = client.get(f"/v1/jobs/{job['id']}/model.npz")
        models.append((job["id"], dict(np.load(io.BytesIO(npz.content), allow_pickle=False))))
    (_, rows_model), (files_job, files_model) = models
    for name in ("W0", "b0", "W1", "b1"):
        assert files_model[name].dtype == np.float32
        assert np.array_equal(files_model[name], rows_model[name]), name

    by_rows = client.post(f"/v1/jobs/{files_job}/predict", json={"inputs": X_test[:5].tolist()})
    by_file = client.post(f"/v1/jobs/{files_job}/predict", json={"inputs": as_npy(X_test[:5])})
    assert by_rows.status_code == by_file.status_code == 200
    assert by_file.json() == by_rows.json()
    bad = client.post(f"/v1/jobs/{files_job}/predict", json={"inputs": as_npy(X_test[:5, :3])})
    assert bad.status_code == 422 and "inputs" in bad.json()["detail"]


def test_nesterov_a_step_schedule_and_clipping_through_the_stack(stack, digits):
    X_train, _, Y_train, _ = digits
    client = stack.client()
    options = {
        "optimizer": {"name": "momentum", "nesterov": True},
        "schedule": {"name": "step", "step_size": 2, "gamma": 0.5},
        "clip_norm": 1.0,
    }
    job = client.submit(
        {
            "structure": [64, 30, 10],
            "epochs": 5,
            "learning_rate": 0.1,
            "seed": 4,
            "data": {"inputs": X_train.tolist(), "targets": Y_train.tolist(), "batch_size": 10},
            "options": options,
        }
    )
    done = client.wait(job["id"], timeout=120)
    assert done["status"] == "succeeded", done
    given = {  # as submitted, with the defaults filled in
        "optimizer": {"name": "momentum", "momentum": 0.9, "dampening": 0.0, "nesterov": True},
        "schedule": {"name": "step", "step_size": 2, "gamma": 0.5, "per": "epoch"},
        "clip_norm": 1.0,
    }
    for seen in (done, client.job(job["id"])):
        assert {k: seen["options"][k] for k in given} == given

    metrics = client.get(f"/v1/jobs/{job['id']}/metrics").json()["metrics"]
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4, 5]
    # 0.1 * gamma ** ((epoch - 1) // step_size), exactly: halving a float is exact
    assert [m["learning_rate"] for m in metrics] == [0.1, 0.1, 0.05, 0.05, 0.025]

    model = client.get(f"/v1/jobs/{job['id']}/model").json()
    lineage = model["lineage"]["options"]
    assert {k: lineage[k] for k in given} == given
    # and it trained that way: core on the stored spec gives the served weights
    exact = reference_weights(stack.database_url, job["id"])
    assert all(np.array_equal(x, y) for x, y in zip(exact, model_weights(client, job["id"])))


def long_job(epochs=500):
    rng = np.random.RandomState(0)
    return {
        "structure": [20, 64, 5],
        "epochs": epochs,
        "learning_rate": 0.5,
        "seed": 3,
        "data": {
            "inputs": rng.rand(2000, 20).tolist(),
            "targets": np.eye(5)[rng.randint(5, size=2000)].tolist(),
            "batch_size": 1,
        },
    }


def test_cancel_a_running_job_stops_it_within_seconds(stack):
    client = stack.client()
    job = client.submit(long_job())
    client.wait(job["id"], statuses=("running",), timeout=30)
    time.sleep(0.5)
    asked = time.monotonic()
    response = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code in (200, 202), response.text
    done = client.wait(job["id"], timeout=10)
    assert done["status"] == "cancelled"
    assert time.monotonic() - asked < 3.0
    assert done["progress"]["epoch"] < 500
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 409
    assert client.get(f"/v1/jobs/{job['id']}/model").status_code == 409


def test_cancel_a_queued_job_at_once(stack):
    client = stack.client()
    blocker = client.submit(long_job())  # the single worker is busy with this one
    client.wait(blocker["id"], statuses=("running",), timeout=30)
    queued = client.submit(long_job(epochs=2))
    response = client.post(f"/v1/jobs/{queued['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    client.post(f"/v1/jobs/{blocker['id']}/cancel")
    client.wait(blocker["id"], timeout=10)
    time.sleep(0.5)  # the worker now takes the cancelled job's message and must skip it
    again = client.job(queued["id"])
    assert again["status"] == "cancelled" and again["attempts"] == 0


def test_a_tenant_cannot_see_another_tenants_job(stack):
    alice, bob = stack.client("alice"), stack.client("bob")
    job = alice.submit(long_job(epochs=1))
    for path in ("", "/metrics", "/model"):
        response = bob.get(f"/v1/jobs/{job['id']}{path}")
        assert response.status_code == 404
        assert response.headers["Content-Type"] == "application/problem+json"
    assert bob.post(f"/v1/jobs/{job['id']}/cancel").status_code == 404
    assert (
        bob.post(f"/v1/jobs/{job['id']}/predict", json={"inputs": [[0.0] * 20]}).status_code == 404
    )
    assert job["id"] not in [j["id"] for j in bob.get("/v1/jobs").json()["jobs"]]
    assert job["id"] in [j["id"] for j in alice.get("/v1/jobs").json()["jobs"]]


def count_jobs(database_url) -> int:
    with get_database(database_url).session() as s:
        return s.query(Job).count()


@pytest.mark.parametrize(
    "change,field,words",
    [
        (lambda s: s["data"]["inputs"][1].append(0.5), "data.inputs[1]", ["expected 3", "got 4"]),
        (lambda s: s["data"]["targets"][0].pop(), "data.targets[0]", ["expected 2", "got 1"]),
        (lambda s: s.update(structure=[3]), "structure", ["at least 2"]),
        (lambda s: s.update(structure=[3, 0, 2]), "structure[1]", ["greater than or equal to 1"]),
        (lambda s: s.update(epochs=0), "epochs", ["greater than or equal to 1"]),
        (lambda s: s.update(learning_rate=-1.0), "learning_rate", ["greater than 0"]),
        (lambda s: s.update(options={"momentum": 0.9}), "options.momentum", ["not permitted"]),
        (
            lambda s: s.update(options={"optimizer": {"name": "rmsprop"}}),
            "options.optimizer",
            ["sgd", "adam"],
        ),
    ],
)
def test_invalid_jobs_get_a_clear_422_and_store_nothing(stack, change, field, words):
    spec = {
        "structure": [3, 2, 2],
        "epochs": 1,
        "learning_rate": 1.0,
        "data": {
            "inputs": [[0.1, 0.2, 0.3] for _ in range(3)],
            "targets": [[1.0, 0.0] for _ in range(3)],
        },
    }
    change(spec)
    before = count_jobs(stack.database_url)
    response = stack.client().post("/v1/jobs", json=spec)
    assert response.status_code == 422, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert field in [e["field"] for e in problem["errors"]], problem
    for word in words:
        assert word in problem["detail"], problem
    assert count_jobs(stack.database_url) == before


def test_non_finite_numbers_and_malformed_json(stack):
    client = stack.client()
    body = (
        '{"structure": [2, 1], "epochs": 1, "learning_rate": 1.0, '
        '"data": {"inputs": [[1, NaN]], "targets": [[1]]}}'
    )
    response = client.post("/v1/jobs", data=body, headers={"Content-Type": "application/json"})
    # NaN is not JSON (RFC 8259): the body is malformed, not a field
    assert response.status_code == 400 and "NaN is not a JSON value" in response.json()["detail"]
    body = body.replace("NaN", "1e999")  # JSON, but no finite number
    response = client.post("/v1/jobs", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "data.inputs[0][1]"
    response = client.post(
        "/v1/jobs", data="{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400 and "malformed JSON" in response.json()["detail"]


def test_health_and_readiness(stack):
    client = stack.client()
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "broker": "ok"}
    assert client.get("/openapi.json").json()["openapi"].startswith("3.1")


def test_a_diff_finds_the_first_epoch_two_runs_part_and_what_differs(stack):
    client = stack.client()
    rng = np.random.default_rng(3)
    inputs = rng.random((40, 3))
    targets = np.eye(2)[(inputs.sum(axis=1) > 1.5).astype(int)]
    base = {
        "structure": [3, 5, 2],
        "epochs": 5,
        "learning_rate": 1.0,
        "seed": 11,
        "data": {"inputs": inputs.tolist(), "targets": targets.tolist(), "batch_size": 8},
    }
    halved = {**base, "options": {"schedule": {"name": "step", "step_size": 2, "gamma": 0.5}}}
    plain, again, stepped = (client.submit(spec)["id"] for spec in (base, base, halved))
    for job_id in (plain, again, stepped):
        assert client.wait(job_id, timeout=60)["status"] == "succeeded"

    # the same spec and seed: nothing differs, to the bit
    same = client.get(f"/v1/jobs/{plain}/diff", params={"other": again}).json()
    assert same["spec"] == [] and same["epochs_compared"] == 5
    assert same["first_divergent_epoch"] is None and same["weights_equal"] is True

    # the step schedule halves the rate from epoch 3 on: epochs 1 and 2 are the same bits
    parted = client.get(f"/v1/jobs/{plain}/diff", params={"other": stepped}).json()
    assert parted["spec"] == [
        {
            "field": "options.schedule",
            "this": None,
            "other": {"name": "step", "step_size": 2, "gamma": 0.5, "per": "epoch"},
        }
    ]
    assert parted["first_divergent_epoch"] == 3 and parted["weights_equal"] is False
    assert parted["state_epoch"] is None  # both states (after epoch 5) are past the parting

    # stopped at epoch 2, before the schedules part: their states there are the same bits
    early = [client.submit({**spec, "epochs": 2})["id"] for spec in (base, halved)]
    for job_id in early:
        assert client.wait(job_id, timeout=60)["status"] == "succeeded"
    before = client.get(f"/v1/jobs/{early[0]}/diff", params={"other": early[1]}).json()
    assert before["first_divergent_epoch"] is None
    assert before["state_epoch"] == 2 and before["states_equal"] is True
    # other seeds part at epoch 1: no state of theirs comes before it
    other_seed = client.submit({**base, "epochs": 2, "seed": 12})["id"]
    assert client.wait(other_seed, timeout=60)["status"] == "succeeded"
    seeds = client.get(f"/v1/jobs/{early[0]}/diff", params={"other": other_seed}).json()
    assert seeds["first_divergent_epoch"] == 1 and seeds["state_epoch"] is None
    assert parted["this_metrics"]["learning_rate"] == 1.0
    assert parted["other_metrics"]["learning_rate"] == 0.5

    elsewhere = stack.client("bob").get(f"/v1/jobs/{plain}/diff", params={"other": stepped})
    assert elsewhere.status_code == 404
    unknown = client.get(f"/v1/jobs/{plain}/diff", params={"other": "x"})
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "query.other"
