"""Models with lineage, warm starts, predictions over a data set, deletion and usage, through
Flask's test client on a real database and Redis; jobs are trained by the worker's own
``run_job`` in this process (the live stack trains them through Celery elsewhere)."""

from __future__ import annotations

import io
import json
import uuid

import numpy as np
import pytest
import redis
from sqlalchemy import func, select

from api import create_app
from core import Network
from store.db import get_database
from store.models import Blob, Dataset
from tests.conftest import make_token
from worker.training import run_job

XOR = {
    "structure": [2, 4, 1],
    "epochs": 30,
    "learning_rate": 2.0,
    "seed": 9,
    "data": {"inputs": [[0, 0], [0, 1], [1, 0], [1, 1]], "targets": [[0], [1], [1], [0]]},
}


@pytest.fixture
def env(test_settings):
    queue = f"models-{uuid.uuid4().hex[:8]}"
    settings = test_settings.model_copy(update={"training_queue": queue})
    app = create_app(settings)
    client = app.test_client()
    token = make_token(settings.database_url, f"t-{uuid.uuid4().hex[:8]}")
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    yield client, settings
    redis.Redis.from_url(settings.redis_url).delete(queue)


def trained(client, settings, spec=XOR) -> dict:
    answer = client.post("/v1/jobs", json=spec)
    assert answer.status_code == 202, answer.json
    db = get_database(settings.database_url)
    assert run_job(answer.json["id"], db=db, settings=settings, worker="test").status == "succeeded"
    return client.get(f"/v1/jobs/{answer.json['id']}").json


def test_a_model_carries_its_lineage_as_json_and_in_its_npz(env):
    client, settings = env
    job = trained(client, settings)
    model = client.get(f"/v1/jobs/{job['id']}/model").json
    lineage = model["lineage"]
    assert lineage["job_id"] == job["id"] and lineage["data"] == "inline"
    assert lineage["seed"] == 9 and lineage["epochs_run"] == 30 and lineage["epochs"] == 30
    assert lineage["options"]["activation"] == "sigmoid" and lineage["init_from"] is None
    assert lineage["metrics"]["epoch"] == 30
    npz = np.load(io.BytesIO(client.get(f"/v1/jobs/{job['id']}/model.npz").data))
    assert json.loads(str(npz["lineage"])) == lineage
    np.testing.assert_array_equal(npz["W0"], np.array(model["weights"][0]))


def test_init_from_starts_from_a_finished_job_s_weights(env):
    client, settings = env
    source = trained(client, settings)
    weights = client.get(f"/v1/jobs/{source['id']}/model").json
    # one epoch at a vanishing rate: the weights stay where they started
    warm = trained(
        client, settings, {**XOR, "epochs": 1, "learning_rate": 1e-300, "init_from": source["id"]}
    )
    model = client.get(f"/v1/jobs/{warm['id']}/model").json
    assert model["lineage"]["init_from"] == source["id"]
    for got, want in zip(
        model["weights"] + model["biases"], weights["weights"] + weights["biases"]
    ):
        np.testing.assert_array_equal(np.array(got), np.array(want))
    cold = Network([2, 4, 1], rng=np.random.RandomState(9))
    assert not np.array_equal(np.array(model["weights"][0]), cold.W_n[0])

    other = client.post("/v1/jobs", json={**XOR, "structure": [2, 3, 1], "init_from": source["id"]})
    assert other.status_code == 422 and other.json["errors"][0]["type"] == "init_from"
    assert "[2, 4, 1]" in other.json["errors"][0]["msg"]
    unknown = client.post("/v1/jobs", json={**XOR, "init_from": str(uuid.uuid4())})
    assert unknown.status_code == 422 and unknown.json["errors"][0]["field"] == "init_from"
    queued = client.post("/v1/jobs", json=XOR).json
    not_yet = client.post("/v1/jobs", json={**XOR, "init_from": queued["id"]})
    assert not_yet.status_code == 422 and "queued" in not_yet.json["errors"][0]["msg"]


def test_predictions_over_a_data_set_stream_back_in_order(env):
    client, settings = env
    job = trained(client, settings)
    rng = np.random.default_rng(2)
    inputs = rng.random((5000, 2))
    buffer = io.BytesIO()
    np.savez(buffer, inputs=inputs, targets=np.zeros((5000, 1)))
    small_chunks = create_app(settings.model_copy(update={"blob_chunk_bytes": 4096}))
    uploader = small_chunks.test_client()
    uploader.environ_base.update(client.environ_base)
    dataset = uploader.post(
        "/v1/datasets", data=buffer.getvalue(), headers={"Content-Type": "application/x-npz"}
    ).json
    answer = client.post(f"/v1/jobs/{job['id']}/predict.npz", json={"dataset_id": dataset["id"]})
    assert answer.status_code == 200 and answer.mimetype == "application/octet-stream"
    outputs = np.load(io.BytesIO(answer.data))["outputs"]
    model = client.get(f"/v1/jobs/{job['id']}/model").json
    net = Network([2, 4, 1])
    net.set_parameters(model["weights"], model["biases"])
    np.testing.assert_array_equal(outputs, net.predict(inputs))
    wrong = client.post(f"/v1/jobs/{job['id']}/predict.npz", json={"dataset_id": str(uuid.uuid4())})
    assert wrong.status_code == 422 and wrong.json["errors"][0]["type"] == "dataset_not_found"


