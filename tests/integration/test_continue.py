"""POST /v1/jobs/{id}/continue on the live stack: a job continued from its final state is, to
the bit, one job trained for the whole run from the start (weights and every metrics row)."""

from __future__ import annotations

import io

import numpy as np
import pytest

COMPARED = ("epoch", "cost", "accuracy", "val_cost", "val_accuracy", "learning_rate")


def _data(samples: int = 60, seed: int = 5) -> dict:
    rng = np.random.default_rng(seed)
    inputs = rng.random((samples, 4))
    targets = np.eye(3)[(inputs @ np.array([1.0, -1.0, 0.5, 2.0]) * 1.3).astype(int) % 3]
    return {"inputs": inputs.tolist(), "targets": targets.tolist(), "batch_size": 7}


def model(client, job_id: str) -> dict[str, np.ndarray]:
    response = client.get(f"/v1/jobs/{job_id}/model.npz")
    assert response.status_code == 200, response.text
    with np.load(io.BytesIO(response.content)) as npz:
        return {key: npz[key] for key in npz.files if key != "lineage"}  # ids and times


def rows(client, job_id: str) -> list[tuple]:
    metrics = client.get(f"/v1/jobs/{job_id}/metrics").json()["metrics"]
    return [tuple(m[k] for k in COMPARED) for m in metrics]


def assert_same_run(client, one: str, other: str, epochs: int) -> None:
    a, b = model(client, one), model(client, other)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].tobytes() == b[key].tobytes(), key
    ours, theirs = rows(client, one), rows(client, other)
    assert len(ours) == epochs and ours == theirs


def continue_(client, job_id: str, **body):
    return client.post(f"/v1/jobs/{job_id}/continue", json=body)


OPTIONS = {
    "plain sgd": {},
    "momentum, step schedule, l2, shuffled, held-out rows": {
        "optimizer": {"name": "momentum", "momentum": 0.9, "nesterov": True},
        "schedule": {"name": "step", "step_size": 2, "gamma": 0.7},
        "l2": 0.001,
        "validation_split": 0.2,
    },
    "adam per-step exponential, float32": {
        "optimizer": {"name": "adam"},
        "schedule": {"name": "exponential", "gamma": 0.99, "per": "step"},
        "dtype": "float32",
    },
    "adamw, plateau schedule, clipping": {
        "optimizer": {"name": "adamw", "weight_decay": 0.01},
        "schedule": {"name": "plateau", "patience": 1, "factor": 0.5},
        "clip_norm": 1.0,
        "cost": "cross_entropy",
        "output_activation": "softmax",
    },
}


@pytest.mark.parametrize("options", OPTIONS.values(), ids=list(OPTIONS))
def test_a_continued_job_is_bitwise_one_long_job(stack, options):
    client = stack.client()
    base = {"structure": [4, 6, 3], "learning_rate": 0.05 if "optimizer" in options else 1.5}
    base |= {"seed": 17, "data": _data(), "options": options}
    short = client.submit({**base, "epochs": 3})["id"]
    whole = client.submit({**base, "epochs": 7})["id"]
    assert client.wait(short)["status"] == "succeeded"

    answer = continue_(client, short, epochs=4)
    assert answer.status_code == 202, answer.text
    child = answer.json()
    assert child["continued_from"] == short and child["progress"] == {"epoch": 3, "epochs": 7}
    assert answer.headers["Location"].endswith(f"/v1/jobs/{child['id']}")
    assert client.wait(child["id"])["status"] == "succeeded"
    assert client.wait(whole)["status"] == "succeeded"
    assert_same_run(client, child["id"], whole, 7)
    history = [e["kind"] for e in client.job(child["id"])["history"]]
    assert "continued" in history and "resumed" in history

    # the spec says what it is: the parent's, with the whole run's epochs
    diff = client.get(f"/v1/jobs/{child['id']}/diff", params={"other": whole}).json()
    assert diff["spec"] == [{"field": "continued_from", "this": short, "other": None}]
    assert diff["first_divergent_epoch"] is None and diff["weights_equal"] is True


def test_a_cosine_over_the_parents_epochs_keeps_its_length(stack):
    """A cosine without t_max spans the job's own epochs: the continued job pins that length
    (the rates already taken stay), so it equals a long job with that t_max."""
    client = stack.client()
    cosine = {"name": "cosine", "min_lr": 0.1}
    base = {"structure": [4, 5, 3], "learning_rate": 2.0, "seed": 3, "data": _data(seed=9)}
    short = client.submit({**base, "epochs": 4, "options": {"schedule": cosine}})["id"]
    pinned = {"schedule": {**cosine, "t_max": 4}}
    whole = client.submit({**base, "epochs": 6, "options": pinned})["id"]
    assert client.wait(short)["status"] == "succeeded"
    child = continue_(client, short, epochs=2).json()
    assert child["options"]["schedule"]["t_max"] == 4
    assert client.wait(child["id"])["status"] == "succeeded"
    assert client.wait(whole)["status"] == "succeeded"
    assert_same_run(client, child["id"], whole, 6)
    assert rows(client, child["id"])[-1][-1] == 0.1  # held at min_lr past t_max


