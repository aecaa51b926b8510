"""Data sets through Flask's test client on a real database (PostgreSQL and SQLite) and a
real Redis: every upload format, a malformed one of each (a clear 4xx, nothing stored),
dedupe, deletion rules, and jobs that train on a data set."""

from __future__ import annotations

import io
import threading
import uuid
import zipfile

import numpy as np
import pytest
import redis
from sqlalchemy import func, select

from api import create_app
from store.db import get_database
from store.models import Dataset, DatasetChunk
from tests.conftest import make_token

NPZ = {"Content-Type": "application/x-npz"}
rng = np.random.default_rng(5)
X = rng.random((300, 4)).astype(np.float32)
Y = np.eye(3)[rng.integers(0, 3, 300)]


def npz(compressed=False, **arrays) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


@pytest.fixture
def tenant(test_settings):
    """(app, client, tenant, settings) with a fresh tenant; a queue no worker reads."""
    queue = f"datasets-{uuid.uuid4().hex[:8]}"
    settings = test_settings.model_copy(
        update={"training_queue": queue, "max_dataset_bytes": 2**20, "blob_chunk_bytes": 4096}
    )
    app = create_app(settings)
    name = f"t-{uuid.uuid4().hex[:8]}"
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {make_token(settings.database_url, name)}"
    yield app, client, name, settings
    redis.Redis.from_url(settings.redis_url).delete(queue)


def stored(database_url: str, tenant: str) -> tuple[int, int]:
    """(data sets, chunks) of the tenant."""
    with get_database(database_url).session() as s:
        ids = list(s.scalars(select(Dataset.id).where(Dataset.tenant == tenant)))
        chunks = s.scalar(
            select(func.count()).select_from(DatasetChunk).where(DatasetChunk.dataset_id.in_(ids))
        )
    return len(ids), chunks


def test_an_npz_is_stored_described_and_returned_exactly(tenant):
    _, client, name, settings = tenant
    answer = client.post("/v1/datasets?name=digits", data=npz(inputs=X, targets=Y), headers=NPZ)
    assert answer.status_code == 201, answer.json
    body = answer.json
    assert answer.headers["Location"] == f"/v1/datasets/{body['id']}"
    assert body["samples"] == 300 and body["name"] == "digits"
    assert body["inputs"] == {"shape": [300, 4], "dtype": "<f4"}
    assert body["targets"] == {"shape": [300, 3], "dtype": "<f8"}
    assert body["bytes"] == X.nbytes + Y.nbytes and len(body["sha256"]) == 64
    assert stored(settings.database_url, name)[1] > 2  # chunked (4 KiB chunks here)
    assert client.get(f"/v1/datasets/{body['id']}").json == body
    back = client.get(f"/v1/datasets/{body['id']}/data")
    assert back.status_code == 200 and back.mimetype == "application/octet-stream"
    with np.load(io.BytesIO(back.data), allow_pickle=False) as arrays:
        assert np.array_equal(arrays["inputs"], X) and arrays["inputs"].dtype == np.float32
        assert np.array_equal(arrays["targets"], Y)


def test_the_same_arrays_again_are_the_same_data_set(tenant, test_settings):
    _, client, name, settings = tenant
    first = client.post("/v1/datasets", data=npz(inputs=X, targets=Y), headers=NPZ)
    # compressed, the members in the other order: the same content
    again = client.post("/v1/datasets", data=npz(compressed=True, targets=Y, inputs=X), headers=NPZ)
    assert first.status_code == 201 and again.status_code == 200
    assert again.headers["Deduplicated"] == "true" and again.json["id"] == first.json["id"]
    assert stored(settings.database_url, name)[0] == 1
    # another tenant stores its own copy
    other = create_app(settings).test_client()
    token = make_token(settings.database_url, f"o-{uuid.uuid4().hex[:6]}")
    theirs = other.post(
        "/v1/datasets",
        data=npz(inputs=X, targets=Y),
        headers={**NPZ, "Authorization": f"Bearer {token}"},
    )
    assert theirs.status_code == 201 and theirs.json["id"] != first.json["id"]
    assert client.get(f"/v1/datasets/{theirs.json['id']}").status_code == 404


