"""A client generated from the live /openapi.json by openapi-python-client drives every
operation against the real stack, and every 4xx it can provoke comes back as a parsed
Problem with its detail: the document is enough to use the service."""

from __future__ import annotations

import importlib
import io
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import requests

XOR = {
    "structure": [2, 3, 1],
    "epochs": 40,
    "learning_rate": 2.0,
    "seed": 7,
    "labels": {"suite": "generated-client"},
    "data": {
        "inputs": [[0, 0], [0, 1], [1, 0], [1, 1]],
        "targets": [[0], [1], [1], [0]],
        "batch_size": 2,
    },
}


@pytest.fixture(scope="module")
def gen(live, tmp_path_factory):
    """The generated package, imported, with an authenticated client of a fresh tenant."""
    out = tmp_path_factory.mktemp("generated")
    document = out / "openapi.json"
    document.write_text(requests.get(f"{live.base}/openapi.json", timeout=30).text)
    config = out / "config.yml"
    config.write_text("package_name_override: bpj_client\npost_hooks: []\n")
    generator = Path(sys.executable).with_name("openapi-python-client")
    done = subprocess.run(
        [str(generator), "generate", "--path", str(document), "--meta", "none",
         "--output-path", str(out / "bpj_client"), "--config", str(config)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    sys.path.insert(0, str(out))
    try:
        package = importlib.import_module("bpj_client")
        ops = importlib.import_module("bpj_client.api.default")
        models = importlib.import_module("bpj_client.models")
        client = package.AuthenticatedClient(base_url=live.base, token=live.token())
        yield package, ops, models, client
    finally:
        sys.path.remove(str(out))


def _submit(gen, spec=XOR, **kwargs):
    _, ops, models, client = gen
    module = importlib.import_module(ops.__name__ + ".create_job")
    return module.sync_detailed(client=client, body=models.JobCreate.from_dict(spec), **kwargs)


def _op(gen, name):
    _, ops, _, _ = gen
    return importlib.import_module(f"{ops.__name__}.{name}")


def _wait(gen, job_id: str, timeout: float = 60):
    client = gen[3]
    deadline = time.monotonic() + timeout
    while True:
        answer = _op(gen, "get_job").sync_detailed(job_id, client=client, wait=5)
        assert answer.status_code == 200, answer.content
        if answer.parsed.status.value in ("succeeded", "failed", "cancelled"):
            return answer.parsed
        assert time.monotonic() < deadline, answer.parsed


def test_submit_poll_metrics_model_predict(gen):
    _, _, models, client = gen
    key = f"k-{uuid.uuid4()}"
    submitted = _submit(gen, idempotency_key=key)
    assert submitted.status_code == 202, submitted.content
    job = submitted.parsed
    assert isinstance(job, models.JobOut) and job.status.value == "queued"
    assert submitted.headers["Location"] == f"/v1/jobs/{job.id}"
    replayed = _submit(gen, idempotency_key=key)
    assert replayed.parsed.id == job.id and replayed.headers["Idempotent-Replayed"] == "true"

    done = _wait(gen, job.id)
    assert done.status.value == "succeeded" and done.progress.epoch == 40

    stream = _op(gen, "stream_job_events").sync_detailed(job.id, client=client, timeout=5)
    assert stream.status_code == 200 and b"event: end" in stream.content
    assert stream.headers["Content-Type"].startswith("text/event-stream")

    unchanged = _op(gen, "get_job").sync_detailed(
        job.id,
        client=client,
        if_none_match=_op(gen, "get_job").sync_detailed(job.id, client=client).headers["ETag"],
    )
    assert unchanged.status_code == 304 and unchanged.parsed is None

    metrics = _op(gen, "get_job_metrics").sync_detailed(job.id, client=client).parsed
    assert isinstance(metrics, models.MetricsOut)
    assert [m.epoch for m in metrics.metrics] == list(range(1, 41))

    diff = _op(gen, "diff_jobs").sync_detailed(job.id, client=client, other=job.id).parsed
    assert isinstance(diff, models.JobDiffOut)
    assert diff.spec == [] and diff.epochs_compared == 40 and diff.weights_equal is True

    model = _op(gen, "get_job_model").sync_detailed(job.id, client=client).parsed
    assert isinstance(model, models.ModelOut) and model.structure == [2, 3, 1]
    npz = _op(gen, "get_job_model_npz").sync_detailed(job.id, client=client)
    assert npz.status_code == 200
    arrays = np.load(io.BytesIO(npz.parsed.payload.read()), allow_pickle=False)
    np.testing.assert_array_equal(arrays["W0"], np.array(model.weights[0]))
    np.testing.assert_array_equal(arrays["b1"], np.array(model.biases[1]))

    body = models.PredictRequest.from_dict({"inputs": [[0, 1], [1, 1]]})
    predicted = _op(gen, "predict").sync_detailed(job.id, client=client, body=body).parsed
    assert isinstance(predicted, models.PredictOut) and len(predicted.outputs) == 2

    more = models.ContinueJob.from_dict({"epochs": 2})
    continued = _op(gen, "continue_job").sync_detailed(job.id, client=client, body=more)
    assert continued.status_code == 202, continued.content
    assert continued.parsed.continued_from == job.id and continued.parsed.progress.epoch == 40
    assert _wait(gen, continued.parsed.id).progress.epoch == 42


def test_list_every_page_with_the_cursor(gen):
    _, _, models, client = gen
    tag = uuid.uuid4().hex[:8]
    made = {_submit(gen, {**XOR, "labels": {"page": tag}}).parsed.id for _ in range(5)}
    seen, cursor, pages = [], None, 0
    while True:
        kwargs = {"cursor": cursor} if cursor else {}
        page = (
            _op(gen, "list_jobs")
            .sync_detailed(client=client, label=f"page:{tag}", limit=2, **kwargs)
            .parsed
        )
        assert isinstance(page, models.JobList)
        seen += [j.id for j in page.jobs]
        pages += 1
        cursor = page.next_cursor
        if not cursor:
            break
    assert set(seen) == made and len(seen) == 5 and pages == 3


def test_cancel_answers_the_job_or_a_parsed_conflict(gen):
    _, _, models, client = gen
    job = _submit(gen).parsed
    first = _op(gen, "cancel_job").sync_detailed(job.id, client=client)
    # the worker may have taken the job, or even finished it, before the cancel arrives
    assert first.status_code in (200, 202, 409)
    expected = models.Problem if first.status_code == 409 else models.JobOut
    assert isinstance(first.parsed, expected)
    ended = _wait(gen, job.id)
    again = _op(gen, "cancel_job").sync_detailed(job.id, client=client)
    assert again.status_code == 409 and isinstance(again.parsed, models.Problem)
    assert ended.status.value in again.parsed.detail


def test_every_provoked_4xx_is_a_parsed_problem(gen, live):
    package, _, models, client = gen
    unknown = f"{uuid.uuid4()}"

    def problem(answer, status):
        assert answer.status_code == status, answer.content
        assert isinstance(answer.parsed, models.Problem), answer.parsed
        assert answer.parsed.status == status and answer.parsed.detail
        assert answer.parsed.request_id == answer.headers["X-Request-Id"]
        return answer.parsed

    # 401: a token the service never made
    stranger = package.AuthenticatedClient(base_url=live.base, token="bpj_made-up")
    problem(_op(gen, "list_jobs").sync_detailed(client=stranger), 401)
    # 404: another tenant's job, or none
    problem(_op(gen, "get_job").sync_detailed(unknown, client=client), 404)
    # 409: the model of a job that did not succeed (this one diverges)
    options = {"activation": "relu", "output_activation": "identity"}
    job = _submit(gen, {**XOR, "learning_rate": 1e200, "options": options}).parsed
    failed = _wait(gen, job.id)
    assert failed.status.value == "failed" and failed.error.type_ == "diverged"
    for name in ("get_job_model", "get_job_model_npz"):
        assert "failed" in problem(_op(gen, name).sync_detailed(job.id, client=client), 409).detail
    body = models.PredictRequest.from_dict({"inputs": [[0, 1]]})
    problem(_op(gen, "predict").sync_detailed(job.id, client=client, body=body), 409)
    # 413: a body over MAX_CONTENT_LENGTH
    rows = [[0.123456789, 0.987654321]] * 60_000
    big = {**XOR, "data": {"inputs": rows, "targets": [[1.0]] * 60_000}}
    too_big = _submit(gen, big)
    problem(too_big, 413)
    # answered before the body was read: the connection closes, and the answer says so, so the
    # next request goes out on a new one
    assert too_big.headers["Connection"] == "close"
    # 414: a URL over the server's limit, answered by gunicorn itself
    problem(_op(gen, "get_job").sync_detailed("a" * 5000, client=client), 414)
    # 422: every bad field named
    bad = {**XOR, "structure": [3, 1], "epochs": 10**9}
    invalid = problem(_submit(gen, bad), 422)
    assert {e.field for e in invalid.errors} == {"epochs"}
    ragged = {**XOR, "data": {**XOR["data"], "inputs": [[0, 0], [0], [1, 0], [1]]}}
    invalid = problem(_submit(gen, ragged), 422)
    assert [e.field for e in invalid.errors] == ["data.inputs[1]", "data.inputs[3]"]
    assert {e.type_ for e in invalid.errors} == {"size_mismatch"}
    query = problem(_op(gen, "list_jobs").sync_detailed(client=client, limit=0), 422)
    assert query.errors[0].field == "query.limit"


def test_data_sets_from_a_form_and_from_json_then_a_job_on_one(gen):
    package, _, models, client = gen
    rng = np.random.default_rng(3)
    inputs, targets = rng.random((40, 2)), np.eye(2)[rng.integers(0, 2, 40)]
    buffer = io.BytesIO()
    np.savez(buffer, inputs=inputs, targets=targets)
    form = models.CreateDatasetFilesBody(
        file=package.types.File(
            payload=io.BytesIO(buffer.getvalue()),
            file_name="xor.npz",
            mime_type="application/x-npz",
        )
    )
    created = _op(gen, "create_dataset").sync_detailed(client=client, body=form, name="form")
    assert created.status_code == 201, created.content
    dataset = created.parsed
    assert isinstance(dataset, models.DatasetOut) and dataset.samples == 40
    assert created.headers["Location"] == f"/v1/datasets/{dataset.id}"
    body = models.DatasetCreate.from_dict({"inputs": [[0, 1], [1, 0]], "targets": [[1], [0]]})
    as_json = _op(gen, "create_dataset").sync_detailed(client=client, body=body)
    assert as_json.status_code == 201 and as_json.parsed.inputs.shape == [2, 2]
    again = _op(gen, "create_dataset").sync_detailed(client=client, body=body)
    assert again.status_code == 200 and again.headers["Deduplicated"] == "true"

    listed = _op(gen, "list_datasets").sync_detailed(client=client, limit=200).parsed
    assert {dataset.id, as_json.parsed.id} <= {d.id for d in listed.datasets}
    got = _op(gen, "get_dataset").sync_detailed(dataset.id, client=client).parsed
    assert got.sha256 == dataset.sha256
    data = _op(gen, "get_dataset_data").sync_detailed(dataset.id, client=client)
    assert data.status_code == 200
    with np.load(io.BytesIO(data.parsed.payload.read()), allow_pickle=False) as back:
        np.testing.assert_array_equal(back["inputs"], inputs)

    spec = {**XOR, "structure": [2, 3, 2], "data": {"dataset_id": dataset.id, "batch_size": 4}}
    spec["options"] = {"validation_split": 0.25}
    job = _submit(gen, spec).parsed
    assert job.data.form.value == "dataset" and job.data.validation_samples == 10
    in_use = _op(gen, "delete_dataset").sync_detailed(dataset.id, client=client)
    if in_use.status_code == 409:  # the job had not ended yet
        assert isinstance(in_use.parsed, models.Problem) and job.id in in_use.parsed.detail
    assert _wait(gen, job.id).status.value == "succeeded"
    body = models.PredictDatasetRequest(dataset_id=dataset.id)
    outputs = _op(gen, "predict_dataset").sync_detailed(job.id, client=client, body=body)
    assert outputs.status_code == 200
    with np.load(io.BytesIO(outputs.parsed.payload.read()), allow_pickle=False) as back:
        assert back["outputs"].shape == (40, 2)
    secret = _op(gen, "rotate_webhook_secret").sync_detailed(client=client).parsed
    assert isinstance(secret, models.WebhookSecretOut) and secret.secret.startswith("whsec_")
    usage = _op(gen, "get_usage").sync_detailed(client=client).parsed
    assert isinstance(usage, models.UsageOut) and usage.datasets.count >= 2
    assert _op(gen, "delete_job").sync_detailed(job.id, client=client).status_code == 204
    deleted = _op(gen, "delete_dataset").sync_detailed(dataset.id, client=client)
    assert deleted.status_code == 204
    gone = _op(gen, "get_dataset").sync_detailed(dataset.id, client=client)
    assert gone.status_code == 404 and isinstance(gone.parsed, models.Problem)


def test_a_sweep_through_the_generated_client(gen):
    _, _, models, client = gen
    rng = np.random.default_rng(5)
    body = models.DatasetCreate.from_dict(
        {
            "inputs": rng.random((30, 2)).tolist(),
            "targets": np.eye(2)[rng.integers(0, 2, 30)].tolist(),
        }
    )
    dataset = _op(gen, "create_dataset").sync_detailed(client=client, body=body).parsed
    request = {
        "name": "generated",
        "base": {**XOR, "structure": [2, 3, 2], "epochs": 3,
                 "data": {"dataset_id": dataset.id, "batch_size": 5}},
        "search": {"learning_rate": {"log_uniform": [0.5, 4]}, "structure[1]": {"choice": [2, 4]}},
        "method": "random",
        "trials": 2,
        "seed": 3,
        "objective": {"metric": "cost"},
        "early_stopping": {"min_epochs": 1, "reduction_factor": 2},
    }  # fmt: skip
    submitted = _op(gen, "create_sweep").sync_detailed(
        client=client, body=models.SweepCreate.from_dict(request)
    )
    assert submitted.status_code == 202, submitted.content
    sweep = submitted.parsed
    assert isinstance(sweep, models.SweepOut) and sweep.trials == 2
    deadline = time.monotonic() + 60
    while sweep.status.value == "running":
        assert time.monotonic() < deadline, sweep
        time.sleep(0.2)
        sweep = _op(gen, "get_sweep").sync_detailed(sweep.id, client=client, limit=10).parsed
    assert sweep.status.value == "succeeded" and sweep.counts.succeeded == 2
    assert sweep.best.objective == min(row.objective for row in sweep.leaderboard)
    listed = _op(gen, "list_sweeps").sync_detailed(client=client, limit=200).parsed
    assert sweep.id in {s.id for s in listed.sweeps}
    trials = _op(gen, "list_jobs").sync_detailed(client=client, sweep=sweep.id).parsed
    assert sorted(j.trial for j in trials.jobs) == [1, 2]
    model = _op(gen, "get_sweep_best_model").sync_detailed(sweep.id, client=client).parsed
    assert isinstance(model, models.ModelOut) and model.job_id == sweep.best.job_id
    more = models.SweepContinue.from_dict({"add_trials": 1})
    added = _op(gen, "continue_sweep").sync_detailed(sweep.id, client=client, body=more)
    assert added.status_code == 202 and added.parsed.trials == 3
    while sweep.status.value != "succeeded" or sweep.counts.succeeded < 3:
        assert time.monotonic() < deadline + 60, sweep
        time.sleep(0.2)
        sweep = _op(gen, "get_sweep").sync_detailed(sweep.id, client=client, limit=10).parsed
    ended = _op(gen, "cancel_sweep").sync_detailed(sweep.id, client=client)
    assert ended.status_code == 409 and isinstance(ended.parsed, models.Problem)
    stream = _op(gen, "stream_sweep_events").sync_detailed(sweep.id, client=client, timeout=5)
    assert stream.status_code == 200 and stream.content.count(b"event: ") == 2
    assert stream.content.startswith(b"event: sweep") and b"event: end" in stream.content
    gone = _op(gen, "delete_sweep").sync_detailed(sweep.id, client=client)
    assert gone.status_code == 204
    again = _op(gen, "get_sweep").sync_detailed(sweep.id, client=client)
    assert again.status_code == 404 and isinstance(again.parsed, models.Problem)
    bad = dict(request, search={"structure[0]": {"choice": [3]}})
    invalid = _op(gen, "create_sweep").sync_detailed(
        client=client, body=models.SweepCreate.from_dict(bad)
    )
    assert invalid.status_code == 422 and invalid.parsed.errors[0].field == "search.structure[0]"


def test_health_readiness_and_metrics_without_a_token(gen, live):
    package, _, models, _ = gen
    anonymous = package.Client(base_url=live.base)
    assert isinstance(_op(gen, "healthz").sync(client=anonymous), models.Health)
    ready = _op(gen, "readyz").sync(client=anonymous)
    assert isinstance(ready, models.Readiness) and ready.status.value == "ready"
    scraped = _op(gen, "service_metrics").sync_detailed(client=anonymous)
    assert scraped.status_code == 200 and b'backprop_jobs{status="queued"}' in scraped.content


def test_every_generated_operation_is_driven_here(gen):
    """Each module the generator wrote (one per operation of the document) is called above."""
    _, ops, _, _ = gen
    generated = {p.stem for p in Path(ops.__file__).parent.glob("*.py")} - {"__init__"}
    called = set(re.findall(r'_op\(gen, "(\w+)"\)', Path(__file__).read_text()))
    called.add("create_job")  # through _submit
    assert len(generated) >= 10 and generated <= called, generated - called
