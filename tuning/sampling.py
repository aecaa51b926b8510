"""Sampling: the values each trial of a sweep gets (grid, random or TPE), its seed, and the
spec it runs. The reason to change is how trials are chosen or how a trial's spec follows
from the sweep's.

Pure: no Flask, Celery or SQL. The sweep's rows (``store.sweeps``) are the state; the caller
hands over the past trials and stores what comes back. Sampling is Optuna's (ask-and-tell
on a study rebuilt in memory from the trial rows); what is ours is the order of a grid and
the seeds.
"""

from __future__ import annotations

import copy
import itertools
import math
import warnings
from dataclasses import dataclass, replace

import numpy as np

from backprop.spec import DataLayout, JobSpec, SweepTrial
from core.optimizers import optimizer_from_dict
from core.schedules import schedule_from_dict

from . import space


@dataclass(frozen=True)
class Past:
    """A trial as a sampler sees it: its values, state and objective."""

    params: dict
    state: str  # running, complete, pruned, failed
    value: float | None = None
    steps: dict[int, float] | None = None  # the objective at each rung it reached


@dataclass(frozen=True)
class Trial:
    """What a sweep's next trial runs: its values and its job spec."""

    params: dict
    spec: JobSpec


def next_trial(
    sweep_spec: dict,
    number: int,
    *,
    sweep_id: str,
    trials: int,
    past: list[Past],
    draw: int | None = None,
) -> Trial:
    """Trial ``number`` of the sweep whose stored spec is ``sweep_spec``, with the values
    (and seed) of the sweep's ``draw``-th draw: its number, unless trials made otherwise
    (extensions of others) took numbers in between."""
    draw = number if draw is None else draw
    params = sample(
        sweep_spec["method"],
        sweep_spec["search"],
        draw,
        sweep_spec["seed"],
        goal=sweep_spec["objective"]["goal"],
        past=past,
        trials=trials,
    )
    base = JobSpec.from_json(sweep_spec["base"])
    seed = base.seed
    if sweep_spec.get("base_seed") is None:  # no seed in the base: each trial its own
        seed = derived_seed(sweep_spec["seed"], draw)
    dataset_id = params.get("data.dataset_id", base.data.dataset_id)
    dataset = sweep_spec.get("datasets", {}).get(dataset_id, sweep_spec.get("dataset"))
    spec = trial_spec(base, params, seed=seed, dataset=dataset)
    of = SweepTrial(
        id=sweep_id,
        trial=number,
        objective=sweep_spec["objective"],
        early_stopping=sweep_spec.get("early_stopping") or None,
    )
    return Trial(params, replace(spec, sweep=of))


def trial_spec(base: JobSpec, params: dict, *, seed: int, dataset: dict | None) -> JobSpec:
    """The spec of a trial: the base's spec (as ``api.validation`` prepared it) with the
    trial's values at their paths, its optimizer and schedule with the parameters their
    names take, each spelled out as core's ``to_dict`` does (the defaults of the trial's
    name filled in, as a submit's schema fills them), and its layout derived again from
    them (batches, held-out rows).

    ``dataset`` is the trial's training data set's {"samples", "class_counts", "sha256"}
    (for a searched validation_split or data.dataset_id). ``tests/api/test_sweeps.py``
    checks this against preparing the trial's request from scratch."""
    values = space.apply(base.to_json(), params)  # the paths are the request's
    if "seed" not in params:
        values["seed"] = seed
    for option, from_dict in (("optimizer", optimizer_from_dict), ("schedule", schedule_from_dict)):
        given = values["options"].get(option)
        if given is not None:
            values["options"][option] = from_dict(given).to_dict()
    early = values["options"].get("early_stopping")
    if early is not None:  # patience searched with no early_stopping in the base
        early.setdefault("min_delta", 0.0)
    spec = JobSpec.from_json(values)
    layout = spec.data
    if layout.form != "dataset" or dataset is None:  # a sweep's base trains on a data set
        return spec
    layout = DataLayout.for_dataset(
        layout.dataset_id,
        dataset.get("sha256", layout.dataset_sha256),
        dataset["samples"],
        batch_size=layout.batch_size,
        shuffle=layout.shuffle,
        split=spec.options.validation_split,
        class_counts=dataset.get("class_counts"),
        validation_samples=layout.validation_samples if spec.validation else None,
    )
    return replace(spec, data=layout)


def derived_seed(seed: int, *keys: int) -> int:
    """A 32-bit seed from the sweep's seed and keys (the trial number): independent streams."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def sample(
    method: str,
    search: dict,
    trial: int,
    seed: int,
    *,
    goal: str = "max",
    past: list[Past] = (),
    trials: int = 1,
) -> dict:
    """The values of trial number ``trial`` (1, 2, ...).

    grid: the trial-th point of the product of the choices, the first path varying slowest.
    random: drawn from the trial's own seed, whatever the other trials did. tpe: Optuna's
    TPE sampler on the past trials (running ones count as their constant liar)."""
    if method == "grid":
        paths = list(search)
        point = next(
            itertools.islice(
                itertools.product(*(search[p]["choice"] for p in paths)), trial - 1, None
            )
        )
        return dict(zip(paths, copy.deepcopy(point)))
    optuna = space.optuna()
    distributions = {path: space.distribution(d) for path, d in search.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's ExperimentalWarning for constant_liar
        if method == "random":
            sampler = optuna.samplers.RandomSampler(seed=derived_seed(seed, trial, 1))
            past = ()
        else:
            sampler = optuna.samplers.TPESampler(
                seed=derived_seed(seed, trial, 1),
                n_startup_trials=min(10, max(2, trials // 3)),
                constant_liar=True,
            )
        study = optuna.create_study(
            direction="maximize" if goal == "max" else "minimize", sampler=sampler
        )
        for done in past:
            study.add_trial(_frozen(optuna, done, search, distributions))
        asked = study.ask(distributions)
    return {path: space.value(search[path], asked.params[path]) for path in search}


def _frozen(optuna, past: Past, search: dict, distributions: dict):
    states = optuna.trial.TrialState
    state = {
        "complete": states.COMPLETE,
        "pruned": states.PRUNED,
        "failed": states.FAIL,
        "running": states.RUNNING,
    }[past.state]
    value = past.value
    if state == states.COMPLETE and (value is None or not math.isfinite(value)):
        state = states.FAIL  # no objective to learn from
    return optuna.trial.create_trial(
        state=state,
        value=value if state == states.COMPLETE else None,
        params={p: space.internal(search[p], past.params[p]) for p in search},
        distributions=distributions,
        intermediate_values=dict(past.steps or {}),
    )
