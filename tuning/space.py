"""Search spaces: which job fields a sweep may search, the kinds of dimension over them, and
their mapping onto Optuna's distributions. The reason to change is a new searchable field or
a new kind of dimension.

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
from collections.abc import Iterator

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
