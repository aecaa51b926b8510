"""Hyperparameter search: spaces over a job's fields, trial sampling and ASHA's rung decisions.

Pure: no Flask, Celery or SQL. The sweep's rows (``store.sweeps``) are the state; every call
here gets what it needs from them and returns a value to store. Sampling and pruning are
Optuna's (ask-and-tell on a study rebuilt in memory from the trial rows, and its
SuccessiveHalvingPruner); what is ours is the mapping between a job's fields and Optuna's
distributions, the order of a grid, and the seeds.

A space maps paths of the job request (``learning_rate``, ``structure[1]``, ``options.l2``,
``data.batch_size``) to one of ``{"choice": [...]}``, ``{"uniform": [low, high]}``,
``{"log_uniform": [low, high]}``, ``{"int_uniform": [low, high]}`` and
``{"int_log_uniform": [low, high]}`` (bounds included).
"""

from __future__ import annotations

import copy
import itertools
import math
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from core import held_out_count

KINDS = ("choice", "uniform", "log_uniform", "int_uniform", "int_log_uniform")
METHODS = ("grid", "random", "tpe")
METRICS = ("val_accuracy", "val_cost", "accuracy", "cost")

# the job fields a sweep may search, stored data sets (data.dataset_id) and starting weights
# (init_from) among them; inline data, names, labels and callbacks a sweep holds fixed
SEARCHABLE = (
    "learning_rate",
    "epochs",
    "seed",
    "structure",
    "structure[i]",
    "options.activation",
    "options.output_activation",
    "options.cost",
    "options.init",
    "options.l2",
    "options.dtype",
    "options.validation_split",
    "options.max_runtime_seconds",
    "options.verify_gradients",
    "options.early_stopping.patience",
    "options.early_stopping.min_delta",
    "data.batch_size",
    "data.shuffle",
    "data.dataset_id",
    "init_from",
)
# fields that take choices only (a range of ids means nothing)
CHOICE_FIELDS = ("data.dataset_id", "init_from")
# fields that take integers: a float range cannot search them
INTEGER_FIELDS = (
    "epochs",
    "seed",
    "structure[i]",
    "options.max_runtime_seconds",
    "options.early_stopping.patience",
    "data.batch_size",
)
PATH = re.compile(r"([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)(?:\[([0-9]+)\])?")


def location(path: str) -> tuple:
    """``"structure[1]"`` -> ``("structure", 1)``; ``"options.l2"`` -> ``("options", "l2")``.
    Raises ValueError for a path that is not one of SEARCHABLE."""
    found = PATH.fullmatch(path)
    if found is None:
        raise ValueError("expected a field path such as learning_rate, options.l2 or structure[1]")
    dotted, index = found.groups()
    name = "structure[i]" if index is not None and dotted == "structure" else dotted
    if index is not None and dotted != "structure":
        raise ValueError("only structure takes an index, e.g. structure[1]")
    if name not in SEARCHABLE:
        raise ValueError(
            f"{path!r} is not a field a sweep can search; these can: {', '.join(SEARCHABLE)}"
        )
    loc = tuple(dotted.split("."))
    return loc + ((int(index),) if index is not None else ())


def takes_integers(path: str) -> bool:
    return re.sub(r"\[[0-9]+\]$", "[i]", path) in INTEGER_FIELDS


def is_numeric(dimension: dict) -> bool:
    return "choice" not in dimension


def kind(dimension: dict) -> str:
    (name,) = dimension
    return name


def corners(search: dict) -> Iterator[dict]:
    """Every combination of the choices and the ends of the ranges. The rules a job must
    pass are bounds and monotone in each numeric field (the compute budget grows with
    epochs and widths), so a space whose corners all pass holds only valid jobs."""
    paths = list(search)
    options = [list(search[p][kind(search[p])]) for p in paths]
    for values in itertools.product(*options):
        yield dict(zip(paths, values))


def corner_count(search: dict) -> int:
    return math.prod(len(d[kind(d)]) for d in search.values())


def grid_size(search: dict) -> int:
    return math.prod(len(d["choice"]) for d in search.values())


def apply(body: dict, params: dict) -> dict:
    """The job request with the trial's values at their paths (a copy)."""
    result = copy.deepcopy(body)
    for path, value in params.items():
        *parents, last = location(path)
        node = result
        for key in parents:
            if node.get(key) is None:  # options.early_stopping searched without a base one
                node[key] = {}
            node = node[key]
        node[last] = copy.deepcopy(value)
    return result


