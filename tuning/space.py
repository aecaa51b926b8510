"""Search spaces: which job fields a sweep may search, the kinds of dimension over them, and
their mapping onto Optuna's distributions. The reason to change is a new searchable field or
a new kind of dimension.

A space maps paths of the job request (``learning_rate``, ``structure[1]``, ``options.l2``,
``data.batch_size``) to one of ``{"choice": [...]}``, ``{"uniform": [low, high]}``,
``{"log_uniform": [low, high]}``, ``{"int_uniform": [low, high]}`` and
``{"int_log_uniform": [low, high]}`` (bounds included).

An optimizer's or a schedule's parameter (``options.optimizer.beta1``) applies only where it
exists: a trial whose optimizer (core's ``OPTIMIZERS``, by the trial's name) does not take it
goes without it, whether the space or the base gave it (``apply``).
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from collections.abc import Iterator

from core.optimizers import OPTIMIZERS, SGD
from core.schedules import PER, SCHEDULES, Constant

DIMENSION_KINDS = ("choice", "uniform", "log_uniform", "int_uniform", "int_log_uniform")

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
    "options.optimizer.name",
    "options.optimizer.momentum",
    "options.optimizer.dampening",
    "options.optimizer.nesterov",
    "options.optimizer.beta1",
    "options.optimizer.beta2",
    "options.optimizer.eps",
    "options.optimizer.weight_decay",
    "options.schedule.name",
    "options.schedule.step_size",
    "options.schedule.gamma",
    "options.schedule.t_max",
    "options.schedule.min_lr",
    "options.schedule.warmup",
    "options.schedule.power_t",
    "options.schedule.per",
    "options.schedule.factor",
    "options.schedule.patience",
    "options.schedule.threshold",
    "options.schedule.cooldown",
    "options.clip_norm",
    "data.batch_size",
    "data.shuffle",
    "data.dataset_id",
    "init_from",
)
# fields that take choices only, and the values they take: ids (None: a range of ids means
# nothing), names and switches
CHOICE_FIELDS = {
    "data.dataset_id": None,
    "init_from": None,
    "options.optimizer.name": tuple(OPTIMIZERS),
    "options.optimizer.nesterov": (True, False),
    "options.schedule.name": tuple(SCHEDULES),
    "options.schedule.per": PER,
}
# fields that take integers: a float range cannot search them
INTEGER_FIELDS = (
    "epochs",
    "seed",
    "structure[i]",
    "options.max_runtime_seconds",
    "options.early_stopping.patience",
    "options.schedule.step_size",
    "options.schedule.t_max",
    "options.schedule.warmup",
    "options.schedule.patience",
    "options.schedule.cooldown",
    "data.batch_size",
)
# the named parameter sets of a job's options: each name's class, and the name a job
# without the option has
NAMED = {"optimizer": (OPTIMIZERS, SGD.name), "schedule": (SCHEDULES, Constant.name)}
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
    """The job request with the trial's values at their paths (a copy), and without the
    parameters its optimizer and its schedule do not take (``applicable``)."""
    result = copy.deepcopy(body)
    for path, value in params.items():
        *parents, last = location(path)
        node = result
        for key in parents:
            if node.get(key) is None:  # options.early_stopping searched without a base one
                node[key] = {}
            node = node[key]
        node[last] = copy.deepcopy(value)
    for option in NAMED:
        given = result.get("options", {}).get(option)
        if isinstance(given, dict):
            result["options"][option] = applicable(option, given)
    return result


def applicable(option: str, given: dict) -> dict:
    """``given`` (``{"name": "sgd", "beta1": 0.9}``) without the parameters its name does not
    take (``{"name": "sgd"}``); as it is when it has no name core knows (the job's checks
    say so)."""
    takes = parameters(option, given.get("name"))
    if takes is None:
        return given
    return {key: value for key, value in given.items() if key == "name" or key in takes}


def parameters(option: str, name) -> tuple[str, ...] | None:
    """The parameters the ``option`` (optimizer, schedule) of that name takes; None for a
    name that is none of core's."""
    registry, _ = NAMED[option]
    found = registry.get(name) if isinstance(name, str) else None
    return None if found is None else found.parameters


def named_parameter(path: str) -> tuple[str, str] | None:
    """``("optimizer", "beta1")`` for ``options.optimizer.beta1``; None for any path that is
    not a parameter of an optimizer or a schedule (``options.optimizer.name`` among them)."""
    parts = path.split(".")
    if len(parts) == 3 and parts[0] == "options" and parts[1] in NAMED and parts[2] != "name":
        return parts[1], parts[2]
    return None


# ------------------------------------------------------------------------------ Optuna


def optuna():
    """Optuna, imported on first use (the API never needs it) and quiet."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def distribution(dimension: dict):
    """The dimension as an Optuna distribution; a choice is searched by its index."""
    name, spread = kind(dimension), dimension[kind(dimension)]
    d = optuna().distributions
    if name == "choice":  # by index: choices may be lists (structure), Optuna takes scalars
        return d.CategoricalDistribution(list(range(len(spread))))
    low, high = spread
    if name.startswith("int_"):
        return d.IntDistribution(int(low), int(high), log=name == "int_log_uniform")
    return d.FloatDistribution(float(low), float(high), log=name == "log_uniform")


def value(dimension: dict, drawn):
    """The job's value for what Optuna drew from ``distribution(dimension)``."""
    if "choice" in dimension:
        return copy.deepcopy(dimension["choice"][drawn])
    if kind(dimension).startswith("int_"):
        return int(drawn)
    return float(drawn)


def internal(dimension: dict, job_value):
    """What Optuna records for the job's value (``value`` the other way)."""
    if "choice" in dimension:
        return dimension["choice"].index(job_value)
    return job_value
