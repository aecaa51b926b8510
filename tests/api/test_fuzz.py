"""Fuzzing every operation from the OpenAPI document with schemathesis 4.

Runs in process against the real Flask app (``from_wsgi``) with a real SQLite database and a
real Redis broker (no worker consumes this test's queue, so jobs stay queued). All default
checks run: no server error, status codes, content types and response schemas as documented,
schema-valid data accepted, schema-invalid data rejected, authentication enforced; then the
stateful phase follows the document's links (create a job, then read it, its metrics, its
model, predict, cancel). The session ends with the figures: operations, requests, 5xx seen.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import uuid
from pathlib import Path

import redis
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.errors import FlakyStrategyDefinition

from api import create_app
from backprop.cli import migrate
from backprop.settings import Settings
from tests.conftest import make_token
from tests.support.services import redis_url as shared_or_private_redis

FIGURES = {
    "operations": set(),
    "requests": 0,
    "server_errors": 0,
    "followed_links": 0,
    "flaky_restarts": 0,
}


def build_app(tmp_dir):
    url = f"sqlite:///{tmp_dir / 'fuzz.sqlite3'}"
    migrate(url)
    broker, _private = shared_or_private_redis(tmp_dir)
    config = Settings(
        database_url=url,
        redis_url=broker,
        var_dir=tmp_dir,
        training_queue=f"fuzz-{uuid.uuid4().hex[:8]}",
        control_queue=f"fuzz-c-{uuid.uuid4().hex[:8]}",
        # small limits keep generated jobs cheap; a high rate limit lets the fuzzer through
        max_layers=6,
        max_layer_width=64,
        max_epochs=50,
        max_job_cost=1e6,
        max_content_length=2**20,
        rate_limit="100000/minute",
        max_queued_jobs_per_tenant=10**6,
    )
    return create_app(config), make_token(url, "fuzzer"), config, _private


# schemathesis parametrizes at collection time, so the app is built when the module loads
_TMP = Path(tempfile.mkdtemp(prefix="bpj-fuzz-"))
APP, TOKEN, CONFIG, _PRIVATE_REDIS = build_app(_TMP)


@atexit.register
def _cleanup() -> None:
    try:
        redis.Redis.from_url(CONFIG.redis_url).delete(CONFIG.training_queue, CONFIG.control_queue)
    except redis.RedisError:
        pass
    if _PRIVATE_REDIS is not None:
        _PRIVATE_REDIS.stop()
    shutil.rmtree(_TMP, ignore_errors=True)


schema = schemathesis.openapi.from_wsgi("/openapi.json", APP)
CURRENT = {"token": TOKEN}


@schema.auth()
class BearerToken:
    """The tenant's token on every request; schemathesis also probes without it and with a
    wrong one (the ignored_auth check), which must be 401."""

    def get(self, case, context):
        return CURRENT["token"]

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


schema.config.generation.update(max_examples=100)
# Schema-valid bodies that break a cross-field rule (an input row longer than structure[0])
# are rightly 422: JSON Schema cannot say "row length = structure[0]".
schema.config.checks.positive_data_acceptance.expected_statuses = [
    "2XX",
    "401",
    "404",
    "409",
    "422",
    "429",
]


def _record(case, response) -> None:
    FIGURES["operations"].add(f"{case.method} {case.path}")
    FIGURES["requests"] += 1
    if response.status_code >= 500:
        FIGURES["server_errors"] += 1


@schema.parametrize()
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_every_operation(case):
    response = case.call()
    _record(case, response)
    case.validate_response(response)
    assert response.status_code < 500, response.text


def test_stateful_links():
    machine = schema.as_state_machine()

    class Workflow(machine):
        def setup(self):
            # a tenant per example: what one example did (an Idempotency-Key it used, jobs it
            # queued) cannot change another's answers, or hypothesis could not replay them
            CURRENT["token"] = make_token(CONFIG.database_url, f"fuzz-{uuid.uuid4().hex[:8]}")

        def teardown(self):
            CURRENT["token"] = TOKEN

        def after_call(self, response, case):
            _record(case, response)
            # a 2xx on a job's own URL means a link carried a created job's id here
            if "{job_id}" in case.path and response.status_code < 300:
                FIGURES["followed_links"] += 1

    # About one run in thirty, hypothesis stops the stateful phase with
    # FlakyStrategyDefinition ("a flaky precondition, or a bundle that was unexpectedly
    # empty"): schemathesis chose rules differently for the same draws. A fixed seed did not
    # avoid it, and no 5xx or failed check was behind it in any run we traced. That error
    # alone gets a fresh run, at most twice, and is counted in the figures; every other
    # failure fails the test at once.
    for attempt in range(3):
        try:
            Workflow.run(
                settings=settings(
                    max_examples=120,
                    stateful_step_count=6,
                    deadline=None,
                    suppress_health_check=list(HealthCheck),
                    database=None,  # a stored flaky draw would only replay the flake
                )
            )
            return
        except FlakyStrategyDefinition:
            FIGURES["flaky_restarts"] += 1
            if attempt == 2:
                raise


def test_fuzzing_covered_every_operation_without_server_errors():
    """Runs after the two above (file order): every documented operation was called."""
    documented = {
        f"{method.upper()} {path}"
        for path, methods in schema.raw_schema["paths"].items()
        for method in methods
    }
    assert documented <= FIGURES["operations"], documented - FIGURES["operations"]
    assert FIGURES["requests"] >= 10 * len(documented)
    assert FIGURES["server_errors"] == 0
    assert FIGURES["followed_links"] > 0, "the stateful phase never followed a link"
    print(
        f"\nfuzzing: {len(documented)} operations fuzzed, {FIGURES['requests']} requests "
        f"generated, {FIGURES['server_errors']} 5xx seen, "
        f"{FIGURES['followed_links']} calls along links"
    )
