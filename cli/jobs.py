"""The user's commands for jobs: submit, follow and read them.

    backprop submit job.json --wait
    backprop submit --data digits.npz --structure 784,30,10 --epochs 30 --rate 3.0 --wait
    backprop status JOB | list | watch JOB | metrics JOB | model JOB -o model.npz
    backprop predict JOB --inputs x.npy | cancel JOB

Each reaches the service and answers as ``connection`` says. The reason to change is a job
command or one of its options.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from backprop.client import Client, JobFailed

from .connection import connection, console, show
from .datasets import csv_options

STATUSES = ("queued", "running", "paused", "succeeded", "failed", "cancelled")
METRIC_COLUMNS = ("epoch", "cost", "accuracy", "val_cost", "val_accuracy", "seconds")


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


def _structure(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise click.BadParameter("expected layer sizes like 784,30,10") from None


def _named(text: str | None) -> dict | None:
    """``adam`` or ``adam:beta1=0.8,beta2=0.99`` as ``{"name": "adam", "beta1": 0.8, ...}``:
    values are read as JSON (numbers, true, false), else kept as text."""
    if not text:
        return None
    name, _, rest = text.partition(":")
    named: dict = {"name": name.strip()}
    for pair in filter(None, (part.strip() for part in rest.split(","))):
        key, equals, value = pair.partition("=")
        if not equals or not key.strip():
            raise click.BadParameter(f"expected key=value, got {pair!r}")
        try:
            named[key.strip()] = json.loads(value)
        except ValueError:
            named[key.strip()] = value.strip()
    return named


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
@click.option(
    "--optimizer",
    help="sgd, momentum, adam or adamw, with parameters: adam:beta1=0.9,beta2=0.999",
)
@click.option(
    "--schedule",
    help="The learning rate's schedule: constant, step, exponential, cosine, invscaling or "
    "plateau, with parameters: cosine:warmup=2,per=step",
)
@click.option("--clip-norm", type=float, help="Clip each step's gradient to this global norm.")
@csv_options
@click.option("--name")
@click.option("--wait", is_flag=True, help="Follow the job with a progress bar until it ends.")
@connection
def submit_command(client, as_json, job_file, data_file, dataset_id, structure, epochs,
                   learning_rate, batch_size, seed, dtype, validation_split, optimizer,
                   schedule, clip_norm, target_columns, label, name, wait):  # fmt: skip
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
    for key, value in (("optimizer", _named(optimizer)), ("schedule", _named(schedule)),
                       ("clip_norm", clip_norm)):  # fmt: skip
        if value is not None:
            options[key] = value
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
        show(job, as_json, _job_table([job]))
        return
    if not as_json:
        console.print(f"job {job['id']} queued")
    done = follow(client, job) if not as_json else client.wait(job["id"])
    show(done, as_json, _job_table([done]))


@click.command("status")
@click.argument("job_id")
@connection
def status_command(client, as_json, job_id):
    """A job's status, progress and latest metrics."""
    job = client.get(job_id)
    show(job, as_json, _job_table([job]))


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
    show(jobs, as_json, _job_table(jobs))


@click.command("watch")
@click.argument("job_id")
@connection
def watch_command(client, as_json, job_id):
    """Follow a job with a live progress bar; exit 0 when it succeeded, 1 otherwise."""
    job = client.get(job_id)
    done = client.wait(job_id) if as_json else follow(client, job)
    show(done, as_json, _job_table([done]))


@click.command("metrics")
@click.argument("job_id")
@connection
def metrics_command(client, as_json, job_id):
    """One row per finished epoch."""
    rows = client.metrics(job_id)
    table = Table("epoch", "cost", "accuracy", "val cost", "val accuracy", "seconds")
    for r in rows:
        table.add_row(*("" if r[k] is None else f"{r[k]:.6g}" for k in METRIC_COLUMNS))
    show(rows, as_json, table)


@click.command("diff")
@click.argument("job_id")
@click.argument("other_id")
@connection
def diff_command(client, as_json, job_id, other_id):
    """What differs between two jobs, and the first epoch where their metrics part."""
    found = client.diff(job_id, other_id)
    table = Table("field", job_id[:8], other_id[:8])
    for row in found["spec"]:
        table.add_row(row["field"], json.dumps(row["this"]), json.dumps(row["other"]))
    epoch = found["first_divergent_epoch"]
    parted = f"metrics first differ at epoch {epoch}" if epoch else "metrics never differ"
    weights = {True: "same weights", False: "different weights", None: "weights not compared"}
    summary = (
        f"{found['epochs_compared']} epochs compared: {parted}; {weights[found['weights_equal']]}"
    )
    if found.get("state_epoch") is not None:
        same = "the same" if found["states_equal"] else "different"
        summary += f"; {same} weights in both states after epoch {found['state_epoch']}"
    if as_json:
        show(found, True)
    else:
        console.print(table)
        console.print(summary)


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
        show({"job_id": job_id, "path": output, "members": sorted(arrays)}, True)
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
        show(outputs.tolist(), True)


@click.command("continue")
@click.argument("job_id")
@click.option("--epochs", type=click.IntRange(min=1), required=True, help="How many more.")
@click.option("--max-runtime", type=click.IntRange(min=1), default=None,
              help="The new job's time limit in seconds.")  # fmt: skip
@connection
def continue_command(client, as_json, job_id, epochs, max_runtime):
    """Train an ended job further from its final state, as a new job: bitwise one job
    trained for all the epochs from the start."""
    job = client.continue_job(job_id, epochs, max_runtime_seconds=max_runtime)
    show(job, as_json, _job_table([job]))


@click.command("cancel")
@click.argument("job_id")
@connection
def cancel_command(client, as_json, job_id):
    """Cancel a job: a queued one at once, a running one at its next mini-batch."""
    job = client.cancel(job_id)
    show(job, as_json, _job_table([job]))


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


JOB_COMMANDS = [submit_command, status_command, list_command, watch_command, metrics_command,
                diff_command, model_command, predict_command, continue_command,
                cancel_command]  # fmt: skip