def test_deleting_a_finished_job_removes_what_it_stored_but_not_its_data_set(env):
    client, settings = env
    db = get_database(settings.database_url)
    buffer = io.BytesIO()
    np.savez(
        buffer, inputs=np.array([[0.0, 0], [0, 1], [1, 0], [1, 1]]), targets=np.eye(2)[[0, 1, 1, 0]]
    )
    dataset = client.post(
        "/v1/datasets", data=buffer.getvalue(), headers={"Content-Type": "application/x-npz"}
    ).json
    spec = {**XOR, "structure": [2, 3, 2], "data": {"dataset_id": dataset["id"], "batch_size": 2}}
    queued = client.post("/v1/jobs", json=XOR).json
    refused = client.delete(f"/v1/jobs/{queued['id']}")
    assert refused.status_code == 409 and "cancel it first" in refused.json["detail"]
    before = client.get("/v1/usage").json
    job = trained(client, settings, spec)
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Blob).where(Blob.job_id == job["id"]))
    after = client.get("/v1/usage").json
    assert after["jobs"]["count"] == before["jobs"]["count"] + 1
    assert after["jobs"]["bytes"] > before["jobs"]["bytes"]
    assert after["datasets"] == {"count": 1, "bytes": dataset["bytes"]}
    assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}/metrics").status_code == 404
    with db.session() as s:
        assert not s.scalar(select(func.count()).select_from(Blob).where(Blob.job_id == job["id"]))
        assert s.get(Dataset, dataset["id"]) is not None
    assert client.get("/v1/usage").json["jobs"] == before["jobs"]


def test_a_network_past_max_parameters_is_refused_at_submit_naming_the_structure(env):
    client, _ = env
    answer = client.post("/v1/jobs", json={**XOR, "structure": [2, 8192, 8192, 1]})
    assert answer.status_code == 422
    error = next(e for e in answer.json["errors"] if e["field"] == "structure")
    assert "MAX_PARAMETERS" in error["msg"] and "67" in error["msg"]  # 67,133,441 of them


def test_a_model_too_large_for_json_is_refused_before_it_is_loaded_and_npz_has_it(
    test_settings,
):
    settings = test_settings.model_copy(
        update={"training_queue": f"models-{uuid.uuid4().hex[:8]}", "max_json_model_parameters": 10}
    )
    client = create_app(settings).test_client()
    token = make_token(settings.database_url, f"t-{uuid.uuid4().hex[:8]}")
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    job = trained(client, settings)  # 2-4-1: 17 weights and biases
    answer = client.get(f"/v1/jobs/{job['id']}/model")
    assert answer.status_code == 409
    assert answer.json["type"] == "/problems/model-too-large-for-json"
    assert "model.npz" in answer.json["detail"]
    npz = np.load(io.BytesIO(client.get(f"/v1/jobs/{job['id']}/model.npz").data))
    assert npz["W0"].shape == (2, 4)
    redis.Redis.from_url(settings.redis_url).delete(settings.training_queue)


def test_the_predict_cache_keeps_to_its_bytes():
    from api.services import ModelCache

    network = Network([2, 4, 1], rng=1)
    size = sum(w.nbytes + b.nbytes for w, b in zip(network.W_n, network.B_n))
    cache = ModelCache(max_bytes=2 * size)
    for job in ("a", "b", "c"):
        cache.get(job, network.to_arrays)
    assert list(cache._models) == ["b", "c"] and cache._bytes == 2 * size
    too_big = ModelCache(max_bytes=size - 1)
    too_big.get("a", network.to_arrays)
    assert not too_big._models and too_big._bytes == 0


def _client_with(test_settings, **changes):
    settings = test_settings.model_copy(
        update={"training_queue": f"models-{uuid.uuid4().hex[:8]}", **changes}
    )
    client = create_app(settings).test_client()
    token = make_token(settings.database_url, f"t-{uuid.uuid4().hex[:8]}")
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client, settings


def test_validation_rows_count_in_the_compute_budget(test_settings):
    # XOR: 4 rows x 30 epochs x 17 parameters = 2,040 trained; 4 validation rows make 4,080
    client, settings = _client_with(test_settings, max_job_cost=3000)
    validation = {"inputs": XOR["data"]["inputs"], "targets": XOR["data"]["targets"]}
    refused = client.post("/v1/jobs", json={**XOR, "options": {"validation": validation}})
    assert refused.status_code == 422
    assert "rows trained and validated on 8" in refused.json["errors"][0]["msg"]
    assert client.post("/v1/jobs", json=XOR).status_code == 202
    redis.Redis.from_url(settings.redis_url).delete(settings.training_queue)