def test_csv_with_target_columns_or_a_class_column(tenant):
    _, client, _, _ = tenant
    rows = "\n".join(f"{i},{i * 0.5},{i % 2},{1 - i % 2}" for i in range(20))
    answer = client.post(
        "/v1/datasets?targets=y0,y1&dtype=float32",
        data="a,b,y0,y1\n" + rows + "\n",
        headers={"Content-Type": "text/csv"},
    )
    assert answer.status_code == 201, answer.json
    assert answer.json["inputs"] == {"shape": [20, 2], "dtype": "<f4"}
    assert answer.json["targets"] == {"shape": [20, 2], "dtype": "<f4"}
    labelled = "x1,kind,x2\n" + "\n".join(
        f"{i},{['cat', 'dog', 'emu'][i % 3]},{i}" for i in range(9)
    )
    answer = client.post(
        "/v1/datasets?label=kind", data=labelled, headers={"Content-Type": "text/csv"}
    )
    assert answer.status_code == 201, answer.json
    assert answer.json["classes"] == ["cat", "dog", "emu"]
    back = np.load(io.BytesIO(client.get(f"/v1/datasets/{answer.json['id']}/data").data))
    assert back["inputs"].tolist()[:2] == [[0, 0], [1, 1]]
    assert back["targets"].tolist()[:4] == [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]]


def test_a_browser_form_and_the_json_form(tenant):
    _, client, _, _ = tenant
    form = {"file": (io.BytesIO(npz(inputs=X[:10], targets=Y[:10])), "part.npz")}
    answer = client.post("/v1/datasets", data=form, content_type="multipart/form-data")
    assert answer.status_code == 201 and answer.json["samples"] == 10, answer.json
    csv_form = {"file": (io.BytesIO(b"a,b,y\n1,2,0\n3,4,1\n"), "small.csv")}
    answer = client.post(
        "/v1/datasets?targets=y", data=csv_form, content_type="multipart/form-data"
    )
    assert answer.status_code == 201 and answer.json["targets"]["shape"] == [2, 1]
    answer = client.post(
        "/v1/datasets",
        json={
            "inputs": [[0, 0], [0, 1]],
            "targets": [[0], [1]],
            "name": "tiny",
            "labels": {"a": "b"},
        },
    )
    assert answer.status_code == 201 and answer.json["labels"] == {"a": "b"}, answer.json


def _member_that_is_not_an_array() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("inputs.npy", b"hello, not an array")
        archive.writestr("targets.npy", b"nor this")
    return buffer.getvalue()


def _with_nan() -> bytes:
    bad = X.copy()
    bad[17, 2] = np.nan
    return npz(inputs=bad, targets=Y)


MALFORMED = [
    ("truncated npz", NPZ, npz(inputs=X, targets=Y)[:1000], "", 422, "not a complete .npz"),
    ("member not an array", NPZ, _member_that_is_not_an_array(), "", 422, "not a .npy array"),
    (
        "pickled object array",
        NPZ,
        npz(inputs=np.array([[{"a": 1}]], dtype=object), targets=np.ones((1, 1))),
        "",
        422,
        "pickled object array",
    ),
    ("NaN in an npz", NPZ, _with_nan(), "", 422, "inputs.17: expected finite numbers"),
    ("rows differ", NPZ, npz(inputs=X, targets=Y[:299]), "", 422, "expected 300 rows"),
    ("no targets", NPZ, npz(inputs=X), "", 422, "targets: missing"),
    ("1-D inputs", NPZ, npz(inputs=X[:, 0], targets=Y), "", 422, "expected a 2-D array"),
    ("over the size limit", NPZ, b"\0" * (2**20 + 10), "", 413, "limit is 1048576"),
    (
        "ragged CSV",
        {"Content-Type": "text/csv"},
        b"a,b,y\n1,2,0\n1,2\n",
        "?targets=y",
        422,
        "line 3: expected 3 cells",
    ),
    (
        "non-numeric cell",
        {"Content-Type": "text/csv"},
        b"a,b,y\n1,2,0\n1,two,1\n",
        "?targets=y",
        422,
        "line 3.b: expected a number, got 'two'",
    ),
    (
        "NaN in a CSV",
        {"Content-Type": "text/csv"},
        b"a,b,y\n1,2,0\n1,nan,1\n",
        "?targets=y",
        422,
        "inputs.1: expected finite numbers",
    ),
    (
        "unknown label column",
        {"Content-Type": "text/csv"},
        b"a,b,y\n1,2,0\n",
        "?label=kind",
        422,
        "no column 'kind' in the header (columns: a, b, y)",
    ),
    (
        "CSV that is not UTF-8",
        {"Content-Type": "text/csv"},
        b"a,b,y\n1,2,\xff\n",
        "?targets=y",
        422,
        "not UTF-8",
    ),
    ("another media type", {"Content-Type": "text/plain"}, b"1,2", "", 415, "application/x-npz"),
]


