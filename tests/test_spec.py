"""The typed job spec reads and writes exactly the JSON stored in a job's row: every form a
submit makes, trial specs, and rows stored before some keys existed or after others were
added; and the layout it derives holds out the rows ``core.validation_rows`` holds out."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from sqlalchemy import text

from api.schemas.jobs import JobCreate
from api.validation import prepare_job
from backprop.settings import Settings
from backprop.spec import DataLayout, EarlyStop, JobSpec, TrainingOptions
from core import validation_rows
from store import jobs
from store.db import get_database
from store.models import Job
from tuning import sampling


def stored_set(samples: int, class_counts=None, sha: str = "ab") -> SimpleNamespace:
    """A data set's metadata as ``store.datasets`` keeps it (2 input columns)."""
    targets = {"shape": [samples, 2], "dtype": "<f8", "min": 0.0, "max": 1.0}
    if class_counts is not None:
        targets |= {"one_hot": True, "rows_sum_to_one": True, "class_counts": class_counts}
    inputs = {"shape": [samples, 2], "dtype": "<f8", "min": 0.0, "max": 1.0}
    return SimpleNamespace(
        id=str(uuid.uuid4()),
        sha256=sha * 32,
        samples=samples,
        members={"inputs": inputs, "targets": targets},
    )


TRAIN, VALIDATE = stored_set(90, [40, 50]), stored_set(37, sha="cd")
STORED = {TRAIN.id: TRAIN, VALIDATE.id: VALIDATE}
X = [[0, 0], [0, 1], [1, 0], [1, 1], [0.5, 0.5]]
Y = [[0, 1], [1, 0], [1, 0], [0, 1], [1, 0]]
BATCHES = [[[[0, 0], [0, 1]], [[0, 1], [1, 0]]], [[[1, 0], [1, 0]]]]
REQUESTS = {
    "batches": {"data": {"batches": BATCHES}},
    "batches, inline validation": {
        "data": {"batches": BATCHES},
        "options": {"validation": {"inputs": X, "targets": Y}},
    },
    "batches, validation data set": {
        "data": {"batches": BATCHES},
        "options": {"validation": {"dataset_id": VALIDATE.id}},
    },
    "arrays": {"data": {"inputs": X, "targets": Y, "batch_size": 2}},
    "arrays, split": {
        "data": {"inputs": X, "targets": Y, "batch_size": 2, "shuffle": False},
        "options": {"validation_split": 0.4, "early_stopping": {"patience": 2}},
    },
    "arrays, every option": {
        "data": {"inputs": X, "targets": Y},
        "options": {
            "validation": {"inputs": X, "targets": Y},
            "activation": "tanh",
            "output_activation": "softmax",
            "cost": "cross_entropy",
            "init": "scaled",
            "l2": 0.1,
            "dtype": "float32",
            "max_runtime_seconds": 60,
            "verify_gradients": True,
        },
    },
    "dataset": {"data": {"dataset_id": TRAIN.id, "batch_size": 7}},
    "dataset, split": {
        "data": {"dataset_id": TRAIN.id, "batch_size": 7},
        "options": {"validation_split": 0.25},
    },
    "dataset, validation data set": {
        "data": {"dataset_id": TRAIN.id},
        "options": {"validation": {"dataset_id": VALIDATE.id}},
    },
}


def prepared(form: str, **request):
    body = {"structure": [2, 3, 2], "epochs": 2, "learning_rate": 1.0, "seed": 3}
    return prepare_job(
        JobCreate.model_validate(body | REQUESTS[form] | request), Settings(), STORED.get
    )


def round_trips(stored: dict) -> JobSpec:
    """The spec read from ``stored`` writes it back unchanged, keys in the same order."""
    spec = JobSpec.from_json(json.loads(json.dumps(stored)))
    assert json.dumps(spec.to_json()) == json.dumps(stored)
    assert JobSpec.from_json(spec.to_json()) == spec
    return spec


def test_a_prepared_spec_is_the_json_stored_for_it():
    assert prepared("batches").spec.to_json() == {
        "structure": [2, 3, 2],
        "epochs": 2,
        "learning_rate": 1.0,
        "seed": 3,
        "options": {
            "activation": "sigmoid",
            "output_activation": "sigmoid",
            "cost": "quadratic",
            "init": "normal",
            "l2": 0.0,
            "dtype": "float64",
            "early_stopping": None,
            "validation_split": None,
            "max_runtime_seconds": Settings().max_runtime_seconds,
            "verify_gradients": False,
        },
        "data": {
            "form": "batches",
            "batch_size": None,
            "shuffle": False,
            "batches": 2,
            "samples": 3,
            "validation_samples": 0,
        },
    }
    spec = prepared("dataset, validation data set").spec.to_json()
    assert spec["validation"] == {"dataset_id": VALIDATE.id, "dataset_sha256": VALIDATE.sha256}
    assert spec["data"] == {
        "form": "dataset",
        "dataset_id": TRAIN.id,
        "dataset_sha256": TRAIN.sha256,
        "batch_size": 10,
        "shuffle": True,
        "batches": 9,
        "samples": 90,
        "validation_samples": 37,
    }
    assert list(spec) == ["structure", "epochs", "learning_rate", "seed", "options"] + [
        "validation",
        "data",
    ]


@pytest.mark.parametrize("form", REQUESTS)
def test_every_form_a_submit_makes_round_trips(form):
    spec = prepared(form).spec
    round_trips(spec.to_json())
    hook, source = "https://example.com/hook", str(uuid.uuid4())
    both = replace(spec, callback_url=hook, init_from=source)
    assert round_trips(both.to_json()) == both
    assert list(both.to_json())[-2:] == ["callback_url", "init_from"]