def test_a_prediction_past_its_budget_is_refused_before_it_runs(test_settings):
    client, settings = _client_with(test_settings, max_predict_cost=40)
    job = trained(client, settings)  # 2-4-1: 17 parameters
    two = client.post(f"/v1/jobs/{job['id']}/predict", json={"inputs": [[0, 1], [1, 0]]})
    assert two.status_code == 200  # 34
    three = client.post(f"/v1/jobs/{job['id']}/predict", json={"inputs": [[0, 1]] * 3})
    assert three.status_code == 422 and three.json["errors"][0]["field"] == "inputs"
    assert "MAX_PREDICT_COST" in three.json["errors"][0]["msg"]
    redis.Redis.from_url(settings.redis_url).delete(settings.training_queue)


def test_what_jobs_store_counts_against_a_quota_shown_in_usage(test_settings):
    client, settings = _client_with(test_settings, max_job_storage_bytes=16_000)
    usage = client.get("/v1/usage").json
    assert usage["job_quota_bytes"] == 16_000 and usage["jobs"]["bytes"] == 0
    # its data, model and final state (what a continued job carries on from), as .npz
    first = trained(client, settings)
    stored = client.get("/v1/usage").json["jobs"]["bytes"]
    assert 8_000 < stored < 16_000
    # 401 weights: a model and a state of about 3.2 kB each would pass the quota
    refused = client.post("/v1/jobs", json={**XOR, "structure": [2, 100, 1]})
    assert refused.status_code == 413 and refused.json["type"] == "/problems/storage-quota"
    assert "MAX_JOB_STORAGE_BYTES" in refused.json["detail"]
    assert client.delete(f"/v1/jobs/{first['id']}").status_code == 204
    assert client.get("/v1/usage").json["jobs"]["bytes"] == 0
    redis.Redis.from_url(settings.redis_url).delete(settings.training_queue)


def test_init_from_copies_the_weights_inside_the_database(env):
    from sqlalchemy import event

    client, settings = env
    source = trained(client, settings)
    engine = get_database(settings.database_url).engine
    statements = []

    def seen(_connection, _cursor, statement, *_):
        statements.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", seen)
    try:
        answer = client.post("/v1/jobs", json={**XOR, "init_from": source["id"]})
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert answer.status_code == 202, answer.json
    copies = [s for s in statements if s.startswith("INSERT INTO blob_chunk") and "SELECT" in s]
    reads = [s for s in statements if s.startswith("SELECT") and "blob_chunk.data" in s]
    assert len(copies) == 1 and reads == []  # no chunk came into the API process


def test_a_sweep_s_trials_count_against_the_job_storage_quota(test_settings):
    client, settings = _client_with(test_settings, max_job_storage_bytes=60_000)
    buffer = io.BytesIO()
    np.savez(
        buffer, inputs=np.array(XOR["data"]["inputs"]), targets=np.array(XOR["data"]["targets"])
    )
    dataset = client.post(
        "/v1/datasets", data=buffer.getvalue(), content_type="application/x-npz"
    ).json
    base = {**XOR, "data": {"dataset_id": dataset["id"]}}
    sweep = {
        "base": base,
        "search": {"structure[1]": {"choice": [4, 100]}},
        "objective": {"metric": "cost"},
    }
    # the widest trial, 2-100-1, stores a model and a checkpoint of 401 float64 each:
    # 6,416 bytes a trial, 64,160 for ten
    refused = client.post("/v1/sweeps", json={**sweep, "trials": 10})
    assert refused.status_code == 413 and refused.json["type"] == "/problems/storage-quota"
    assert "this sweep's 10 trials needs about 64160" in refused.json["detail"]
    assert client.post("/v1/sweeps", json={**sweep, "trials": 9}).status_code == 202
    redis.Redis.from_url(settings.redis_url).delete(settings.training_queue)


def test_an_optimizer_s_state_counts_in_what_a_job_will_store(test_settings):
    client, settings = _client_with(test_settings, max_job_storage_bytes=10_000)
    wide = {**XOR, "structure": [2, 100, 1]}  # 401 float64: a model of 3,208 bytes
    # sgd: the model and the checkpoint's weights; adam: and its two moment buffers
    assert client.post("/v1/jobs", json=wide).status_code == 202
    adam = {**wide, "options": {"optimizer": {"name": "adam"}}}
    refused = client.post("/v1/jobs", json=adam)
    assert refused.status_code == 413 and "optimizer's state" in refused.json["detail"]
    assert "needs about 12928" in refused.json["detail"]  # 96 bytes of data + 4 x 3,208
    redis.Redis.from_url(settings.redis_url).delete(settings.training_queue)
