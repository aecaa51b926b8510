"""The dashboard's forms read as the JSON a client would send: the submit form as the job it
would POST to /v1/jobs, the continue forms as the bodies of a job's and a sweep's continue.
The reason to change is a field of a form."""

from __future__ import annotations

import io

import numpy as np

from api.field_errors import SpecError

MAX_CSV_ROWS = 10_000


def job_from_form(form) -> dict:
    """The JSON job the form describes: what a client would POST to /v1/jobs."""
    job: dict = {
        "structure": _numbers(form.get("structure", ""), int),
        "epochs": _number(form.get("epochs", ""), int),
        "learning_rate": _number(form.get("learning_rate", ""), float),
        "options": {"verify_gradients": form.get("verify_gradients") == "on"},
    }
    if form.get("name", "").strip():
        job["name"] = form["name"].strip()
    if form.get("seed", "").strip():
        job["seed"] = _number(form["seed"], int)
    if form.get("validation_split", "").strip():
        job["options"]["validation_split"] = _number(form["validation_split"], float)
    optimizer = form.get("optimizer", "sgd")
    if optimizer == "nesterov":
        job["options"]["optimizer"] = {"name": "momentum", "nesterov": True}
    elif optimizer != "sgd":
        job["options"]["optimizer"] = {"name": optimizer}
    if form.get("schedule", "constant") != "constant":
        job["options"]["schedule"] = {"name": form["schedule"]}
    if form.get("clip_norm", "").strip():
        job["options"]["clip_norm"] = _number(form["clip_norm"], float)
    data: dict = {"batch_size": _number(form.get("batch_size", "") or "10", int)}
    if form.get("source") == "dataset":
        data["dataset_id"] = form.get("dataset_id", "")
    else:
        data.update(_csv_data(form.get("csv", ""), job["structure"]))
    job["data"] = data
    return job


def _number(text: str, kind):
    """A form's text as the number JSON would carry; left as text when it is none, for
    pydantic to name the field and what it expected."""
    try:
        return kind(text.strip())
    except ValueError:
        return text


def _numbers(text: str, kind) -> list | str:
    try:
        return [kind(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        return text


def _csv_data(text: str, structure) -> dict:
    """Inline rows of a CSV: the first structure[0] columns are inputs, the rest targets."""
    if not text.strip():
        raise SpecError([_csv_error("paste rows of numbers, or choose a stored data set")])
    try:
        rows = np.loadtxt(io.StringIO(text), delimiter=",", ndmin=2, max_rows=MAX_CSV_ROWS + 1)
    except ValueError as exc:
        raise SpecError([_csv_error(f"not a CSV of numbers: {exc}")]) from None
    if len(rows) > MAX_CSV_ROWS:
        raise SpecError([_csv_error(f"at most {MAX_CSV_ROWS} rows here; upload a data set")])
    if not isinstance(structure, list) or len(structure) < 2:
        return {"inputs": rows.tolist(), "targets": []}  # the structure's error says why
    width = structure[0] + structure[-1]
    if rows.shape[1] != width:
        message = (
            f"expected {width} columns per row (structure[0] = {structure[0]} inputs, then "
            f"structure[-1] = {structure[-1]} targets), got {rows.shape[1]}"
        )
        raise SpecError([_csv_error(message)])
    return {"inputs": rows[:, : structure[0]].tolist(), "targets": rows[:, structure[0] :].tolist()}


def _csv_error(message: str) -> dict:
    return {"field": "csv", "loc": ["csv"], "msg": message, "type": "value_error"}


def continuation_from_form(form) -> dict:
    """A job's continue form as the JSON a client would POST to /v1/jobs/{id}/continue."""
    body = {"epochs": _number(form.get("epochs", ""), int)}
    if form.get("max_runtime_seconds", "").strip():
        body["max_runtime_seconds"] = _number(form["max_runtime_seconds"], int)
    return body


def sweep_continuation_from_form(form) -> dict:
    """A sweep's continue form as the JSON a client would POST to /v1/sweeps/{id}/continue:
    extending the best 0 trials is no extension."""
    body = {
        "add_trials": _number(form.get("add_trials", "") or "0", int),
        "rerun_failed": form.get("rerun_failed") == "on",
    }
    top = _number(form.get("extend_top", "") or "0", int)
    if top != 0:
        body["extend"] = {"top": top, "epochs": _number(form.get("extend_epochs", ""), int)}
    return body