def test_the_layouts_count_the_rows_a_submit_keeps():
    assert prepared("batches, inline validation").spec.data.validation_samples == 5
    assert prepared("batches, validation data set").spec.data.validation_samples == 37
    split = prepared("arrays, split")
    assert split.spec.data.samples == len(split.arrays["inputs"]) == 3
    assert split.spec.data.batches == 2 and split.spec.data.validation_samples == 2
    stratified = prepared("dataset, split").spec.data
    assert (stratified.samples, stratified.validation_samples) == (68, 22)  # 10 + 12 held
    assert stratified.batches == 10 and stratified.dataset_sha256 == TRAIN.sha256


def test_a_data_sets_split_holds_out_the_rows_validation_rows_holds_out():
    rng = np.random.default_rng(0)
    for class_counts in ([40, 50], [3, 1, 96], [2, 2]):
        targets = np.repeat(np.eye(len(class_counts)), class_counts, axis=0)
        rng.shuffle(targets)
        for split in (0.1, 0.25, 0.5):
            layout = DataLayout.for_dataset(
                "d", "s", len(targets), batch_size=8, shuffle=True, split=split,
                class_counts=class_counts,
            )  # fmt: skip
            held = validation_rows(targets, split, seed=5)
            assert layout.validation_samples == held.sum()
            assert layout.samples == (~held).sum()
            assert layout.batches == -(-layout.samples // 8)


# rows as tests and older versions stored them: options written before validation_split and
# verify_gradients existed, a data set layout before its digest was kept
OLDER = {
    "structure": [3, 6, 2],
    "epochs": 60,
    "learning_rate": 2.0,
    "seed": 11,
    "options": {
        "activation": "sigmoid",
        "output_activation": "sigmoid",
        "cost": "quadratic",
        "init": "normal",
        "l2": 0.0,
        "dtype": "float64",
        "early_stopping": None,
        "max_runtime_seconds": 60,
    },
    "data": {
        "form": "dataset",
        "dataset_id": "6f1c3c4e-8f1e-4d8e-9a56-0d2b4f4f9a10",
        "batch_size": 5,
        "shuffle": True,
        "batches": 60,
        "samples": 300,
        "validation_samples": 100,
    },
}


def test_keys_a_row_lacks_stay_absent_and_read_as_their_defaults():
    spec = round_trips(OLDER)
    assert spec.options.validation_split is None and spec.options.verify_gradients is False
    assert spec.data.dataset_sha256 is None and spec.validation is None
    assert TrainingOptions.from_json({}).to_json() == {}
    assert TrainingOptions.from_json({}) == TrainingOptions.from_json({}) != TrainingOptions()
    assert TrainingOptions.from_json({}).dtype == "float64"


def test_keys_this_version_does_not_know_are_kept():
    options = OLDER["options"] | {
        "averaging": "swa",
        "warm_restarts": {"kind": "step", "every": 10, "factor": 0.5},
        "early_stopping": {"patience": 3, "min_delta": 0.01},
    }
    spec = round_trips(OLDER | {"options": options, "note": [1, 2]})
    assert spec.options.extra == {
        "averaging": "swa",
        "warm_restarts": {"kind": "step", "every": 10, "factor": 0.5},
    }
    assert spec.options.early_stopping == EarlyStop(patience=3, min_delta=0.01)
    written = spec.to_json()
    written["options"]["warm_restarts"]["every"] = 99  # a copy: the spec is unchanged
    assert spec.options.extra["warm_restarts"]["every"] == 10


def test_a_trials_spec_round_trips():
    base = prepared("dataset, split").spec
    sweep = {
        "base": replace(base, callback_url="https://example.com/hook").to_json(),
        "base_seed": None,
        "search": {
            "options.validation_split": {"uniform": [0.1, 0.3]},
            "options.early_stopping.patience": {"int_uniform": [1, 4]},
            "data.batch_size": {"choice": [1, 32]},
        },
        "method": "random",
        "seed": 5,
        "objective": {"metric": "val_cost", "goal": "min"},
        "early_stopping": {"min_epochs": 1, "reduction_factor": 3},
        "dataset": {"samples": 90, "class_counts": [40, 50], "sha256": TRAIN.sha256},
    }
    for number in range(1, 6):
        trial = sampling.next_trial(sweep, number, sweep_id="s-1", trials=5, past=[])
        stored = trial.spec.to_json()
        assert round_trips(stored) == trial.spec
        assert stored["sweep"] == {
            "id": "s-1",
            "trial": number,
            "objective": sweep["objective"],
            "early_stopping": sweep["early_stopping"],
        }
        assert stored["options"]["early_stopping"] == {
            "patience": trial.params["options.early_stopping.patience"],
            "min_delta": 0.0,
        }
        assert stored["callback_url"] == "https://example.com/hook"


def test_the_job_row_stores_the_json_and_reads_back_the_spec(database_url):
    db = get_database(database_url)
    job_spec = replace(prepared("arrays, split").spec, callback_url="https://example.com/h")
    with db.session() as s:
        job_id = jobs.create_job(
            s, db, tenant=f"spec-{uuid.uuid4().hex[:6]}", spec=job_spec, name=None, labels={},
            arrays={"inputs": np.zeros((3, 2)), "targets": np.ones((3, 2))}, chunk_bytes=1024,
        ).id  # fmt: skip
    with db.session() as s:
        raw = s.execute(text("SELECT spec FROM job WHERE id = :id"), {"id": job_id}).scalar()
        job = s.get(Job, job_id)
        assert job.spec == job_spec and job.callback_state == "waiting"
    assert (json.loads(raw) if isinstance(raw, str) else raw) == job_spec.to_json()