def test_a_timed_out_job_continues_from_inside_its_epoch(stack):
    """A job stopped by its time limit mid-epoch carries on from that mini-batch: the
    continued job equals one long job still."""
    client = stack.client()
    rng = np.random.default_rng(1)
    inputs = rng.random((3000, 20))
    targets = np.eye(4)[rng.integers(0, 4, 3000)]
    data = {"inputs": inputs.tolist(), "targets": targets.tolist(), "batch_size": 1}
    base = {"structure": [20, 64, 4], "learning_rate": 0.3, "seed": 8, "data": data}
    short = client.submit({**base, "epochs": 40, "options": {"max_runtime_seconds": 1}})
    ended = client.wait(short["id"], timeout=90)
    assert ended["status"] == "failed" and ended["error"]["type"] == "timeout"
    done = ended["progress"]["epoch"]
    assert done < 40
    child = continue_(client, short["id"], epochs=2, max_runtime_seconds=120).json()
    assert child["options"]["max_runtime_seconds"] == 120
    whole = client.submit({**base, "epochs": done + 2})["id"]
    assert client.wait(child["id"], timeout=120)["status"] == "succeeded"
    assert client.wait(whole, timeout=120)["status"] == "succeeded"
    assert_same_run(client, child["id"], whole, done + 2)


def test_what_cannot_be_continued_is_refused_with_why(stack):
    client = stack.client()
    base = {"structure": [4, 3, 3], "learning_rate": 1.0, "seed": 2, "data": _data(seed=4)}
    patient = client.submit(
        {**base, "epochs": 400, "options": {"early_stopping": {"patience": 1, "min_delta": 1}}}
    )["id"]
    plain = client.submit({**base, "epochs": 2})["id"]
    assert client.wait(patient)["status"] == "succeeded"
    assert client.wait(plain)["status"] == "succeeded"

    refused = continue_(client, patient, epochs=3)
    assert refused.status_code == 409, refused.text
    assert "early stopping" in refused.json()["detail"]
    assert refused.headers["Content-Type"] == "application/problem+json"

    child = continue_(client, plain, epochs=90_000).json()
    running = continue_(client, child["id"], epochs=1)  # queued or running: not ended yet
    assert running.status_code == 409 and "ended" in running.json()["detail"]
    client.post(f"/v1/jobs/{child['id']}/cancel")
    assert client.wait(child["id"])["status"] == "cancelled"

    # a retried continue (same Idempotency-Key) makes one job; the key is this job's only
    once = {"json": {"epochs": 1}, "headers": {"Idempotency-Key": "more-1"}}
    first = client.post(f"/v1/jobs/{plain}/continue", **once)
    again = client.post(f"/v1/jobs/{plain}/continue", **once)
    assert first.status_code == 202 and again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    other = client.post(f"/v1/jobs/{patient}/continue", **once)
    assert (
        other.status_code == 422 and other.json()["errors"][0]["field"] == "header.Idempotency-Key"
    )

    assert continue_(stack.client("bob"), plain, epochs=1).status_code == 404
    zero = continue_(client, plain, epochs=0)
    assert zero.status_code == 422 and zero.json()["errors"][0]["field"] == "epochs"
    huge = continue_(client, plain, epochs=10**9)
    assert huge.status_code == 422 and huge.json()["errors"][0]["field"] == "epochs"
    unknown = continue_(client, plain, epochs=1, seed=3)
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "seed"


def test_a_job_whose_data_set_was_deleted_is_not_continued(stack):
    client = stack.client()
    data = _data(seed=6)
    stored = client.post(
        "/v1/datasets", json={"inputs": data["inputs"], "targets": data["targets"]}
    ).json()
    job = client.submit(
        {"structure": [4, 3, 3], "epochs": 2, "learning_rate": 1.0, "seed": 1,
         "data": {"dataset_id": stored["id"], "batch_size": 10}}
    )["id"]  # fmt: skip
    assert client.wait(job)["status"] == "succeeded"
    assert client.delete(f"/v1/datasets/{stored['id']}").status_code == 204
    refused = continue_(client, job, epochs=1)
    assert refused.status_code == 409 and "was deleted" in refused.json()["detail"]
