"""The schema comes from Alembic only, and the models agree with it on both databases."""

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from backprop.cli import alembic_config
from store.db import get_database
from store.models import Base


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