def trial_spec(base: dict, params: dict, *, seed: int, dataset: dict | None) -> dict:
    """The stored spec of a trial: the base's spec (as ``api.validation`` prepared it) with
    the trial's values, and what follows from them recomputed (batches, held-out rows).

    ``dataset`` is the trial's training data set's {"samples", "class_counts", "sha256"}
    (for a searched validation_split or data.dataset_id). ``tests/api/test_sweeps.py``
    checks this against preparing the trial's request from scratch."""
    spec = apply(base, params)
    if "seed" not in params:
        spec["seed"] = seed
    early = spec["options"].get("early_stopping")
    if early is not None:
        early.setdefault("min_delta", 0.0)
    layout = spec["data"]
    if layout["form"] == "dataset" and dataset is not None:
        if "sha256" in dataset:
            layout["dataset_sha256"] = dataset["sha256"]
        fraction = spec["options"].get("validation_split")
        held = 0
        if fraction:
            held = held_out_count(fraction, dataset["samples"], dataset.get("class_counts"))
        layout["samples"] = dataset["samples"] - held
        if not spec.get("validation"):
            layout["validation_samples"] = held
    if layout.get("batch_size"):
        layout["batches"] = -(-layout["samples"] // layout["batch_size"])
    return spec


def derived_seed(seed: int, *keys: int) -> int:
    """A 32-bit seed from the sweep's seed and keys (the trial number): independent streams."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


@dataclass(frozen=True)
class Past:
    """A trial as a sampler sees it: its values, state and objective."""

    params: dict
    state: str  # running, complete, pruned, failed
    value: float | None = None
    steps: dict[int, float] | None = None  # the objective at each rung it reached


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
    optuna = _optuna()
    distributions = {path: _distribution(optuna, d) for path, d in search.items()}
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
    return {path: _value(search[path], asked.params[path]) for path in search}


def _optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _distribution(optuna, dimension: dict):
    name, spread = kind(dimension), dimension[kind(dimension)]
    d = optuna.distributions
    if name == "choice":  # by index: choices may be lists (structure), Optuna takes scalars
        return d.CategoricalDistribution(list(range(len(spread))))
    low, high = spread
    if name.startswith("int_"):
        return d.IntDistribution(int(low), int(high), log=name == "int_log_uniform")
    return d.FloatDistribution(float(low), float(high), log=name == "log_uniform")


def _value(dimension: dict, internal):
    if "choice" in dimension:
        return copy.deepcopy(dimension["choice"][internal])
    if kind(dimension).startswith("int_"):
        return int(internal)
    return float(internal)


def _internal(dimension: dict, value):
    if "choice" in dimension:
        return dimension["choice"].index(value)
    return value


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
        params={p: _internal(search[p], past.params[p]) for p in search},
        distributions=distributions,
        intermediate_values=dict(past.steps or {}),
    )


# ------------------------------------------------------------------------------ ASHA


def rungs(min_epochs: int, factor: int, epochs: int) -> list[int]:
    """The epochs at which a trial of ``epochs`` epochs is judged: min_epochs * factor**k,
    before its last epoch (a trial at its last epoch has finished, not reached a rung)."""
    found, epoch = [], min_epochs
    while epoch < epochs:
        found.append(epoch)
        epoch *= factor
    return found


def asha_decision(
    *,
    epoch: int,
    value: float | None,
    own: list[dict],
    others: list[list[dict]],
    min_epochs: int,
    factor: int,
    goal: str,
) -> dict:
    """Whether a trial that reached ``epoch`` (a rung) with objective ``value`` continues.

    Optuna's SuccessiveHalvingPruner decides, on a study rebuilt from the decisions already
    recorded: ``own`` (this trial's, earlier rungs) and ``others`` (every other trial's). The
    trial continues if its value is among the best ``max(1, n // factor)`` of the n trials
    that reached the rung so far, itself included. Returns the decision with the figures
    behind it, to be stored on the trial."""
    optuna = _optuna()
    rung = len(own)
    key = f"completed_rung_{rung}"  # the pruner's record of a trial's value at a rung
    value = float("nan") if value is None else float(value)
    study = optuna.create_study(direction="maximize" if goal == "max" else "minimize")
    worst = -math.inf if goal == "max" else math.inf  # a recorded value that was not finite

    def recorded(decisions: list[dict]) -> dict:
        return {
            f"completed_rung_{d['rung']}": worst if d["value"] is None else d["value"]
            for d in decisions
        }

    competing = []
    running = optuna.trial.TrialState.RUNNING
    for decisions in others:
        attrs = recorded(decisions)
        if key in attrs:
            competing.append(attrs[key])
        study.add_trial(optuna.trial.create_trial(state=running, system_attrs=attrs))
    attrs = recorded(own)
    study.add_trial(
        optuna.trial.create_trial(
            state=running, system_attrs=attrs, intermediate_values={epoch: value}
        )
    )
    pruner = optuna.pruners.SuccessiveHalvingPruner(
        min_resource=min_epochs, reduction_factor=factor, min_early_stopping_rate=0
    )
    stop = pruner.prune(study, study.trials[-1])
    competing.append(value)
    finite = [v for v in competing if math.isfinite(v)]
    keep = max(1, len(competing) // factor)
    ranked = sorted(finite, reverse=goal == "max")
    better = sum(1 for v in finite if (v > value if goal == "max" else v < value))
    return {
        "rung": rung,
        "epoch": epoch,
        "value": value if math.isfinite(value) else None,
        "competitors": len(competing),
        "keep": keep,
        "cutoff": ranked[keep - 1] if len(ranked) >= keep else None,
        "better": better if math.isfinite(value) else None,
        "decision": "stop" if stop else "continue",
    }
