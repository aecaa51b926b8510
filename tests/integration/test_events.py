"""Server-sent events of a job through the live stack: every epoch once, in order, status
changes, the end; a reconnect with Last-Event-ID resumes exactly after the last one seen."""

from __future__ import annotations

import json

import requests

from tests.support.stack import server_sent_events

XOR = {
    "structure": [2, 4, 1],
    "epochs": 3000,
    "learning_rate": 2.0,
    "seed": 1,
    "data": {"inputs": [[0, 0], [0, 1], [1, 0], [1, 1]], "targets": [[0], [1], [1], [0]]},
}


def events(stack, job_id: str, last: str | None = None, stop_after_epoch: int | None = None):
    """(id, event, data) of a stream, read line by line as it arrives."""
    headers = {"Authorization": f"Bearer {stack.tokens['alice']}"}
    if last is not None:
        headers["Last-Event-ID"] = last
    found = []
    with requests.get(
        f"{stack.base}/v1/jobs/{job_id}/events",
        params={"timeout": 60},
        headers=headers,
        stream=True,
        timeout=90,
    ) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        for fields in server_sent_events(response):
            found.append((fields["id"], fields["event"], json.loads(fields["data"])))
            _, kind, data = found[-1]
            if stop_after_epoch and kind == "epoch" and data["epoch"] >= stop_after_epoch:
                break
    return found


def test_a_stream_carries_every_epoch_once_and_ends_with_the_job(stack):
    client = stack.client()
    job = client.submit(XOR)
    seen = events(stack, job["id"])
    kinds = [kind for _, kind, _ in seen]
    assert kinds[-1] == "end" and seen[-1][2]["status"] == "succeeded"
    statuses = [data["status"] for _, kind, data in seen if kind == "status"]
    assert statuses[-1] == "succeeded" and len(statuses) == len(set(statuses))
    epochs = [data["epoch"] for _, kind, data in seen if kind == "epoch"]
    assert epochs == list(range(1, 3001))
    assert all(int(event_id) == data["epoch"] for event_id, kind, data in seen if kind == "epoch")


def test_a_reconnect_with_last_event_id_misses_nothing(stack):
    client = stack.client()
    job = client.submit({**XOR, "epochs": 6000})
    first = events(stack, job["id"], stop_after_epoch=50)
    last_id = first[-1][0]
    rest = events(stack, job["id"], last=last_id)
    epochs = [d["epoch"] for _, k, d in first if k == "epoch"]
    epochs += [d["epoch"] for _, k, d in rest if k == "epoch"]
    assert epochs == list(range(1, 6001)) and rest[-1][1] == "end"
    # a finished job's stream is its whole history and the end, at once
    replay = events(stack, job["id"])
    assert [k for _, k, _ in replay][-2:] == ["status", "end"]
    assert len([k for _, k, _ in replay if k == "epoch"]) == 6000
