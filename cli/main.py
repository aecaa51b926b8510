"""The ``backprop`` command: the operators' commands here, the users' added from ``jobs``,
``datasets`` and ``sweeps``.
The reason to change is an operators' command or one of its options.

    backprop dev                       # everything on this machine (what `make run` runs)
    backprop migrate                   # alembic upgrade head against DATABASE_URL
    backprop tokens create --tenant acme [--name ci] [--expires-in-days 90]
    backprop tokens list [--tenant acme]
    backprop tokens revoke ID
    backprop webhooks secret --tenant acme [--rotate]
    backprop reconcile                 # one reconciler pass, as beat runs it

Flask's and Celery's own commands keep working (``flask --app 'web:create_app()' routes``,
``celery -A worker.app inspect active``).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import click

from backprop.settings import get_settings

from .datasets import datasets_group
from .jobs import JOB_COMMANDS
from .schema import migrate
from .sweeps import sweep_group


@click.group()
@click.option("--log-level", default=None, help="Overrides LOG_LEVEL.")
def main(log_level: str | None) -> None:
    """backprop-jobs: train neural networks over HTTP."""
    logging.basicConfig(
        level=(log_level or get_settings().log_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request


@main.command("migrate")
def migrate_command() -> None:
    """Upgrade the database at DATABASE_URL to the newest schema."""
    settings = get_settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.sqlalchemy_url)
    click.echo("database schema is up to date")


@main.group()
def tokens() -> None:
    """Create, list and revoke API tokens."""


def _database():
    from store.db import get_database

    return get_database(get_settings().sqlalchemy_url)


@contextmanager
def _session():
    """A database session whose failures are one line naming where the command looked."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with _database().session() as session:
            yield session
    except SQLAlchemyError as exc:
        settings = get_settings()
        where = settings.database_url or f"SQLite at {settings.sqlalchemy_url[len('sqlite:///') :]}"
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise click.ClickException(
            f"cannot use the database ({where}): {reason}. Set DATABASE_URL to the service's "
            "database, or VAR_DIR to its directory (make run keeps it in var/ of the "
            "checkout), and run `backprop migrate` once for a new one."
        ) from None


@tokens.command("create")
@click.option("--tenant", required=True, help="The tenant the token acts for.")
@click.option("--name", default="", help="A note to recognise the token by.")
@click.option("--expires-in-days", type=click.IntRange(min=1), default=None)
def tokens_create(tenant: str, name: str, expires_in_days: int | None) -> None:
    """Print a new token (shown once; only its hash is stored)."""
    from store import tokens as store_tokens

    expires = None
    if expires_in_days:
        expires = datetime.now(UTC) + timedelta(days=expires_in_days)
    with _session() as session:
        new = store_tokens.create_token(session, tenant, name=name, expires_at=expires)
    click.echo(new.token)


@tokens.command("list")
@click.option("--tenant", default=None)
def tokens_list(tenant: str | None) -> None:
    """List tokens (id, tenant, prefix, state); never the secret."""
    from store import tokens as store_tokens

    with _session() as session:
        for row in store_tokens.list_tokens(session, tenant):
            state = "revoked" if row.revoked_at else "active"
            if row.expires_at and state == "active":
                state = f"expires {row.expires_at:%Y-%m-%d}"
            click.echo(f"{row.id}\t{row.tenant}\t{row.prefix}...\t{state}\t{row.name}")


@tokens.command("revoke")
@click.argument("token_id", type=int)
def tokens_revoke(token_id: int) -> None:
    """Revoke a token by id; requests with it get 401 from now on."""
    from store import tokens as store_tokens

    with _session() as session:
        done = store_tokens.revoke_token(session, token_id)
    if not done:
        raise click.ClickException(f"no active token with id {token_id}")
    click.echo(f"token {token_id} revoked")


@main.group()
def webhooks() -> None:
    """The signing secret of a tenant's job callbacks."""


@webhooks.command("secret")
@click.option("--tenant", required=True)
@click.option("--rotate", is_flag=True, help="Replace it (callbacks signed with the old fail).")
def webhooks_secret(tenant: str, rotate: bool) -> None:
    """Show the tenant's secret (made on first use), or a new one with --rotate."""
    from store import webhooks as store_webhooks

    with _session() as session:
        click.echo(store_webhooks.secret_for(session, tenant, rotate=rotate))


@main.command("reconcile")
def reconcile_command() -> None:
    """Run one reconciler pass now."""
    from messaging.dispatch import Dispatcher
    from worker.reconciler import reconcile

    settings = get_settings()
    report = reconcile(_database(), settings, Dispatcher(settings))
    click.echo(f"{report}")


@main.command("dev")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def dev_command(host: str, port: int) -> None:
    """Run the whole service here: Redis (embedded unless REDIS_URL is set), SQLite under
    VAR_DIR, the API, a Celery worker and beat, restarted if they die. Ctrl-C stops all."""
    from .dev import run_dev

    run_dev(host, port)


for command in (*JOB_COMMANDS, datasets_group, sweep_group):
    main.add_command(command)
