"""``backprop sweep``: submit a sweep, follow its live leaderboard, cancel and delete it.

    backprop sweep submit sweep.json --watch | sweep status ID | sweep watch ID | sweep cancel ID

``sweep watch --jsonl`` prints every state of a sweep as a line of JSON while it runs.
The reason to change is a sweep command or one of its options.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from backprop.client import Client

from .connection import connection, console, show


@click.group("sweep")
def sweep_group():
    """Hyperparameter sweeps: submit, follow a live leaderboard, cancel."""


JSON_LINES = click.option(
    "--jsonl",
    is_flag=True,
    help="While it runs, print each state as one JSON line (for scripts); the last is its end.",
)


@sweep_group.command("submit")
@click.argument("sweep_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--watch", "watch", is_flag=True, help="Follow the leaderboard until it ends.")
@JSON_LINES
@connection
def sweep_submit(client, as_json, sweep_file, watch, jsonl):
    """Start the sweep a JSON file describes (POST /v1/sweeps's body)."""
    body = json.loads(Path(sweep_file).read_text())
    sweep = client.submit_sweep(body)
    if jsonl:
        _ended(_follow_sweep_lines(client, sweep["id"]))
        return
    if not as_json:
        console.print(f"sweep {sweep['id']} started: {sweep['trials']} trials")
    if watch:
        sweep = _follow_sweep(client, sweep["id"], as_json)
    show(sweep, as_json, _sweep_table(sweep))


@sweep_group.command("status")
@click.argument("sweep_id")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@connection
def sweep_status(client, as_json, sweep_id, limit):
    """The sweep's status, counts and leaderboard."""
    sweep = client.sweep(sweep_id, limit=limit)
    shown = _sweep_table(sweep)
    if sweep.get("configurations"):
        shown = Group(shown, _configurations_table(sweep))
    show(sweep, as_json, shown)


@sweep_group.command("watch")
@click.argument("sweep_id")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@JSON_LINES
@connection
def sweep_watch(client, as_json, sweep_id, limit, jsonl):
    """A live leaderboard until the sweep ends; exit 0 when it succeeded."""
    if jsonl:
        sweep = _follow_sweep_lines(client, sweep_id, limit)
    else:
        sweep = _follow_sweep(client, sweep_id, as_json, limit)
        show(sweep, as_json, _sweep_table(sweep))
    _ended(sweep)


def _ended(sweep: dict) -> None:
    """Exit 0 when the sweep succeeded, 1 with its status otherwise."""
    if sweep["status"] != "succeeded":
        raise click.ClickException(f"sweep {sweep['id']} {sweep['status']}")


@sweep_group.command("list")
@connection
def sweep_list(client, as_json):
    """The tenant's sweeps, newest first."""
    rows = list(client.sweeps())
    table = Table("id", "name", "status", "method", "trials", "succeeded", "best", "created")
    for s in rows:
        best = s.get("best") or {}
        table.add_row(s["id"], s.get("name") or "", s["status"], s["method"], str(s["trials"]),
                      str(s["counts"]["succeeded"]), _number(best.get("objective")),
                      str(s["created_at"])[:19])  # fmt: skip
    show(rows, as_json, table)


@sweep_group.command("cancel")
@click.argument("sweep_id")
@connection
def sweep_cancel(client, as_json, sweep_id):
    """Cancel the sweep's queued and running trials; finished ones stay."""
    sweep = client.cancel_sweep(sweep_id)
    show(sweep, as_json, _sweep_table(sweep))


@sweep_group.command("continue")
@click.argument("sweep_id")
@click.option("--add-trials", type=click.IntRange(min=0), default=0, help="More trials.")
@click.option("--rerun-failed", is_flag=True, help="Run failed trials again.")
@click.option("--extend-top", type=click.IntRange(min=1), default=None,
              help="Continue this many of the best trials...")  # fmt: skip
@click.option("--extend-epochs", type=click.IntRange(min=1), default=None,
              help="...by this many more epochs each.")  # fmt: skip
@connection
def sweep_continue(client, as_json, sweep_id, add_trials, rerun_failed, extend_top, extend_epochs):
    """Resume a cancelled sweep, re-run failed trials, add trials or extend the best ones:
    every trial that comes back continues exactly where it was."""
    if (extend_top is None) != (extend_epochs is None):
        raise click.UsageError("--extend-top and --extend-epochs go together")
    extend = {"top": extend_top, "epochs": extend_epochs} if extend_top else None
    sweep = client.continue_sweep(
        sweep_id, add_trials=add_trials, rerun_failed=rerun_failed, extend=extend
    )
    show(sweep, as_json, _sweep_table(sweep))


@sweep_group.command("delete")
@click.argument("sweep_id")
@connection
def sweep_delete(client, as_json, sweep_id):
    """Delete an ended sweep with its trials, their metrics and models."""
    client.delete_sweep(sweep_id)
    if as_json:
        show({"deleted": sweep_id}, True)
    else:
        click.echo(f"deleted {sweep_id}")


def _follow_sweep(client: Client, sweep_id: str, as_json: bool, limit: int = 20) -> dict:
    if as_json:
        return client.wait_sweep(sweep_id, limit=limit)
    with Live(console=console, refresh_per_second=4, transient=True) as live:
        return client.wait_sweep(
            sweep_id, limit=limit, on_update=lambda s: live.update(_sweep_table(s))
        )


def _follow_sweep_lines(client: Client, sweep_id: str, limit: int = 20) -> dict:
    """Each state of the sweep's event stream as one line of JSON, flushed as it comes."""

    def line(sweep: dict) -> None:
        click.echo(json.dumps(sweep, default=str, separators=(",", ":")))
        sys.stdout.flush()

    try:
        return client.wait_sweep(sweep_id, limit=limit, on_update=line)
    except BrokenPipeError:  # the reader stopped (| head): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)


def _number(value) -> str:
    return "" if value is None else f"{value:.4g}"


def _sweep_table(sweep: dict) -> Table:
    """The leaderboard: best first, with the counts and the compute saved as its title."""
    counts, epochs = sweep["counts"], sweep["epochs"]
    done = counts["succeeded"] + counts["failed"] + counts["cancelled"]
    title = (
        f"sweep {sweep['id'][:8]} {sweep['status']}: {done}/{sweep['trials']} trials ended, "
        f"{counts['running']} running"
        + (f", {counts['paused']} paused" if counts.get("paused") else "")
        + f"; {sweep['objective']['metric']} "
        f"({sweep['objective']['goal']}); epochs {epochs['run']}/{epochs['full']} "
        f"({epochs['saved']:.0%} saved)"
    )
    paths = [escape(path) for path in sweep["search"]]  # structure[1] is not markup
    table = Table("trial", "status", "objective", "epoch", "stopped", *paths, title=title)
    for row in sweep.get("leaderboard", []):
        values = [_param(row["params"].get(path)) for path in sweep["search"]]
        table.add_row(str(row["trial"]), row["status"], _number(row["objective"]),
                      f"{row['progress']['epoch']}/{row['progress']['epochs']}",
                      "yes" if row["stopped_early"] else "", *values)  # fmt: skip
    return table


def _configurations_table(sweep: dict) -> Table:
    """A replicated sweep's configurations: best mean first, with the spread of the seeds."""
    paths = [escape(path) for path in sweep["search"]]
    title = f"configurations ({sweep['replicates']} seeds each), best mean first"
    table = Table("configuration", "mean", "std", "seeds", *paths, title=title)
    for row in sweep["configurations"]:
        values = [_param(row["params"].get(path)) for path in sweep["search"]]
        table.add_row(str(row["configuration"]), _number(row["mean"]), _number(row["std"]),
                      f"{row['finished']}/{len(row['job_ids'])}", *values)  # fmt: skip
    return table


def _param(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else escape(str(value))
