"""Job and sweep callbacks through the live stack, to a real HTTP receiver on this machine:
signed with the tenant's secret, retried with backoff, every attempt in the job's history
(a sweep's: in its callback); a sweep's sent once, when it ended and none of its trials
still runs; private addresses refused where the setting does not allow them; redirects
never followed."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from api import create_app
from api.schemas.job_views import CallbackPayload
from api.schemas.sweeps import SweepCallbackPayload
from backprop.settings import Settings
from messaging.dispatch import Dispatcher
from store.db import get_database
from tests.conftest import make_token
from worker.reconciler import reconcile

XOR = {
    "structure": [2, 3, 1],
    "epochs": 20,
    "learning_rate": 2.0,
    "data": {"inputs": [[0, 0], [0, 1], [1, 0], [1, 1]], "targets": [[0], [1], [1], [0]]},
}


class Receiver:
    """A local HTTP server: answers each POST with the next of ``statuses``, records it."""

    def __init__(self, statuses=(200,)):
        self.statuses, self.calls, self.paths = list(statuses), [], []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append((dict(self.headers), body, time.time()))
                receiver.paths.append(self.path)
                statuses = receiver.statuses
                status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
                self.send_response(status)
                if status in (301, 302, 307):
                    self.send_header("Location", receiver.url + "/redirected")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.calls) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.calls) >= count, self.calls

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    made = []

    def make(statuses=(200,)):
        made.append(Receiver(statuses))
        return made[-1]

    yield make
    for r in made:
        r.close()


def verify(secret: str, headers: dict, body: bytes) -> None:
    stamp = headers["X-Backprop-Timestamp"]
    assert abs(time.time() - int(stamp)) < 300  # fresh: a replay of an old one is refused
    expected = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
    assert hmac.compare_digest(headers["X-Backprop-Signature"], "v1=" + expected.hexdigest())


def attempts(client, job_id: str, count: int, timeout: float = 30.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = [e["message"] for e in client.job(job_id)["history"] if e["kind"] == "callback"]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_a_finished_job_is_posted_signed_to_its_callback(stack, receiver):
    client = stack.client()
    secret = client.post("/v1/webhooks/secret").json()["secret"]
    target = receiver()
    job = client.submit({**XOR, "callback_url": target.url + "/hook"})
    assert job["callback_url"] == target.url + "/hook"
    assert job["callback_state"] == "waiting"
    target.wait_for(1)
    headers, body, _ = target.calls[0]
    verify(secret, headers, body)
    sent = json.loads(body)
    assert sent["id"] == job["id"] and sent["status"] == "succeeded"
    assert sent["progress"] == {"epoch": 20, "epochs": 20}
    # the body is the document's jobFinished webhook, and agrees with the job as served
    document = client.get("/openapi.json").json()
    schema = document["webhooks"]["jobFinished"]["post"]["requestBody"]["content"]
    assert schema["application/json"]["schema"]["$ref"].endswith("/CallbackPayload")
    payload = CallbackPayload.model_validate(sent)
    served = client.job(job["id"])
    for field in ("created_at", "started_at", "finished_at"):
        assert getattr(payload, field) == datetime.fromisoformat(
            served[field].replace("Z", "+00:00")
        )
    assert payload.runtime_seconds == served["runtime_seconds"]
    assert payload.metrics.model_dump() == served["metrics"]
    assert (payload.sweep_id, payload.trial, payload.stopped_early) == (None, None, False)
    assert attempts(client, job["id"], 1)[0].startswith("attempt 1: HTTP 200")
    assert client.job(job["id"])["callback_state"] == "delivered"
    reconcile_round(stack)  # taken once: a reconciler round does not send it again
    time.sleep(1.0)
    assert len(target.calls) == 1
    # a tampered body does not verify
    with pytest.raises(AssertionError):
        verify(secret, headers, body.replace(b"succeeded", b"failed"))


def test_a_failing_receiver_is_retried_with_backoff_and_every_attempt_is_shown(stack, receiver):
    client = stack.client()
    target = receiver(statuses=(500, 503, 200))
    job = client.submit({**XOR, "callback_url": target.url})
    target.wait_for(3)
    times = [at for _, _, at in target.calls]
    assert times[2] - times[1] > times[1] - times[0] > 0.15  # it backs off, doubling
    messages = attempts(client, job["id"], 3)
    assert [m.split(" in ")[0] for m in messages] == [
        "attempt 1: HTTP 500", "attempt 2: HTTP 503", "attempt 3: HTTP 200",
    ]  # fmt: skip
    never = receiver(statuses=(500,))
    given_up = client.submit({**XOR, "callback_url": never.url})
    messages = attempts(client, given_up["id"], 4)
    assert len(messages) == 4 and messages[-1].endswith("giving up")  # WEBHOOK_ATTEMPTS=4
    assert client.job(given_up["id"])["callback_state"] == "failed"


def test_redirects_are_not_followed(stack, receiver):
    client = stack.client()
    target = receiver(statuses=(302, 200))
    job = client.submit({**XOR, "callback_url": target.url + "/first"})
    target.wait_for(2)
    assert target.paths[:2] == ["/first", "/first"]  # retried, never sent to the Location
    assert attempts(client, job["id"], 1)[0].startswith("attempt 1: HTTP 302")


def test_a_private_address_is_refused_at_submit_unless_allowed(stack):
    settings = Settings(
        database_url=stack.database_url,
        redis_url=stack.env["REDIS_URL"],
        training_queue=f"unread-{uuid.uuid4().hex[:8]}",
    )
    app = create_app(settings)  # CALLBACK_ALLOW_PRIVATE_NETWORKS is off by default
    client = app.test_client()
    token = make_token(stack.database_url, f"w-{uuid.uuid4().hex[:6]}")
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    for url in ("http://127.0.0.1:9/hook", "http://localhost/x", "http://169.254.169.254/"):
        refused = client.post("/v1/jobs", json={**XOR, "callback_url": url})
        assert refused.status_code == 422, (url, refused.json)
        assert refused.json["errors"][0]["type"] == "callback_url"
    unknown = client.post("/v1/jobs", json={**XOR, "callback_url": "http://nowhere.invalid/"})
    assert unknown.status_code == 422 and "does not resolve" in unknown.json["detail"]
    not_http = client.post("/v1/jobs", json={**XOR, "callback_url": "ftp://example.com/"})
    assert not_http.status_code == 422
    control = client.post("/v1/jobs", json={**XOR, "callback_url": "https://example.com/a\x01b"})
    assert control.status_code == 422 and control.json["errors"][0]["field"] == "callback_url"
    # a sweep's own callback_url and its base's are checked the same way, at submit
    data = {"inputs": XOR["data"]["inputs"], "targets": XOR["data"]["targets"]}
    dataset_id = client.post("/v1/datasets", json=data).json["id"]
    sweep = sweep_body(dataset_id)
    for field, body in (
        ("callback_url", {**sweep, "callback_url": "http://127.0.0.1:9/hook"}),
        ("base.callback_url", {**sweep, "base": {**sweep["base"], "callback_url": "http://localhost/"}}),
    ):  # fmt: skip
        refused = client.post("/v1/sweeps", json=body)
        assert refused.status_code == 422, (field, refused.json)
        assert [(e["field"], e["type"]) for e in refused.json["errors"]] == [
            (field, "callback_url")
        ]
    assert client.get("/v1/sweeps").json["sweeps"] == []  # nothing stored


def xor_data_set(client) -> str:
    body = {"inputs": XOR["data"]["inputs"], "targets": XOR["data"]["targets"]}
    response = client.post("/v1/datasets", json=body)
    assert response.status_code in (200, 201), response.text  # 200: stored already
    return response.json()["id"]


def sweep_body(dataset_id: str, **changes) -> dict:
    return {
        "base": {**XOR, "epochs": 30, "data": {"dataset_id": dataset_id, "batch_size": 4}},
        "search": {"learning_rate": {"choice": [0.5, 2.0, 4.0]}},
        "method": "grid",
        "objective": {"metric": "cost", "goal": "min"},
        "max_parallel": 2,
        **changes,
    }


def reconcile_round(stack) -> None:
    """One round of the reconciler, as beat runs it: a callback it queued again would be
    delivered a second time."""
    settings = Settings(
        database_url=stack.database_url,
        redis_url=stack.env["REDIS_URL"],
        training_queue=stack.env["TRAINING_QUEUE"],
        control_queue=stack.env["CONTROL_QUEUE"],
    )
    reconcile(get_database(stack.database_url), settings, Dispatcher(settings))


def ended_sweep(client, sweep_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        sweep = client.get(f"/v1/sweeps/{sweep_id}").json()
        callback = sweep["callback"]
        if callback["state"] in ("delivered", "failed") or time.monotonic() > deadline:
            return sweep
        time.sleep(0.1)


def test_an_ended_sweep_is_posted_signed_once_and_its_trials_call_back_on_their_own(
    stack, receiver
):
    client = stack.client()
    secret = client.post("/v1/webhooks/secret").json()["secret"]
    for_trials, for_sweep = receiver(), receiver(statuses=(503, 200))
    body = sweep_body(xor_data_set(client), callback_url=for_sweep.url + "/sweep")
    body["base"]["callback_url"] = for_trials.url + "/trial"
    response = client.post("/v1/sweeps", json=body)
    assert response.status_code == 202, response.text
    sweep_id = response.json()["id"]
    assert response.json()["callback"] == {
        "url": for_sweep.url + "/sweep", "state": "waiting", "attempts": [],
    }  # fmt: skip
    for_sweep.wait_for(2)  # a 503, then the delivery
    sweep = ended_sweep(client, sweep_id)
    assert sweep["status"] == "succeeded" and sweep["callback"]["state"] == "delivered"
    outcomes = [a["outcome"] for a in sweep["callback"]["attempts"]]
    assert outcomes == ["HTTP 503", "HTTP 200"]
    for headers, sent, _ in for_sweep.calls:
        verify(secret, headers, sent)
        assert headers["X-Backprop-Event"] == "sweep.ended"
    assert for_sweep.calls[0][1] == for_sweep.calls[1][1]  # the same state, sent again
    # the body is the document's sweepFinished webhook and agrees with the sweep as served
    document = client.get("/openapi.json").json()
    schema = document["webhooks"]["sweepFinished"]["post"]["requestBody"]["content"]
    assert schema["application/json"]["schema"]["$ref"].endswith("/SweepCallbackPayload")
    payload = SweepCallbackPayload.model_validate(json.loads(for_sweep.calls[1][1]))
    assert payload.id == sweep_id and payload.status == "succeeded"
    assert payload.counts.model_dump() == sweep["counts"]
    assert payload.epochs.model_dump() == sweep["epochs"]
    assert payload.best.job_id == sweep["best"]["job_id"]
    assert payload.best.objective == sweep["best"]["objective"]
    assert payload.best.params == sweep["best"]["params"]
    assert payload.finished_at == datetime.fromisoformat(
        sweep["finished_at"].replace("Z", "+00:00")
    )
    # each trial called back on its own, as a job of the sweep
    for_trials.wait_for(3)
    trial_calls = [json.loads(sent) for _, sent, _ in for_trials.calls]
    assert sorted(c["trial"] for c in trial_calls) == [1, 2, 3]
    assert {c["sweep_id"] for c in trial_calls} == {sweep_id}
    assert {h["X-Backprop-Event"] for h, _, _ in for_trials.calls} == {"job.ended"}
    reconcile_round(stack)
    time.sleep(1.0)  # nothing more comes: the sweep called back once
    assert len(for_sweep.calls) == 2 and len(for_trials.calls) == 3


def test_a_cancelled_sweep_calls_back_once_its_running_trials_stopped(stack, receiver):
    client = stack.client()
    target, for_trials = receiver(), receiver()
    body = sweep_body(xor_data_set(client), callback_url=target.url)
    body["base"]["epochs"] = 20_000
    body["base"]["data"]["batch_size"] = 1
    body["base"]["callback_url"] = for_trials.url  # each trial, the queued ones cancelled too
    sweep_id = client.post("/v1/sweeps", json=body).json()["id"]
    deadline = time.monotonic() + 60
    while client.get(f"/v1/sweeps/{sweep_id}").json()["counts"]["running"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    cancelled = client.post(f"/v1/sweeps/{sweep_id}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["callback"]["state"] == "waiting"  # a trial is still stopping
    target.wait_for(1)
    payload = SweepCallbackPayload.model_validate(json.loads(target.calls[0][1]))
    assert payload.status == "cancelled"
    assert payload.counts.running == payload.counts.queued == 0  # every trial had stopped
    assert payload.counts.cancelled >= 1
    assert ended_sweep(client, sweep_id)["callback"]["state"] == "delivered"
    trials = client.get(f"/v1/jobs?sweep={sweep_id}").json()["jobs"]
    for_trials.wait_for(len(trials))
    reconcile_round(stack)
    time.sleep(1.0)
    assert len(target.calls) == 1
    called = sorted(json.loads(body)["id"] for _, body, _ in for_trials.calls)
    assert called == sorted(t["id"] for t in trials)  # each once
    assert {client.job(t["id"])["callback_state"] for t in trials} == {"delivered"}


def test_a_sweep_without_a_callback_url_has_no_callback(stack):
    client = stack.client()
    response = client.post("/v1/sweeps", json=sweep_body(xor_data_set(client)))
    assert response.status_code == 202, response.text
    assert response.json()["callback"] is None
