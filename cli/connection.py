"""How a user's command reaches the service and answers: the --url, --token and --json
options, one message instead of a traceback for a user's error, and a table or JSON.
The reason to change is how a user's command connects, reports an error or prints.

The service is ``--url`` (``BACKPROP_URL``, default http://127.0.0.1:8000) and the token
``--token`` (``BACKPROP_TOKEN``; under ``make run``, its dev token in VAR_DIR/dev-token).
Tables are for people, ``--json`` for scripts. A user's error (a 4xx, an unreachable
service, a failed job) prints one message and exits non-zero, never a traceback.
"""

from __future__ import annotations

import functools
import json

import click
import httpx
from rich.console import Console

from backprop.client import ApiError, Client, JobFailed
from backprop.settings import get_settings

console = Console()


def connection(command):
    """--url/--token options and error handling for a command that talks to the API."""

    @click.option("--url", envvar="BACKPROP_URL", default="http://127.0.0.1:8000",
                  show_default=True, help="The service (BACKPROP_URL).")  # fmt: skip
    @click.option("--token", envvar="BACKPROP_TOKEN", default=None,
                  help="A token (BACKPROP_TOKEN); make run's dev token otherwise.")  # fmt: skip
    @click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
    @functools.wraps(command)
    def wrapper(url, token, as_json, **kwargs):
        token = token or _dev_token()
        if not token:
            raise click.ClickException(
                "no token: pass --token or set BACKPROP_TOKEN (make run prints one and keeps "
                "it in var/dev-token)"
            )
        try:
            with Client(url, token, retry_seconds=30) as client:
                return command(client, as_json, **kwargs)
        except ApiError as exc:
            lines = [exc.detail] + [f"  {e['field']}: {e['msg']}" for e in exc.errors[:20]]
            raise click.ClickException("\n".join(lines)) from None
        except JobFailed as exc:
            raise click.ClickException(str(exc)) from None
        except httpx.TransportError as exc:
            raise click.ClickException(
                f"cannot reach {url} ({type(exc).__name__}); is the service running (make run)?"
            ) from None

    return wrapper


def _dev_token() -> str | None:
    path = get_settings().var_dir / "dev-token"
    return path.read_text().strip() if path.exists() else None


def show(data, as_json: bool, table=None) -> None:
    if as_json or table is None:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        console.print(table)
