"""The user's side of ``backprop``: submit, follow and read jobs, and manage data sets.

    backprop submit job.json --wait
    backprop submit --data digits.npz --structure 784,30,10 --epochs 30 --rate 3.0 --wait
    backprop status JOB | list | watch JOB | metrics JOB | model JOB -o model.npz
    backprop predict JOB --inputs x.npy | cancel JOB
    backprop datasets upload digits.npz | datasets list | datasets rm ID
    backprop sweep submit sweep.json --watch | sweep status ID | sweep watch ID | sweep cancel ID

The service is ``--url`` (``BACKPROP_URL``, default http://127.0.0.1:8000) and the token
``--token`` (``BACKPROP_TOKEN``; under ``make run``, its dev token in VAR_DIR/dev-token).
Tables are for people, ``--json`` for scripts (``sweep watch --jsonl``: every state of a
sweep as a line of JSON while it runs). A user's error (a 4xx, an unreachable
service, a failed job) prints one message and exits non-zero, never a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path

import click
import httpx
import numpy as np
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .client import ApiError, Client, JobFailed
from .settings import get_settings

console = Console()
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
METRIC_COLUMNS = ("epoch", "cost", "accuracy", "val_cost", "val_accuracy", "seconds")


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


def _print(data, as_json: bool, table=None) -> None:
    if as_json or table is None:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        console.print(table)


# ------------------------------------------------------------------------------ watching


def follow(client: Client, job: dict) -> dict:
    """A live progress bar until the job ends: epoch of epochs, cost, accuracy, validation
    accuracy, samples/s and the time left. Raises JobFailed unless it succeeded."""
    samples = job["data"]["samples"]
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("epoch {task.completed:.0f}/{task.total:.0f}"),
        TextColumn("{task.fields[scores]}"),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    seen = {"epoch": job["progress"]["epoch"], "at": time.monotonic()}
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(job.get("name") or job["id"][:8], total=job["progress"]["epochs"],
                            completed=seen["epoch"], scores="", rate="")  # fmt: skip

        def update(state: dict) -> None:
            epoch, now = state["progress"]["epoch"], time.monotonic()
            rate = ""
            if epoch > seen["epoch"] and now > seen["at"]:
                rate = f"{(epoch - seen['epoch']) * samples / (now - seen['at']):,.0f} samples/s"
                seen.update(epoch=epoch, at=now)
            bar.update(task, completed=epoch, scores=_scores(state.get("metrics")),
                       **({"rate": rate} if rate else {}))  # fmt: skip

        done = client.wait(job["id"], on_update=update, raise_on_failure=False)
    if done["status"] != "succeeded":
        raise JobFailed(done)
    return done


def _scores(metrics: dict | None) -> str:
    if not metrics:
        return ""
    parts = [f"cost {metrics['cost']:.4g}"]
    if metrics.get("accuracy") is not None:
        parts.append(f"acc {metrics['accuracy']:.3f}")
    if metrics.get("val_accuracy") is not None:
        parts.append(f"val acc {metrics['val_accuracy']:.3f}")
    return "  ".join(parts)


# ------------------------------------------------------------------------------ commands


def csv_options(command):
    """How a CSV data file is read: --targets columns, or a --label column."""
    command = click.option("--label", help="CSV: a class column (one-hot targets).")(command)
    return click.option(
        "--targets", "target_columns", help="CSV: the target columns, comma-separated."
    )(command)


def _structure(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise click.BadParameter("expected layer sizes like 784,30,10") from None


@click.command("submit")
@click.argument("job_file", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--data",
    "data_file",
    type=click.Path(exists=True, dir_okay=False),
    help="A .npz (inputs, targets) or .csv file: uploaded once as a data set.",
)
@click.option("--dataset", "dataset_id", help="A stored data set's id.")
@click.option("--structure", help="Layer sizes, e.g. 784,30,10.")
@click.option("--epochs", type=click.IntRange(min=1))
@click.option("--rate", "learning_rate", type=float, help="The learning rate.")
@click.option("--batch-size", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1))
@click.option("--dtype", type=click.Choice(["float64", "float32"]))
@click.option("--validation-split", type=float)
@csv_options
@click.option("--name")
@click.option("--wait", is_flag=True, help="Follow the job with a progress bar until it ends.")
@connection
def submit_command(client, as_json, job_file, data_file, dataset_id, structure, epochs,
                   learning_rate, batch_size, seed, dtype, validation_split, target_columns,
                   label, name, wait):  # fmt: skip
    """Submit a job from a JSON job file, or from flags and a data file."""
    spec = json.loads(Path(job_file).read_text()) if job_file else {}
    if structure:
        spec["structure"] = _structure(structure)
    for key, value in (("epochs", epochs), ("learning_rate", learning_rate), ("seed", seed),
                       ("name", name)):  # fmt: skip
        if value is not None:
            spec[key] = value
    options = spec.setdefault("options", {})
    if dtype:
        options["dtype"] = dtype
    if validation_split is not None:
        options["validation_split"] = validation_split
    if data_file:
        columns = target_columns.split(",") if target_columns else None
        stored = client.upload(data_file, target_columns=columns, label=label)
        dataset_id = stored["id"]
    if dataset_id:
        spec["data"] = {"dataset_id": dataset_id, "batch_size": batch_size}
    missing = [k for k in ("structure", "epochs", "learning_rate", "data") if k not in spec]
    if missing:
        raise click.UsageError(f"the job needs {', '.join(missing)} (flags or a job file)")
    job = client.submit(spec)
    if not wait:
        _print(job, as_json, _job_table([job]))
        return
    if not as_json:
        console.print(f"job {job['id']} queued")
    done = follow(client, job) if not as_json else client.wait(job["id"])
    _print(done, as_json, _job_table([done]))


@click.command("status")
@click.argument("job_id")
@connection
def status_command(client, as_json, job_id):
    """A job's status, progress and latest metrics."""
    job = client.get(job_id)
    _print(job, as_json, _job_table([job]))


