"""A trial's stored spec, made in the worker from the base's spec and the trial's values, is
exactly what preparing the trial's request from scratch gives (``api.validation``)."""

from __future__ import annotations

import copy
from dataclasses import replace
from types import SimpleNamespace

import pytest

from api.field_errors import SpecError
from api.schemas.jobs import JobCreate
from api.schemas.sweeps import SweepCreate
from api.sweep_validation import prepare_sweep
from api.validation import prepare_job
from backprop.settings import Settings
from core.optimizers import optimizer_from_dict
from core.workspace import parameter_count
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


# optimizers and schedules: a parameter applies to the trials whose optimizer (schedule) takes it
STEPPING = {
    "options.optimizer.name": {"choice": ["sgd", "momentum", "adam", "adamw"]},
    "options.optimizer.momentum": {"uniform": [0.5, 0.95]},
    "options.optimizer.nesterov": {"choice": [True, False]},
    "options.optimizer.beta1": {"uniform": [0.8, 0.95]},
    "options.schedule.name": {"choice": ["constant", "step", "cosine", "plateau"]},
    "options.schedule.step_size": {"int_uniform": [1, 5]},
    "options.schedule.warmup": {"int_uniform": [0, 3]},
    "options.schedule.per": {"choice": ["epoch", "step"]},
    "options.schedule.patience": {"int_uniform": [1, 4]},
    "options.clip_norm": {"log_uniform": [0.5, 20]},
}


def sweep_of(base: dict, search: dict, **changes) -> SweepCreate:
    body = {"base": base, "search": search, "method": "random", "trials": 40, "seed": 7}
    return SweepCreate.model_validate(body | {"objective": {"metric": "val_accuracy"}} | changes)


@pytest.mark.parametrize(
    "given",
    [None, {"name": "adam", "beta1": 0.85, "weight_decay": 0.0}],
    ids=["no-optimizer", "adam-given"],
)
def test_trials_of_optimizers_and_schedules_equal_a_fresh_prepare(given):
    settings = Settings()
    base = copy.deepcopy(BASE)
    if given is not None:  # the base's parameters go where the trial's optimizer lacks them
        base["options"]["optimizer"] = given
    sweep = prepare_sweep(sweep_of(base, STEPPING), settings, lambda _: DATASET)
    names = set()
    for number in range(1, 41):
        trial = sampling.next_trial(sweep.spec, number, sweep_id="s", trials=40, past=[])
        params = trial.params
        seed = sampling.derived_seed(7, number)
        fresh = prepare_job(
            JobCreate.model_validate(dict(space.apply(base, params), seed=seed)),
            settings,
            lambda _: DATASET,
        )
        assert replace(trial.spec, sweep=None) == fresh.spec, params
        optimizer, schedule = trial.spec.options.optimizer, trial.spec.options.schedule
        name = params["options.optimizer.name"]
        names.add((name, schedule["name"]))
        assert optimizer == optimizer_from_dict(optimizer).to_dict()  # every parameter spelled out
        assert optimizer["name"] == name and schedule["name"] == params["options.schedule.name"]
        assert ("beta1" in optimizer) == (name in ("adam", "adamw"))
        assert ("momentum" in optimizer) == (name == "momentum")
        if name in ("adam", "adamw"):
            assert optimizer["beta1"] == params["options.optimizer.beta1"]
            if given is not None:  # given in the base: not adamw's default 0.01
                assert optimizer["weight_decay"] == 0.0
        assert ("step_size" in schedule) == (schedule["name"] == "step")
        assert ("per" in schedule) == (schedule["name"] in ("step", "cosine"))
        assert trial.spec.options.clip_norm == params["options.clip_norm"]
    assert len({o for o, _ in names}) == 4 and len({s for _, s in names}) == 4


