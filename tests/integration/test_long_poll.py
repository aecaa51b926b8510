"""Reads that cost little: the long poll, ETags, the token cache, on the real stack."""

from __future__ import annotations

import time

import numpy as np

from store import tokens
from store.db import get_database
from tests.conftest import make_token
from tests.support.stack import Client

TINY = {
    "structure": [3, 2, 2],
    "epochs": 1,
    "learning_rate": 1.0,
    "data": {"inputs": [[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]], "targets": [[1, 0], [0, 1]]},
}


def slow_job(epochs: int = 40, samples: int = 2000) -> dict:
    rng = np.random.RandomState(3)
    return {
        "structure": [16, 32, 4],
        "epochs": epochs,
        "learning_rate": 0.5,
        "data": {
            "inputs": rng.rand(samples, 16).round(5).tolist(),
            "targets": np.eye(4)[rng.randint(4, size=samples)].tolist(),
            "batch_size": 1,
        },
    }


def long_poll_until_final(client: Client, job_id: str, wait: float = 30) -> tuple[dict, int]:
    polls = 0
    while True:
        polls += 1
        answer = client.get(f"/v1/jobs/{job_id}?wait={wait}")
        assert answer.status_code == 200, answer.text
        job = answer.json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job, polls
        assert polls < 200, "the long poll answered without waiting"


def test_a_long_poll_sees_a_tiny_job_succeed_in_a_few_requests(stack):
    client = stack.client()
    for _ in range(5):
        job = client.submit(TINY)
        done, polls = long_poll_until_final(client, job["id"])
        assert done["status"] == "succeeded"
        # queued -> running -> succeeded: each answer is a change, never a busy loop
        assert polls <= 3, polls


def test_the_long_poll_answers_on_a_change_not_at_its_deadline(stack):
    client = stack.client()
    job = client.submit(slow_job())
    first = client.get(f"/v1/jobs/{job['id']}")
    tag = first.headers["ETag"]
    started = time.monotonic()
    changed = client.get(f"/v1/jobs/{job['id']}?wait=50", headers={"If-None-Match": tag})
    assert changed.status_code == 200
    assert time.monotonic() - started < 25, "waited for the deadline instead of the change"
    assert changed.headers["ETag"] != tag
    body = changed.json()
    assert (body["status"], body["progress"]["epoch"]) != (
        first.json()["status"],
        first.json()["progress"]["epoch"],
    ) or body["updated_at"] != first.json()["updated_at"]
    client.post(f"/v1/jobs/{job['id']}/cancel")
    ended, _ = long_poll_until_final(client, job["id"])
    assert ended["status"] == "cancelled"


def test_etags_give_304_and_a_finished_job_answers_a_long_poll_at_once(stack):
    client = stack.client()
    job, _ = long_poll_until_final(client, client.submit(TINY)["id"])
    answer = client.get(f"/v1/jobs/{job['id']}")
    tag = answer.headers["ETag"]
    unchanged = client.get(f"/v1/jobs/{job['id']}", headers={"If-None-Match": tag})
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert unchanged.headers["ETag"] == tag
    started = time.monotonic()
    final = client.get(f"/v1/jobs/{job['id']}?wait=30", headers={"If-None-Match": tag})
    assert final.status_code == 200 and final.json()["status"] == "succeeded"
    assert time.monotonic() - started < 10
    assert client.get(f"/v1/jobs/{job['id']}?wait=61").status_code == 422
    assert client.get(f"/v1/jobs/{job['id']}?wait=-1").status_code == 422


def test_a_long_poll_that_sees_no_change_answers_after_its_wait(stack):
    client = stack.client()
    blocker = client.submit(slow_job(epochs=200))  # keeps the single worker busy
    waiting = client.submit(TINY)  # so this one stays queued
    started = time.monotonic()
    answer = client.get(f"/v1/jobs/{waiting['id']}?wait=1.5")
    took = time.monotonic() - started
    assert answer.status_code == 200 and answer.json()["status"] == "queued"
    assert took >= 1.4, took
    client.post(f"/v1/jobs/{blocker['id']}/cancel")
    assert long_poll_until_final(client, waiting["id"])[0]["status"] == "succeeded"


def test_a_revoked_token_stops_working_within_the_cache_time(stack):
    token = make_token(stack.database_url, "carol")
    client = Client(stack.base, token)
    assert client.get("/v1/jobs").status_code == 200
    with get_database(stack.database_url).session() as session:
        row = tokens.authenticate(session, token)
        assert tokens.revoke_token(session, row.id)
    revoked = time.monotonic()
    while client.get("/v1/jobs").status_code == 200:
        assert time.monotonic() - revoked < 1 + 3, "AUTH_CACHE_SECONDS is 1 in this stack"
        time.sleep(0.1)
    assert client.get("/v1/jobs").status_code == 401
