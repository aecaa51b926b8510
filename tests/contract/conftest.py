"""The live service on PostgreSQL for third-party clients of its document: schemathesis from
outside, and a client generated from /openapi.json. Limits are small so that generated jobs
are cheap, and the rate limits are raised so that the fuzzer is not throttled."""

from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass

import pytest

from tests.conftest import drop, make_token, new_database
from tests.support.stack import ManagedProcess, service_env, start_api, start_worker

LIMITS = {
    "max_layers": 6,
    "max_layer_width": 64,
    "max_epochs": 50,
    "max_job_cost": 1e6,
    "max_content_length": 2**20,
}


@dataclass
class Live:
    base: str
    database_url: str
    worker: ManagedProcess
    api: ManagedProcess

    def token(self, tenant: str | None = None) -> str:
        return make_token(self.database_url, tenant or f"t-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="session")
def live(pg_admin, redis_url, tmp_path_factory):
    url = new_database("postgresql", pg_admin, tmp_path_factory.mktemp("contract"))
    logs = tmp_path_factory.mktemp("contract-logs")
    env = service_env(
        database_url=url,
        redis_url=redis_url,
        training_queue=f"contract-{uuid.uuid4().hex[:8]}",
        control_queue=f"contract-c-{uuid.uuid4().hex[:8]}",
        var_dir=tmp_path_factory.mktemp("contract-var"),
        lease_seconds=5,
        heartbeat_seconds=0.2,
        rate_limit="100000/minute",
        auth_failure_limit="100000/minute",
        max_queued_jobs_per_tenant=10**6,
        **LIMITS,
    )
    worker = start_worker(env, logs, "contract-worker")
    api, base = start_api(env, logs, "contract-api")
    yield Live(base, url, worker, api)
    api.stop()
    worker.stop()
    drop("postgresql", pg_admin, url)


def pytest_terminal_summary(terminalreporter):
    """The live schemathesis run's figures (the README quotes them)."""
    module = sys.modules.get("tests.contract.test_schemathesis_live")
    figures = getattr(module, "FIGURES", None)
    if not figures:
        return
    terminalreporter.write_line(
        f"schemathesis (live, PostgreSQL, --checks all): {figures['operations']} of "
        f"{figures['documented']} operations, {figures['cases']} test cases, "
        f"{figures['scenarios']} stateful scenarios, {figures['links']} links covered, "
        f"{figures['failures']} failures, {figures['errors']} errors in {figures['seconds']} s; "
        f"422s excused by documented rules: {figures['excused_count']} "
        f"({', '.join(figures['excused']) or 'none'})"
    )
