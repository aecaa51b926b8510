"""``backprop datasets``: upload, list and remove data sets.

    backprop datasets upload digits.npz | datasets list | datasets rm ID

A .csv file's targets are some of its columns (--targets) or a class column (--label).
The reason to change is a data set command or one of its options.
"""

from __future__ import annotations

import click
from rich.table import Table

from .connection import connection, show


def csv_options(command):
    """How a CSV data file is read: --targets columns, or a --label column."""
    command = click.option("--label", help="CSV: a class column (one-hot targets).")(command)
    return click.option(
        "--targets", "target_columns", help="CSV: the target columns, comma-separated."
    )(command)


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
    show(stored, as_json, _dataset_table([stored]))


@datasets_group.command("list")
@connection
def datasets_list(client, as_json):
    """The tenant's data sets."""
    rows = list(client.datasets())
    show(rows, as_json, _dataset_table(rows))


@datasets_group.command("rm")
@click.argument("dataset_id")
@connection
def datasets_rm(client, as_json, dataset_id):
    """Delete a data set (refused while a queued or running job uses it)."""
    client.delete_dataset(dataset_id)
    if as_json:
        show({"deleted": dataset_id}, True)
    else:
        click.echo(f"deleted {dataset_id}")


def _dataset_table(rows: list[dict]) -> Table:
    table = Table("id", "name", "samples", "inputs", "targets", "bytes")
    for d in rows:
        inputs, targets = d["inputs"], d["targets"]
        table.add_row(d["id"], d.get("name") or "", str(d["samples"]),
                      f"{inputs['shape']} {inputs['dtype']}",
                      f"{targets['shape']} {targets['dtype']}", f"{d['bytes']:,}")  # fmt: skip
    return table
