"""Session fixtures for the real services the tests need (started only when a test asks)."""

from __future__ import annotations

import json
import uuid

import pytest

from backprop.settings import Settings
from cli.schema import migrate
from store import tokens
from store.db import get_database
from tests.support import services, stack
from tests.support.report import REPORT

LOG_TAIL_CHARS = 4000
FIRST_PROCESS = pytest.StashKey[int]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item.stash[FIRST_PROCESS] = len(stack.STARTED)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test's report ends with the last lines of the logs of the service processes
    (gunicorn, workers, beat) it started or found running: what the servers saw is there
    when CI fails."""
    report = yield
    if report.failed:
        first = item.stash.get(FIRST_PROCESS, 0)
        for number, process in enumerate(stack.STARTED):
            if number >= first or process.alive:
                tail = process.output()[-LOG_TAIL_CHARS:]
                report.sections.append((f"log of {process.name} ({process.log_path})", tail))
    return report


@pytest.fixture(scope="session")
def pg_admin(tmp_path_factory):
    """libpq URL of a PostgreSQL server on which tests may create databases."""
    url, private = services.postgres_admin_url(tmp_path_factory.mktemp("pg"))
    yield url
    if private is not None:
        private.cleanup()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    url, private = services.redis_url(tmp_path_factory.mktemp("redis"))
    yield url
    if private is not None:
        private.stop()


def new_database(kind: str, pg_admin_url: str | None, tmp_path) -> str:
    """A fresh, migrated database URL (SQLAlchemy form)."""
    if kind == "postgresql":
        url = services.sqlalchemy_url(services.create_database(pg_admin_url))
    else:
        url = f"sqlite:///{tmp_path / f'backprop-{uuid.uuid4().hex[:6]}.sqlite3'}"
    migrate(url)
    return url


def drop(kind: str, pg_admin_url: str | None, url: str) -> None:
    get_database(url).engine.dispose()
    if kind == "postgresql":
        services.drop_database(pg_admin_url, url.replace("+psycopg", ""))


@pytest.fixture(scope="session", params=["postgresql", "sqlite"])
def database_url(request, tmp_path_factory):
    """One migrated database per dialect for the session (tests that need both run twice)."""
    kind = request.param
    admin = request.getfixturevalue("pg_admin") if kind == "postgresql" else None
    url = new_database(kind, admin, tmp_path_factory.mktemp(kind))
    yield url
    drop(kind, admin, url)


@pytest.fixture(scope="session")
def test_settings(database_url, redis_url, tmp_path_factory) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        var_dir=tmp_path_factory.mktemp("var"),
        training_queue=f"training-test-{uuid.uuid4().hex[:8]}",
        control_queue=f"control-test-{uuid.uuid4().hex[:8]}",
    )


def make_token(database_url: str, tenant: str) -> str:
    with get_database(database_url).session() as session:
        return tokens.create_token(session, tenant).token


# ------------------------------------------------------------------- the fault report
# tests/faults fill REPORT; the end of every run prints it ("fault injection: ...", "soak:").
# Under pytest-xdist (``make test`` runs two processes) each process hands its part to the
# controller, which sums them before the summary.


def pytest_sessionfinish(session):
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["fault_report"] = json.dumps(REPORT)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    report = json.loads(getattr(node, "workeroutput", {}).get("fault_report", "{}"))
    for key, value in report.items():
        if isinstance(value, bool) or not isinstance(value, int | list):
            REPORT[key] = value
        elif isinstance(value, int):
            REPORT[key] = REPORT.get(key, 0) + value
        else:
            REPORT.setdefault(key, []).extend(value)


def pytest_terminal_summary(terminalreporter):
    if REPORT["jobs_checked"]:
        terminalreporter.write_line(
            "fault injection: {faults_injected} faults injected, {jobs_checked} jobs checked, "
            "jobs lost: {jobs_lost}, jobs trained twice: {jobs_trained_twice}".format(**REPORT)
        )
        soak = REPORT.get("soak")
        if soak:
            terminalreporter.write_line(
                "soak: {jobs} jobs, {training_processes_killed} training processes and "
                "{workers_killed} workers SIGKILLed; kill to next claim: worst "
                "{worst_kill_to_claim_s} s, mean {mean_kill_to_claim_s} s (when the worker "
                "was killed too before the claim: worst {worst_past_a_worker_kill_s} s); "
                "{dispatches_per_job} task messages per job ({needless_resends} re-sent without "
                "a lease expiry or a release); worker down {worker_down_s} s".format(**soak)
            )
        terminalreporter.write_line("fault report json: " + json.dumps(REPORT))
