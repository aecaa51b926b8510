"""The schema comes from Alembic only, and the models agree with it on both databases."""

import json
from datetime import datetime

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from cli.schema import alembic_config
from store.db import get_database
from store.models import Base
from tests.conftest import drop
from tests.support import services


def test_models_and_migrations_agree(database_url):
    engine = get_database(database_url).engine
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == [], f"models and migrations differ: {differences}"
    assert set(inspect(engine).get_table_names()) >= set(Base.metadata.tables)


def test_alembic_check_finds_nothing_to_generate(database_url):
    # the same comparison through Alembic's own command (what CI would run by hand)
    command.check(alembic_config(database_url))


def test_downgrade_mirrors_upgrade(tmp_path):
    url = f"sqlite:///{tmp_path / 'roundtrip.sqlite3'}"
    config = alembic_config(url)
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    engine = get_database(url).engine
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    command.upgrade(config, "head")
    assert set(inspect(engine).get_table_names()) >= set(Base.metadata.tables)


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_0010_keeps_the_callbacks_of_jobs_that_have_not_ended(kind, request, tmp_path):
    admin = request.getfixturevalue("pg_admin") if kind == "postgresql" else None
    if kind == "postgresql":
        url = services.sqlalchemy_url(services.create_database(admin))
    else:
        url = f"sqlite:///{tmp_path / 'before-0010.sqlite3'}"
    try:
        check_0010(url)
    finally:
        if kind == "postgresql":
            drop(kind, admin, url)


def check_0010(url: str) -> None:
    config = alembic_config(url)
    command.upgrade(config, "0009")
    engine = get_database(url).engine
    hook = json.dumps({"callback_url": "https://example.com/hook"})
    rows = {"running-hook": ("running", hook), "ended-hook": ("succeeded", hook)}
    rows["running-none"] = ("running", "{}")
    with engine.begin() as connection:
        for job_id, (status, spec) in rows.items():
            connection.execute(
                text(
                    "INSERT INTO job (id, tenant, labels, spec, status, epoch, epochs, "
                    "attempts, cancel_requested, dispatch_count, runtime_seconds, "
                    "stopped_early, created_at, updated_at) VALUES (:id, 't', '{}', :spec, "
                    ":status, 0, 1, 0, false, 0, 0, false, :now, :now)"
                ),
                {"id": job_id, "spec": spec, "status": status, "now": datetime(2026, 12, 1)},
            )
    command.upgrade(config, "head")
    with engine.connect() as connection:
        states = dict(connection.execute(text("SELECT id, callback_state FROM job")).all())
    # a job still to end calls back as new ones do; an ended one was called back already
    assert states == {"running-hook": "waiting", "ended-hook": None, "running-none": None}
