"""A 60,000-row data set through the live service (gunicorn, a Celery worker, Redis, and
PostgreSQL or SQLite): streamed up in chunks, trained on with a validation split, streamed
back exactly."""

from __future__ import annotations

import hashlib
import io
import sys

import numpy as np

from tests.support.stack import ROOT

sys.path.insert(0, str(ROOT / "examples"))
from big_digits import big_digits  # noqa: E402


def test_sixty_thousand_rows_upload_train_and_download(stack):
    client = stack.client()
    inputs, targets = big_digits(60_000, side=8)
    buffer = io.BytesIO()
    np.savez(buffer, inputs=inputs, targets=targets)
    body = buffer.getvalue()

    def chunks():  # no Content-Length: the API reads it as it streams
        for start in range(0, len(body), 1 << 20):
            yield body[start : start + (1 << 20)]

    uploaded = client.post(
        "/v1/datasets?name=digits-60k", data=chunks(), headers={"Content-Type": "application/x-npz"}
    )
    assert uploaded.status_code == 201, uploaded.text
    dataset = uploaded.json()
    assert dataset["samples"] == 60_000 and dataset["inputs"]["shape"] == [60_000, 64]

    job = client.submit(
        {
            "structure": [64, 30, 10],
            "epochs": 2,
            "learning_rate": 3.0,
            "seed": 4,
            "data": {"dataset_id": dataset["id"], "batch_size": 10},
            "options": {"dtype": "float32", "validation_split": 0.1},
        }
    )
    held = job["data"]["validation_samples"]
    assert job["data"]["samples"] + held == 60_000 and abs(held - 6_000) <= 10  # per class
    done = client.wait(job["id"], timeout=240)
    assert done["status"] == "succeeded", done
    assert done["metrics"]["val_accuracy"] > 0.8, done["metrics"]

    back = client.get(f"/v1/datasets/{dataset['id']}/data")
    assert back.status_code == 200
    with np.load(io.BytesIO(back.content), allow_pickle=False) as arrays:
        assert np.array_equal(arrays["inputs"], inputs)
        assert np.array_equal(arrays["targets"], targets)
    assert hashlib.sha256(back.content).hexdigest()  # a complete body
