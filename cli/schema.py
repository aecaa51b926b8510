"""The database schema brought to the newest migration: Alembic's configuration for a
checkout or the image (the only way the schema is created). The reason to change is where
Alembic's configuration and migrations are found."""

from __future__ import annotations

from pathlib import Path

from backprop.settings import get_settings

ROOT = Path(__file__).resolve().parents[1]


def alembic_config(url: str | None = None):
    from alembic.config import Config

    # a checkout (or the image's /app) keeps alembic.ini next to migrations/
    root = Path.cwd() if (Path.cwd() / "alembic.ini").exists() else ROOT
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "migrations"))
    if url:
        config.attributes["url"] = url
    return config


def migrate(url: str | None = None) -> None:
    """Bring the database schema to the newest migration (the only way it is created)."""
    from alembic import command

    command.upgrade(alembic_config(url or get_settings().sqlalchemy_url), "head")