@click.command("list")
@click.option("--status", type=click.Choice(STATUSES))
@click.option("--label", help="key:value")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@connection
def list_command(client, as_json, status, label, limit):
    """The tenant's jobs, newest first."""
    jobs = []
    for job in client.list(status=status, label=label):
        jobs.append(job)
        if len(jobs) >= limit:
            break
    _print(jobs, as_json, _job_table(jobs))


@click.command("watch")
@click.argument("job_id")
@connection
def watch_command(client, as_json, job_id):
    """Follow a job with a live progress bar; exit 0 when it succeeded, 1 otherwise."""
    job = client.get(job_id)
    done = client.wait(job_id) if as_json else follow(client, job)
    _print(done, as_json, _job_table([done]))


@click.command("metrics")
@click.argument("job_id")
@connection
def metrics_command(client, as_json, job_id):
    """One row per finished epoch."""
    rows = client.metrics(job_id)
    table = Table("epoch", "cost", "accuracy", "val cost", "val accuracy", "seconds")
    for r in rows:
        table.add_row(*("" if r[k] is None else f"{r[k]:.6g}" for k in METRIC_COLUMNS))
    _print(rows, as_json, table)


@click.command("model")
@click.argument("job_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="Where to write the .npz.")  # fmt: skip
@connection
def model_command(client, as_json, job_id, output):
    """Download the trained model as a .npz (numpy.load reads it)."""
    arrays = client.model(job_id)
    np.savez(output, **arrays)
    if as_json:
        _print({"job_id": job_id, "path": output, "members": sorted(arrays)}, True)
    else:
        click.echo(f"wrote {output} ({', '.join(sorted(arrays))})")


@click.command("predict")
@click.argument("job_id")
@click.option("--inputs", "inputs_file", required=True,
              type=click.Path(exists=True, dir_okay=False),
              help="A .npy, .npz (inputs) or .csv of input rows.")  # fmt: skip
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write outputs as .npy.")
@connection
def predict_command(client, as_json, job_id, inputs_file, output):
    """The trained network's outputs for some input rows."""
    path = Path(inputs_file)
    if path.suffix == ".npy":
        inputs = np.load(path, allow_pickle=False)
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            inputs = npz["inputs"]
    else:
        inputs = np.loadtxt(path, delimiter=",", ndmin=2)
    outputs = client.predict(job_id, inputs)
    if output:
        np.save(output, outputs)
        click.echo(f"wrote {output} {outputs.shape}")
    else:
        _print(outputs.tolist(), True)


@click.command("cancel")
@click.argument("job_id")
@connection
def cancel_command(client, as_json, job_id):
    """Cancel a job: a queued one at once, a running one at its next mini-batch."""
    job = client.cancel(job_id)
    _print(job, as_json, _job_table([job]))


@click.group("datasets")
def datasets_group():
    """Upload, list and remove data sets."""


@datasets_group.command("upload")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--name")
@csv_options
@connection
def datasets_upload(client, as_json, path, name, target_columns, label):
    """Store a .npz (inputs, targets) or .csv file as a data set (streamed)."""
    columns = target_columns.split(",") if target_columns else None
    stored = client.upload(path, name=name, target_columns=columns, label=label)
    _print(stored, as_json, _dataset_table([stored]))


@datasets_group.command("list")
@connection
def datasets_list(client, as_json):
    """The tenant's data sets."""
    rows = list(client.datasets())
    _print(rows, as_json, _dataset_table(rows))


@datasets_group.command("rm")
@click.argument("dataset_id")
@connection
def datasets_rm(client, as_json, dataset_id):
    """Delete a data set (refused while a queued or running job uses it)."""
    client.delete_dataset(dataset_id)
    if as_json:
        _print({"deleted": dataset_id}, True)
    else:
        click.echo(f"deleted {dataset_id}")


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
    _print(sweep, as_json, _sweep_table(sweep))


@sweep_group.command("status")
@click.argument("sweep_id")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@connection
def sweep_status(client, as_json, sweep_id, limit):
    """The sweep's status, counts and leaderboard."""
    sweep = client.sweep(sweep_id, limit=limit)
    _print(sweep, as_json, _sweep_table(sweep))


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
        _print(sweep, as_json, _sweep_table(sweep))
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
    _print(rows, as_json, table)


@sweep_group.command("cancel")
@click.argument("sweep_id")
@connection
def sweep_cancel(client, as_json, sweep_id):
    """Cancel the sweep's queued and running trials; finished ones stay."""
    sweep = client.cancel_sweep(sweep_id)
    _print(sweep, as_json, _sweep_table(sweep))


@sweep_group.command("delete")
@click.argument("sweep_id")
@connection
def sweep_delete(client, as_json, sweep_id):
    """Delete an ended sweep with its trials, their metrics and models."""
    client.delete_sweep(sweep_id)
    if as_json:
        _print({"deleted": sweep_id}, True)
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
        f"{counts['running']} running; {sweep['objective']['metric']} "
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


def _param(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else escape(str(value))


def _job_table(jobs: list[dict]) -> Table:
    table = Table("id", "name", "status", "epoch", "cost", "accuracy", "created")
    for j in jobs:
        m = j.get("metrics") or {}
        table.add_row(
            j["id"], j.get("name") or "", j["status"],
            f"{j['progress']['epoch']}/{j['progress']['epochs']}",
            "" if m.get("cost") is None else f"{m['cost']:.4g}",
            "" if m.get("accuracy") is None else f"{m['accuracy']:.3f}",
            str(j["created_at"])[:19],
        )  # fmt: skip
    return table


def _dataset_table(rows: list[dict]) -> Table:
    table = Table("id", "name", "samples", "inputs", "targets", "bytes")
    for d in rows:
        inputs, targets = d["inputs"], d["targets"]
        table.add_row(d["id"], d.get("name") or "", str(d["samples"]),
                      f"{inputs['shape']} {inputs['dtype']}",
                      f"{targets['shape']} {targets['dtype']}", f"{d['bytes']:,}")  # fmt: skip
    return table


COMMANDS = [submit_command, status_command, list_command, watch_command, metrics_command,
            model_command, predict_command, cancel_command, datasets_group,
            sweep_group]  # fmt: skip