def test_a_grid_over_optimizers_without_a_base_one_drops_what_sgd_lacks():
    base = {key: value for key, value in BASE.items() if key != "options"}
    search = {
        "options.optimizer.name": {"choice": ["sgd", "adam"]},
        "options.optimizer.beta1": {"choice": [0.8, 0.95]},
    }
    body = sweep_of(base, search, method="grid", trials=None, objective={"metric": "cost"})
    sweep = prepare_sweep(body, Settings(), lambda _: DATASET)
    assert sweep.trials == 4 and "optimizer" not in sweep.spec["base"]["options"]
    made = [
        sampling.next_trial(sweep.spec, k, sweep_id="s", trials=4, past=[]).spec.options.optimizer
        for k in (1, 2, 3, 4)
    ]
    adam = {"name": "adam", "beta2": 0.999, "eps": 1e-08, "weight_decay": 0.0}
    assert made == [{"name": "sgd"}] * 2 + [adam | {"beta1": 0.8}, adam | {"beta1": 0.95}]
    # the largest trial stores its model, its checkpoint and adam's two buffers
    assert sweep.trial_bytes == 4 * parameter_count([64, 30, 10]) * 8


STEPPING_REFUSED = [
    # (the search, the base's options, the field the error names, what its message says)
    (
        {"options.optimizer.beta1": {"uniform": [0.8, 0.95]}},
        {},
        "search.options.optimizer.beta1",
        "no trial's optimizer takes beta1 (the trials': sgd); adam and adamw take it",
    ),
    (
        {
            "options.optimizer.name": {"choice": ["sgd", "momentum"]},
            "options.optimizer.eps": {"choice": [1e-8]},
        },
        {"optimizer": {"name": "adam"}},
        "search.options.optimizer.eps",
        "(the trials': sgd, momentum); adam and adamw take it",
    ),
    (
        {"options.schedule.step_size": {"int_uniform": [1, 3]}},
        {"schedule": {"name": "cosine"}},
        "search.options.schedule.step_size",
        "no trial's schedule takes step_size (the trials': cosine); step takes it",
    ),
    (
        {"options.optimizer.name": {"uniform": [0, 1]}},
        {},
        "search.options.optimizer.name",
        'takes a choice of "sgd", "momentum", "adam", "adamw"',
    ),
    (
        {"options.schedule.per": {"uniform": [0, 1]}},
        {"schedule": {"name": "cosine"}},
        "search.options.schedule.per",
        'takes a choice of "epoch", "step"',
    ),
    (
        {"options.optimizer.nesterov": {"uniform": [0, 1]}},
        {"optimizer": {"name": "momentum"}},
        "search.options.optimizer.nesterov",
        "takes a choice of true, false",
    ),
    (
        {"options.schedule.warmup": {"uniform": [0, 2]}},
        {"schedule": {"name": "cosine"}},
        "search.options.schedule.warmup",
        "takes integers",
    ),
    (
        {"options.schedule.name": {"choice": ["constant", "step"]}},
        {},
        "search.options.schedule.name",
        "options.schedule.name = 'step' is not a valid job: options.schedule.step_size",
    ),
    (
        {
            "options.optimizer.name": {"choice": ["adam", "momentum"]},
            "options.optimizer.momentum": {"uniform": [0, 0.9]},
            "options.optimizer.nesterov": {"choice": [True]},
        },
        {},
        "search.options.optimizer.momentum",
        "optimizer.nesterov needs a momentum above 0",
    ),
    (
        {"options.optimizer.name": {"choice": ["sgd", "rmsprop"]}},
        {},
        "search.options.optimizer.name",
        "'rmsprop'",
    ),
    (
        {"options.clip_norm": {"uniform": [0, 5]}},
        {},
        "search.options.clip_norm",
        "options.clip_norm = 0.0 is not a valid job",
    ),
]


@pytest.mark.parametrize(
    "search, options, field, says", STEPPING_REFUSED, ids=[e[2] for e in STEPPING_REFUSED]
)
def test_a_space_of_optimizers_and_schedules_is_checked_at_submit(search, options, field, says):
    base = BASE | {"options": BASE["options"] | options}
    with pytest.raises(SpecError) as refused:
        prepare_sweep(sweep_of(base, search), Settings(), lambda _: DATASET)
    errors = {e["field"]: e["msg"] for e in refused.value.errors}
    assert field in errors and says in errors[field], errors
