"""Job callbacks through the live stack, to a real HTTP receiver on this machine: signed
with the tenant's secret, retried with backoff, every attempt in the job's history; private
addresses refused where the setting does not allow them; redirects never followed."""

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
from api.schemas import CallbackPayload
from backprop.settings import Settings
from tests.conftest import make_token

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