@pytest.mark.parametrize(
    "headers, body, query, status, words",
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_a_malformed_upload_gets_a_clear_4xx_and_stores_nothing(
    tenant, headers, body, query, status, words
):
    _, client, name, settings = tenant
    answer = client.post(f"/v1/datasets{query}", data=body, headers=headers)
    assert answer.status_code == status, answer.json
    assert answer.mimetype == "application/problem+json"
    assert words in answer.json["detail"], answer.json["detail"]
    assert stored(settings.database_url, name) == (0, 0)


def _dataset(client, inputs=X, targets=Y) -> str:
    answer = client.post("/v1/datasets", data=npz(inputs=inputs, targets=targets), headers=NPZ)
    assert answer.status_code in (200, 201), answer.json
    return answer.json["id"]


def job_on(dataset_id: str, **changes) -> dict:
    job = {
        "structure": [4, 5, 3],
        "epochs": 3,
        "learning_rate": 1.0,
        "seed": 3,
        "data": {"dataset_id": dataset_id, "batch_size": 10},
    }
    job.update(changes)
    return job


def test_jobs_on_a_data_set_are_checked_from_its_metadata(tenant):
    _, client, _, _ = tenant
    dataset_id = _dataset(client)
    accepted = client.post("/v1/jobs", json=job_on(dataset_id, options={"validation_split": 0.2}))
    assert accepted.status_code == 202, accepted.json
    data = accepted.json["data"]
    # stratified: each of the 3 classes gives a fifth of its rows
    assert data["form"] == "dataset" and data["dataset_id"] == dataset_id
    assert data["samples"] + data["validation_samples"] == 300
    assert 55 <= data["validation_samples"] <= 65
    wrong = client.post("/v1/jobs", json=job_on(dataset_id, structure=[3, 5, 2]))
    assert wrong.status_code == 422
    assert {e["msg"] for e in wrong.json["errors"]} == {
        "the data set's inputs have 4 columns, the network's structure[0] is 3",
        "the data set's targets have 3 columns, the network's structure[-1] is 2",
    }
    missing = client.post("/v1/jobs", json=job_on(str(uuid.uuid4())))
    assert missing.status_code == 422 and missing.json["errors"][0]["type"] == "dataset_not_found"
    both = client.post(
        "/v1/jobs",
        json=job_on(
            dataset_id, options={"validation_split": 0.2, "validation": {"dataset_id": dataset_id}}
        ),
    )
    assert both.status_code == 422 and both.json["errors"][0]["field"] == "options.validation_split"
    # the budget counts the data set's samples
    budget = create_app_with(tenant, max_job_cost=300 * 3 * 10)
    over = budget.post("/v1/jobs", json=job_on(dataset_id, epochs=4))
    assert over.status_code == 422 and over.json["errors"][0]["type"] == "budget_exceeded"
    assert "rows trained and validated on 300" in over.json["errors"][0]["msg"]
    # cross-entropy needs targets in [0, 1], known from the stored statistics
    wide = _dataset(client, targets=Y * 2)
    ce = client.post("/v1/jobs", json=job_on(wide, options={"cost": "cross_entropy"}))
    assert ce.status_code == 422 and ce.json["errors"][0]["type"] == "target_range"


def create_app_with(tenant, **changes):
    app, client, _, settings = tenant
    other = create_app(settings.model_copy(update=changes)).test_client()
    other.environ_base.update(client.environ_base)
    return other


def test_a_data_set_in_use_cannot_be_deleted_and_finished_jobs_keep_their_models(tenant):
    _, client, _, _ = tenant
    dataset_id = _dataset(client)
    job = client.post("/v1/jobs", json=job_on(dataset_id)).json
    refused = client.delete(f"/v1/datasets/{dataset_id}")
    assert refused.status_code == 409 and job["id"] in refused.json["detail"]
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    assert client.delete(f"/v1/datasets/{dataset_id}").status_code == 204
    assert client.get(f"/v1/datasets/{dataset_id}").status_code == 404
    assert client.delete(f"/v1/datasets/{dataset_id}").status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 200


def test_data_sets_list_a_page_at_a_time(tenant):
    _, client, _, _ = tenant
    ids = set()
    for i in range(5):
        ids.add(_dataset(client, inputs=X[: 10 + i], targets=Y[: 10 + i]))
    seen, cursor = [], None
    while True:
        page = client.get(
            "/v1/datasets", query_string={"limit": 2, **({"cursor": cursor} if cursor else {})}
        ).json
        seen += [d["id"] for d in page["datasets"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert set(seen) == ids and len(seen) == 5


def test_the_tenant_s_storage_quota_is_413_and_keeps_nothing(tenant):
    _, client, name, settings = tenant
    small = create_app_with(tenant, max_dataset_storage_bytes=X.nbytes + Y.nbytes + 100)
    assert small.post("/v1/datasets", data=npz(inputs=X, targets=Y), headers=NPZ).status_code == 201
    over = small.post("/v1/datasets", data=npz(inputs=X[:50], targets=Y[:50]), headers=NPZ)
    assert over.status_code == 413 and "storage quota" in over.json["detail"]
    assert stored(settings.database_url, name)[0] == 1


def test_concurrent_uploads_never_overshoot_the_quota_together(tenant):
    _, _, name, settings = tenant
    inputs, targets = rng.random((8, 4000, 20)), np.ones((4000, 1))  # 640 KB a data set
    each = inputs[0].nbytes + targets.nbytes
    small = create_app_with(
        tenant, max_dataset_storage_bytes=3 * each + 100, max_transfers_per_tenant=8
    )
    bodies = [npz(inputs=member, targets=targets) for member in inputs]
    statuses = []
    start = threading.Barrier(len(bodies))

    def upload(body):
        start.wait()
        statuses.append(small.post("/v1/datasets", data=body, headers=NPZ).status_code)

    threads = [threading.Thread(target=upload, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201] * 3 + [413] * 5
    assert stored(settings.database_url, name)[0] == 3


def test_inline_data_can_be_split_too(tenant):
    _, client, _, _ = tenant
    job = {
        "structure": [4, 3],
        "epochs": 1,
        "learning_rate": 1.0,
        "seed": 1,
        "data": {"inputs": X[:40].tolist(), "targets": Y[:40].tolist()},
        "options": {"validation_split": 0.25},
    }
    answer = client.post("/v1/jobs", json=job)
    assert answer.status_code == 202, answer.json
    data = answer.json["data"]
    assert data["samples"] + data["validation_samples"] == 40 and data["validation_samples"] >= 8
    batches = {**job, "data": {"batches": [[[X[0].tolist(), Y[0].tolist()]]]}}
    refused = client.post("/v1/jobs", json=batches)
    assert refused.status_code == 422 and refused.json["errors"][0]["type"] == "option_conflict"


def test_an_npz_past_the_remaining_quota_is_refused_while_it_arrives(tenant):
    _, _, name, settings = tenant
    small = create_app_with(tenant, max_dataset_storage_bytes=1000, max_dataset_bytes=2**24)
    big = npz(inputs=rng.random((40_000, 4)), targets=rng.random((40_000, 1)))  # 1.6 MB
    refused = small.post("/v1/datasets", data=big, headers=NPZ)
    assert refused.status_code == 413 and refused.json["type"] == "/problems/storage-quota"
    assert stored(settings.database_url, name) == (0, 0)
