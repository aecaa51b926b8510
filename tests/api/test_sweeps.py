"""A trial's stored spec, made in the worker from the base's spec and the trial's values, is
exactly what preparing the trial's request from scratch gives (``api.validation``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from api.schemas.jobs import JobCreate
from api.validation import prepare_job
from backprop.settings import Settings
from tuning import asha, sampling, space

DATASET = SimpleNamespace(
    id="6f1c3c4e-8f1e-4d8e-9a56-0d2b4f4f9a10",
    sha256="ab" * 32,
    samples=1797,
    members={
        "inputs": {"shape": [1797, 64], "dtype": "<f8", "min": 0.0, "max": 1.0},
        "targets": {
            "shape": [1797, 10],
            "dtype": "<f8",
            "min": 0.0,
            "max": 1.0,
            "rows_sum_to_one": True,
            "one_hot": True,
            "class_counts": [178, 182, 177, 183, 181, 182, 181, 179, 174, 180],
        },
    },
)
SPACE = {
    "learning_rate": {"log_uniform": [0.05, 10]},
    "epochs": {"int_uniform": [2, 40]},
    "structure[1]": {"choice": [16, 32, 64, 128]},
    "options.l2": {"uniform": [0, 0.001]},
    "options.validation_split": {"uniform": [0.1, 0.3]},
    "options.early_stopping.patience": {"int_log_uniform": [1, 8]},
    "options.activation": {"choice": ["sigmoid", "tanh"]},
    "data.batch_size": {"choice": [1, 10, 32, 1000]},
    "data.shuffle": {"choice": [True, False]},
}
BASE = {
    "structure": [64, 30, 10],
    "epochs": 30,
    "learning_rate": 3.0,
    "data": {"dataset_id": DATASET.id, "batch_size": 10},
    "options": {"validation_split": 0.2},
}


@pytest.mark.parametrize("seed_given", [True, False])
def test_trial_specs_equal_a_fresh_prepare(seed_given):
    settings = Settings()
    base = dict(BASE, seed=99) if seed_given else dict(BASE)
    prepared = prepare_job(JobCreate.model_validate(base), settings, lambda _: DATASET)
    info = {"samples": DATASET.samples, "class_counts": DATASET.members["targets"]["class_counts"]}
    for trial in range(1, 41):
        params = sampling.sample("random", SPACE, trial, 7)
        seed = 99 if seed_given else sampling.derived_seed(7, trial)
        made = sampling.trial_spec(prepared.spec, params, seed=seed, dataset=info)
        fresh = prepare_job(
            JobCreate.model_validate(dict(space.apply(base, params), seed=seed)),
            settings,
            lambda _: DATASET,
        )
        assert made == fresh.spec, params
        assert made.epochs == params["epochs"] and made.seed == seed


def test_the_space_of_the_issue_has_valid_corners_and_reproducible_draws():
    search = {k: SPACE[k] for k in ("learning_rate", "structure[1]", "options.l2")}
    assert space.corner_count(search) == 2 * 4 * 2
    assert len(list(space.corners(search))) == 16
    draws = [sampling.sample("random", search, k, 7) for k in range(1, 28)]
    assert draws == [sampling.sample("random", search, k, 7) for k in range(1, 28)]
    assert draws != [sampling.sample("random", search, k, 8) for k in range(1, 28)]
    for draw in draws:
        assert 0.05 <= draw["learning_rate"] <= 10 and draw["structure[1]"] in (16, 32, 64, 128)
    assert asha.rungs(3, 3, 30) == [3, 9, 27] and asha.rungs(1, 2, 8) == [1, 2, 4]


SMALLER = SimpleNamespace(
    id="0b7e2a4c-3f1d-4c2e-8a11-9e5d6c7b8a90",
    sha256="cd" * 32,
    samples=500,
    members={
        "inputs": DATASET.members["inputs"] | {"shape": [500, 64]},
        "targets": DATASET.members["targets"] | {"shape": [500, 10], "class_counts": [50] * 10},
    },
)


def test_a_trial_on_a_searched_data_set_equals_a_fresh_prepare_on_that_data_set():
    settings = Settings()
    stored = {d.id: d for d in (DATASET, SMALLER)}
    search = {
        "data.dataset_id": {"choice": [DATASET.id, SMALLER.id]},
        "options.validation_split": {"uniform": [0.1, 0.3]},
        "data.batch_size": {"choice": [10, 32]},
    }
    prepared = prepare_job(JobCreate.model_validate(BASE), settings, stored.get)
    infos = {
        d.id: {
            "samples": d.samples,
            "class_counts": d.members["targets"]["class_counts"],
            "sha256": d.sha256,
        }
        for d in stored.values()
    }
    seen = set()
    for trial in range(1, 21):
        params = sampling.sample("random", search, trial, 7)
        chosen = params["data.dataset_id"]
        seen.add(chosen)
        made = sampling.trial_spec(prepared.spec, params, seed=5, dataset=infos[chosen])
        fresh = prepare_job(
            JobCreate.model_validate(dict(space.apply(BASE, params), seed=5)),
            settings,
            stored.get,
        )
        assert made == fresh.spec, params
        assert made.data.dataset_sha256 == stored[chosen].sha256
    assert seen == set(stored)  # both data sets were drawn
