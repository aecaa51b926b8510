"""The API's promises through Flask's test client, on a real database and a real Redis:
idempotent submits, quotas and rate limits, tokens, errors that leak nothing, the document."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest
import redis
from sqlalchemy import event

from api import create_app
from store import jobs, leases
from store.db import get_database
from store.models import Job
from store.tokens import hash_token
from tests.conftest import make_token
from tests.support.specs import inline_spec
from tests.support.stack import ROOT

SPEC = {
    "structure": [2, 3, 1],
    "epochs": 2,
    "learning_rate": 1.0,
    "data": {"inputs": [[0, 0], [1, 1]], "targets": [[0], [1]]},
}


@pytest.fixture
def make_client(test_settings):
    """A test client of an app with some settings changed, for a fresh tenant."""

    queues = []

    def make(**changes):
        # a queue no worker reads: jobs stay queued whatever else the test run starts
        changes.setdefault("training_queue", f"contract-{uuid.uuid4().hex[:8]}")
        queues.append(changes["training_queue"])
        app = create_app(test_settings.model_copy(update=changes))
        tenant = f"t-{uuid.uuid4().hex[:8]}"
        token = make_token(test_settings.database_url, tenant)
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        return app, client, tenant

    yield make
    redis.Redis.from_url(test_settings.redis_url).delete(*queues)  # the unread hints


def count_jobs(database_url: str, tenant: str) -> int:
    with get_database(database_url).session() as s:
        return s.query(Job).filter_by(tenant=tenant).count()


def test_idempotent_submit_replays_the_first_answer(make_client, test_settings):
    _, client, tenant = make_client()
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    first = client.post("/v1/jobs", json=SPEC, headers=key)
    again = client.post("/v1/jobs", json=SPEC, headers=key)
    assert first.status_code == again.status_code == 202
    assert again.json == first.json and again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert count_jobs(test_settings.database_url, tenant) == 1

    other = client.post("/v1/jobs", json={**SPEC, "epochs": 3}, headers=key)
    assert other.status_code == 422 and "different request body" in other.json["detail"]
    assert count_jobs(test_settings.database_url, tenant) == 1

    fresh = client.post("/v1/jobs", json=SPEC, headers={"Idempotency-Key": f"k-{uuid.uuid4()}"})
    assert fresh.status_code == 202 and fresh.json["id"] != first.json["id"]


def test_a_rejected_submit_does_not_use_up_its_key(make_client, test_settings):
    _, client, tenant = make_client()
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    bad = client.post("/v1/jobs", json={**SPEC, "epochs": 0}, headers=key)
    assert bad.status_code == 422
    good = client.post("/v1/jobs", json=SPEC, headers=key)
    assert good.status_code == 202 and "Idempotent-Replayed" not in good.headers


def test_concurrent_twins_with_one_key_make_one_job(make_client, test_settings):
    app, _, tenant = make_client()
    token = make_token(test_settings.database_url, tenant)
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}", "Authorization": f"Bearer {token}"}
    answers, barrier = [], threading.Barrier(4)

    def submit():
        barrier.wait()
        answers.append(app.test_client().post("/v1/jobs", json=SPEC, headers=key))

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {a.status_code for a in answers} == {202}
    assert len({a.json["id"] for a in answers}) == 1
    assert count_jobs(test_settings.database_url, tenant) == 1


def test_queued_quota_answers_429_with_retry_after(make_client, test_settings):
    _, client, tenant = make_client(max_queued_jobs_per_tenant=2)
    assert [client.post("/v1/jobs", json=SPEC).status_code for _ in range(2)] == [202, 202]
    over = client.post("/v1/jobs", json=SPEC)
    assert over.status_code == 429 and over.headers["Retry-After"]
    assert "limit is 2" in over.json["detail"]
    assert count_jobs(test_settings.database_url, tenant) == 2


def test_concurrent_submits_never_exceed_the_queued_quota(make_client, test_settings):
    app, _, tenant = make_client(max_queued_jobs_per_tenant=3)
    token = make_token(test_settings.database_url, tenant)
    answers, barrier = [], threading.Barrier(10)

    def submit():
        barrier.wait()  # all ten pass the early check before any of them stores its job
        answers.append(
            app.test_client().post(
                "/v1/jobs", json=SPEC, headers={"Authorization": f"Bearer {token}"}
            )
        )

    threads = [threading.Thread(target=submit) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [202] * 3 + [429] * 7
    assert all(a.headers["Retry-After"] for a in answers if a.status_code == 429)
    assert count_jobs(test_settings.database_url, tenant) == 3


def test_rate_limit_per_tenant_answers_429_with_retry_after(make_client, test_settings):
    _, client, tenant = make_client(rate_limit="5/minute")
    statuses = [client.get("/v1/jobs").status_code for _ in range(4)]
    # a second token of the same tenant draws on the same budget
    other = make_token(test_settings.database_url, tenant)
    headers = {"Authorization": f"Bearer {other}", "X-Request-Id": "limited-1"}
    statuses += [client.get("/v1/jobs", headers=headers).status_code for _ in range(3)]
    assert statuses == [200] * 5 + [429, 429]
    limited = client.get("/v1/jobs", headers=headers)
    assert limited.headers["Retry-After"] and limited.mimetype == "application/problem+json"
    # the rate limiter's own answer carries the request's id like every other
    assert limited.headers["X-Request-Id"] == "limited-1"
    assert limited.json["request_id"] == "limited-1"
    assert client.get("/healthz").status_code == 200  # health is not rate limited
    assert client.get("/metrics").status_code == 200  # nor are the operators' metrics


def test_made_up_tokens_are_limited_per_address_and_never_lock_a_valid_token_out(
    make_client, test_settings
):
    app, client, tenant = make_client(auth_failure_limit="10/minute")
    address = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.7"
    client.environ_base["REMOTE_ADDR"] = address
    assert client.get("/v1/jobs").status_code == 200  # the tenant's own token, now cached
    never_used = make_token(test_settings.database_url, tenant)  # in no cache of this app
    engine = get_database(test_settings.database_url).engine
    lookups = []

    def on_statement(_connection, _cursor, statement, *_):
        if "api_token" in statement:
            lookups.append(statement)

    event.listen(engine, "before_cursor_execute", on_statement)
    started = time.monotonic()
    try:
        answers = [
            client.get("/v1/jobs", headers={"Authorization": f"Bearer bogus-{i}"})
            for i in range(40)
        ]
    finally:
        event.remove(engine, "before_cursor_execute", on_statement)
    took = time.monotonic() - started
    statuses = [a.status_code for a in answers]
    assert statuses == [401] * 10 + [429] * 30
    # the 30 refused ones cost no lookup of their own: one load of the live tokens a second
    assert len(lookups) <= 10 + 1 + int(took)
    refused = answers[-1]
    assert refused.mimetype == "application/problem+json"
    assert refused.json["type"] == "/problems/too-many-auth-failures"
    assert 1 <= int(refused.headers["Retry-After"]) <= 61
    # a valid token from that address is answered, cached or not; another address is free
    assert client.get("/v1/jobs").status_code == 200
    fresh = {"Authorization": f"Bearer {never_used}"}
    assert client.get("/v1/jobs", headers=fresh).status_code == 200
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "10.255.255.1"
    assert other.get("/v1/jobs", headers={"Authorization": "Bearer bogus"}).status_code == 401


def test_behind_a_trusted_proxy_failures_count_per_forwarded_client(make_client):
    app, client, _ = make_client(auth_failure_limit="3/minute", trusted_proxies=1)
    proxy = {"REMOTE_ADDR": "10.0.0.2"}  # every request comes from the proxy
    attacker = {
        "X-Forwarded-For": f"198.51.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}",
        "Authorization": "Bearer x",
    }
    statuses = [
        client.get("/v1/jobs", headers=attacker, environ_base=proxy).status_code for _ in range(5)
    ]
    assert statuses == [401] * 3 + [429] * 2
    # another client behind the same proxy is counted apart
    bystander = {"X-Forwarded-For": f"203.0.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"}
    bystander["Authorization"] = "Bearer y"
    assert client.get("/v1/jobs", headers=bystander, environ_base=proxy).status_code == 401
    # without a trusted proxy the header is not believed: the connection's address counts
    _, direct, _ = make_client(auth_failure_limit="3/minute")
    lying = {"REMOTE_ADDR": f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.1"}
    answers = [
        direct.get(
            "/v1/jobs",
            headers={"X-Forwarded-For": f"192.0.2.{i}", "Authorization": "Bearer z"},
            environ_base=lying,
        ).status_code
        for i in range(5)
    ]
    assert answers == [401] * 3 + [429] * 2


def test_retry_after_rides_only_on_answers_that_ask_for_a_wait(make_client):
    _, client, _ = make_client(max_queued_jobs_per_tenant=1, rate_limit="100/minute")
    accepted = client.post("/v1/jobs", json=SPEC)
    assert accepted.status_code == 202 and "Retry-After" not in accepted.headers
    listed = client.get("/v1/jobs")
    assert listed.status_code == 200 and "Retry-After" not in listed.headers
    assert listed.headers["X-RateLimit-Limit"] == "100"
    full = client.post("/v1/jobs", json=SPEC)
    # the queue quota's own wait, not the rate-limit window's
    assert full.status_code == 429 and full.headers["Retry-After"] == "30"


def test_running_jobs_per_tenant_wait_in_the_queue(test_settings):
    db = get_database(test_settings.database_url)
    tenant = f"t-{uuid.uuid4().hex[:6]}"
    ids = []
    for _ in range(3):
        with db.session() as s:
            job = jobs.create_job(
                s,
                db,
                tenant=tenant,
                spec=inline_spec([2, 3, 1], samples=2, epochs=2),
                arrays={
                    "inputs": np.zeros((2, 2)),
                    "targets": np.zeros((2, 1)),
                },
                name=None,
                labels={},
                chunk_bytes=4096,
            )
            ids.append(job.id)

    def claim(job_id):
        with db.session() as s:
            return leases.claim(
                s,
                db,
                job_id,
                f"w-{job_id[:4]}",
                lease_seconds=30,
                max_attempts=3,
                worker="w",
                max_running=2,
            )

    assert claim(ids[0]) is not None and claim(ids[1]) is not None
    assert claim(ids[2]) is None  # the tenant already runs 2
    with db.session() as s:
        assert s.get(Job, ids[2]).status == "queued"


def test_unexpected_errors_are_500_problems_without_internals(make_client, caplog):
    app, client, _ = make_client()

    def boom():
        raise RuntimeError("secret internals: password=hunter2")

    app.add_url_rule("/v1/boom", "boom", boom)
    with caplog.at_level(logging.ERROR, logger="backprop.api"):
        response = client.get("/v1/boom", headers={"X-Request-Id": "req-123"})
    assert response.status_code == 500
    assert response.mimetype == "application/problem+json"
    assert response.json["request_id"] == "req-123"
    assert "hunter2" not in response.text and "Traceback" not in response.text
    assert "req-123" in caplog.text and "RuntimeError" in caplog.text  # the log has it all


def test_request_logs_carry_ids_and_never_the_token(make_client, caplog):
    _, client, tenant = make_client()
    with caplog.at_level(logging.INFO, logger="backprop.api"):
        response = client.post("/v1/jobs", json=SPEC, headers={"X-Request-Id": "req-log-1"})
    line = next(r.getMessage() for r in caplog.records if "req-log-1" in r.getMessage())
    assert f"tenant={tenant}" in line and f"job_id={response.json['id']}" in line
    assert "status=202" in line
    token = client.environ_base["HTTP_AUTHORIZATION"].split()[1]
    assert token not in caplog.text and "0, 0" not in caplog.text  # no token, no data


def test_tokens_command_creates_lists_and_revokes(test_settings, tmp_path):
    env = {"DATABASE_URL": test_settings.database_url, "PATH": "/usr/bin:/bin"}

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "cli", "tokens", *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    token = run(
        "create", "--tenant", "cli-tenant", "--name", "ci", "--expires-in-days", "7"
    ).strip()
    assert token.startswith("bpj_")
    # no token cache here: a revocation shows at once (the cache's bound is tested on the stack)
    app = create_app(test_settings.model_copy(update={"auth_cache_seconds": 0}))
    client = app.test_client()
    assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    listing = run("list", "--tenant", "cli-tenant")
    assert token not in listing and token[:8] in listing and "expires" in listing
    token_id = listing.split()[0]
    assert "revoked" in run("revoke", token_id)
    denied = client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"})
    assert denied.status_code == 401 and "WWW-Authenticate" in denied.headers


@pytest.mark.parametrize("database_url", ["", "sqlite:///{tmp}/empty.sqlite3"])
def test_a_tokens_command_without_its_database_names_the_settings(tmp_path, database_url):
    """Outside the checkout (no var/), or on a database never migrated: one line, no trace."""
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": database_url.format(tmp=tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "cli", "tokens", "list"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "sqlalchemy" not in done.stderr.lower()
    assert "cannot use the database" in done.stderr
    assert "DATABASE_URL" in done.stderr and "VAR_DIR" in done.stderr


def test_openapi_documents_every_status_with_problem_schemas(make_client):
    _, client, _ = make_client()
    document = client.get("/openapi.json").json
    assert document["openapi"] == "3.1.0"
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    create = document["paths"]["/v1/jobs"]["post"]
    assert {"202", "400", "401", "413", "415", "422", "429", "500", "503"} <= set(
        create["responses"]
    )
    problem = create["responses"]["422"]["content"]["application/problem+json"]["schema"]
    assert problem == {"$ref": "#/components/schemas/Problem"}
    assert "links" in create["responses"]["202"]
    assert "409" in document["paths"]["/v1/jobs/{job_id}/model"]["get"]["responses"]
    assert "404" in document["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]
    assert document["paths"]["/healthz"]["get"]["security"] == []
    assert client.get("/docs/").status_code == 200


def test_the_dashboard_session_is_documented_where_it_is_accepted(make_client, test_settings):
    app, client, _ = make_client()
    document = client.get("/openapi.json").json
    scheme = document["components"]["securitySchemes"]["dashboardSession"]
    assert scheme["type"] == "apiKey" and scheme["in"] == "cookie"
    assert scheme["name"] == app.config["SESSION_COOKIE_NAME"]
    for path, item in document["paths"].items():
        for method, op in item.items():
            names = [name for alternative in op["security"] for name in alternative]
            if not names:  # open: health, readiness, the document itself
                continue
            want = ["bearerAuth", "dashboardSession"] if method == "get" else ["bearerAuth"]
            assert names == want, (method, path, names)
    # and so it behaves: a signed-in browser's cookie reads, never writes
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    browser = app.test_client()
    with browser.session_transaction() as session:
        session["token"] = hash_token(make_token(test_settings.database_url, tenant))
    assert browser.get("/v1/jobs").status_code == 200
    assert browser.get("/v1/sweeps").status_code == 200
    refused = browser.post("/v1/jobs", json={"structure": [2, 1]})
    assert refused.status_code == 401 and "Bearer" in refused.headers["WWW-Authenticate"]
    assert app.test_client().get("/v1/jobs").status_code == 401  # no cookie, no token


def _walk(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_the_document_speaks_json_schema_and_states_this_server_s_limits(make_client):
    _, client, _ = make_client(max_layers=7, max_layer_width=99, max_epochs=1234)
    document = client.get("/openapi.json").json
    from importlib.metadata import version

    assert document["info"]["version"] == version("backprop-jobs")
    # JSON Schema's words, never pydantic's
    assert not [n for n in _walk(document) if {"ge", "le", "gt", "lt"} & set(n)]
    job = document["components"]["schemas"]["JobCreate"]["properties"]
    assert job["structure"]["maxItems"] == 7 and job["structure"]["items"]["maximum"] == 99
    assert job["structure"]["items"]["minimum"] == 1 and job["epochs"]["maximum"] == 1234
    assert job["labels"]["propertyNames"]["pattern"] and "patternProperties" not in job["labels"]
    create = document["paths"]["/v1/jobs"]["post"]
    assert {r["type"] for r in create["x-rules"]} >= {"size_mismatch", "budget_exceeded"}
    assert "budget_exceeded" in create["description"]
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            for status, response in operation["responses"].items():
                where = f"{method} {path} {status}"
                assert "X-Request-Id" in response["headers"], where
                if int(status) >= 400:  # every error has its problem body
                    assert list(response["content"]) == ["application/problem+json"], where
                if status in ("429", "503"):
                    assert "Retry-After" in response["headers"], where
    assert {"Location", "Idempotent-Replayed"} <= set(create["responses"]["202"]["headers"])
    assert "ETag" in document["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]["304"]["headers"]
    model = document["paths"]["/v1/jobs/{job_id}/model"]["get"]["responses"]["200"]
    npz = document["paths"]["/v1/jobs/{job_id}/model.npz"]["get"]["responses"]["200"]
    assert list(model["content"]) == ["application/json"]
    assert list(npz["content"]) == ["application/octet-stream"]


def test_a_submit_is_one_transaction_and_a_poll_reads_without_one(make_client, test_settings):
    _, client, _ = make_client()
    client.get("/v1/jobs")  # the token is looked up once, then cached
    engine = get_database(test_settings.database_url).engine
    commits, statements = [], []

    def on_commit(_connection):
        commits.append(1)

    def on_statement(_connection, _cursor, statement, *_):
        statements.append(statement.split()[0].upper())

    event.listen(engine, "commit", on_commit)
    event.listen(engine, "before_cursor_execute", on_statement)
    try:
        submitted = client.post("/v1/jobs", json=SPEC)
        assert submitted.status_code == 202
        after_submit = len(commits)
        statements.clear()
        polled = client.get(f"/v1/jobs/{submitted.json['id']}")
        assert polled.status_code == 200
    finally:
        event.remove(engine, "commit", on_commit)
        event.remove(engine, "before_cursor_execute", on_statement)
    # the job, its data, its dispatch record and the quota count commit together
    assert after_submit == 1
    assert [e["kind"] for e in submitted.json["history"]] == ["queued", "dispatched"]
    # the job row and its history (one query on PostgreSQL), outside any transaction; the
    # token came from the cache
    one_query = test_settings.database_url.startswith("postgresql")
    assert statements == (["SELECT"] if one_query else ["SELECT", "SELECT"])
    assert len(commits) == 1


def test_long_polls_and_streams_are_capped_per_tenant_and_per_process(make_client, test_settings):
    app, client, _ = make_client(max_waits_per_tenant=2, max_waits_per_process=3)
    job = client.post("/v1/jobs", json=SPEC).json  # stays queued: no worker reads its queue
    other = app.test_client()
    other.environ_base["HTTP_AUTHORIZATION"] = (
        f"Bearer {make_token(test_settings.database_url, f'o-{uuid.uuid4().hex[:6]}')}"
    )
    other_job = other.post("/v1/jobs", json=SPEC).json
    answers, threads = [], []

    def long_poll(who, job_id, seconds=3):
        answers.append(who.get(f"/v1/jobs/{job_id}?wait={seconds}").status_code)

    for who, job_id in ((client, job["id"]), (client, job["id"]), (other, other_job["id"])):
        threads.append(threading.Thread(target=long_poll, args=(who, job_id)))
        threads[-1].start()
    time.sleep(0.5)  # the three wait now: the tenant's two, the other's one
    refused = client.get(f"/v1/jobs/{job['id']}?wait=3")
    assert refused.status_code == 429 and refused.json["type"] == "/problems/too-many-waits"
    assert "MAX_WAITS_PER_TENANT" in refused.json["detail"] and refused.headers["Retry-After"]
    stream = client.get(f"/v1/jobs/{job['id']}/events?timeout=1")
    assert stream.status_code == 429  # an event stream takes a slot too
    full = other.get(f"/v1/jobs/{other_job['id']}?wait=3")
    assert full.status_code == 429 and "MAX_WAITS_PER_PROCESS" in full.json["detail"]
    assert client.get(f"/v1/jobs/{job['id']}").status_code == 200  # a plain read goes on
    for thread in threads:
        thread.join()
    assert answers == [200, 200, 200]
    # every slot came back: a stream, then a long poll, are served again
    streamed = client.get(f"/v1/jobs/{job['id']}/events?timeout=1")
    assert streamed.status_code == 200 and b"event: status" in streamed.data
    assert client.get(f"/v1/jobs/{job['id']}?wait=0.2").status_code == 200
