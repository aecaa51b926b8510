"""Rules a sweep must pass at submit: its base is a valid job, and so is every trial its space
can produce. Nothing is stored for a sweep that fails here; every error names its field
(``base.<field>`` or ``search.<path>``) and what was expected.

Every trial is checked by checking the corners of the space: each combination of the
choices and of the ends of the ranges, prepared as a job exactly as a submit prepares one.
A job's rules are bounds on single fields and a compute budget that grows with epochs,
widths and samples, so a value between two valid ends is valid too. The reason to change is
a rule on sweeps or on what a sweep stores.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, replace

import numpy as np
from pydantic import ValidationError

from backprop.settings import Settings
from backprop.spec import stored_copies
from core.workspace import parameter_count
from tuning import space

from .field_errors import SpecError, dotted, field_error, validation_errors
from .schemas.jobs import DatasetData, JobCreate, ValidationSet
from .schemas.sweeps import SweepCreate
from .validation import PreparedJob, prepare_job

MAX_CORNERS = 4096  # combinations checked at submit
MAX_ERRORS = 10


@dataclass(frozen=True)
class PreparedSweep:
    spec: dict  # what store.sweeps keeps: the base job's spec, the space, the method, ...
    trials: int
    base: PreparedJob
    searched_datasets: list[str]  # data.dataset_id's choices: kept while the sweep runs
    trial_bytes: int  # the most a trial stores: its model, checkpoint and start weights


def _trial_bytes(body: SweepCreate, search: dict) -> int:
    """The largest trial's storage: about its model's size for the model, again for its
    checkpoint and each of its optimizer's buffers, and again for start weights copied from
    ``init_from`` (``backprop.spec.stored_copies``; the corners hold the widest structures,
    the wider float and every optimizer)."""
    base_json = body.base.model_dump(mode="json", exclude_unset=True)
    largest = 0
    for corner in space.corners(search):
        job = space.apply(base_json, corner)
        options = job.get("options", {})
        itemsize = np.dtype(options.get("dtype", "float64")).itemsize
        copies = stored_copies(options.get("optimizer"), bool(job.get("init_from")))
        largest = max(largest, copies * parameter_count(job["structure"]) * itemsize)
    return largest


def prepare_sweep(
    body: SweepCreate, settings: Settings, find_dataset, check_init=None
) -> PreparedSweep:
    """Check the sweep and every trial it can make; raises SpecError.

    ``check_init(job_id, structure)`` says why a trial may not start from that job's
    weights (``init_from``), or None."""
    errors: list[dict] = []
    base = body.base
    if not isinstance(base.data, DatasetData):
        message = (
            "a sweep's trials train on a stored data set: upload it (POST /v1/datasets) "
            "and give data.dataset_id"
        )
        errors.append(field_error(("base", "data"), message, "sweep_data"))
    if isinstance(base.options.validation, ValidationSet):
        message = "give a stored data set (dataset_id) or options.validation_split"
        errors.append(field_error(("base", "options", "validation"), message, "sweep_data"))
    search = {path: dimension.model_dump() for path, dimension in body.search.items()}
    _check_paths(search, base, errors)
    trials = _check_counts(body, search, settings, errors)
    if errors:
        raise SpecError(errors)

    datasets: dict[str, object] = {}

    def cached(dataset_id: str):  # the corners ask for the same data sets again and again
        if dataset_id not in datasets:
            datasets[dataset_id] = find_dataset(dataset_id)
        return datasets[dataset_id]

    try:
        prepared = prepare_job(base, settings, find_dataset=cached)
    except SpecError as exc:
        raise SpecError([_under(("base",), e) for e in exc.errors]) from None
    goal = body.objective.goal or ("max" if "accuracy" in body.objective.metric else "min")
    dataset = cached(prepared.spec.data.dataset_id)
    if "data.dataset_id" not in search:  # else the searched ones are checked below
        _check_objective(body, search, dataset, errors)
    starts = _init_checker(check_init)
    # with structure or init_from searched, each corner's pair is checked (a searched
    # init_from replaces the base's, which is then neither checked nor kept)
    shaped = any(space.location(path)[0] in ("structure", "init_from") for path in search)
    if base.init_from is not None and not shaped:
        why = starts(base.init_from, base.structure)
        if why is not None:
            errors.append(field_error(("base", "init_from"), why, "init_from"))
    _check_corners(body, search, settings, cached, errors, starts if shaped else None)
    if body.early_stopping is not None:
        least = min(_values(search, "epochs", base.epochs))
        if body.early_stopping.min_epochs >= least:
            message = (
                f"min_epochs {body.early_stopping.min_epochs} is not below the trials' "
                f"{least} epochs: no trial would reach a rung"
            )
            errors.append(field_error(("early_stopping", "min_epochs"), message, "sweep"))
    searched = list(dict.fromkeys(_values(search, "data.dataset_id", None)))
    searched = [dataset_id for dataset_id in searched if dataset_id is not None]
    if not errors:  # every choice was found by the corners' checks
        for dataset_id in searched:
            _check_objective(
                body, search, cached(dataset_id), errors, ("search", "data.dataset_id")
            )
    if errors:
        raise SpecError(errors[:MAX_ERRORS])
    base_spec = prepared.spec
    if base.callback_url:
        base_spec = replace(base_spec, callback_url=base.callback_url)
    if base.init_from and "init_from" not in search:  # a searched one replaces it
        base_spec = replace(base_spec, init_from=base.init_from)
    base_spec = _named_as_given(base_spec, base, search)
    spec = {
        "base": base_spec.to_json(),
        "base_seed": base.seed,
        "search": search,
        "method": body.method,
        "seed": body.seed if body.seed is not None else secrets.randbits(32),
        "objective": {"metric": body.objective.metric, "goal": goal},
        "early_stopping": body.early_stopping and body.early_stopping.model_dump(),
        "replicates": body.replicates,
        "dataset": _info(dataset),
    }
    if searched:
        spec["datasets"] = {dataset_id: _info(cached(dataset_id)) for dataset_id in searched}
    return PreparedSweep(spec, trials, prepared, searched, _trial_bytes(body, search))


def _named_as_given(spec, base: JobCreate, search: dict):
    """With ``options.optimizer.name`` (or the schedule's) searched, the base keeps the
    parameters it gave rather than its own name's defaults: each trial takes those of its
    name (``tuning.sampling.trial_spec``), as a submit of the trial's request would."""
    given = {}
    for option in space.NAMED:
        if f"options.{option}.name" in search:
            named = getattr(base.options, option)
            given[option] = named and named.model_dump(mode="json", exclude_unset=True)
    return replace(spec, options=replace(spec.options, **given)) if given else spec


def _info(dataset) -> dict:
    """What a trial's spec needs of its data set (``tuning.sampling.trial_spec``)."""
    return {
        "samples": int(dataset.samples),
        "class_counts": dataset.members["targets"].get("class_counts"),
        "sha256": dataset.sha256,
    }


def _under(prefix: tuple, error: dict) -> dict:
    loc = (*prefix, *error["loc"])
    return {**error, "loc": list(loc), "field": dotted(loc)}


def _check_paths(search: dict, base: JobCreate, errors: list[dict]) -> None:
    layers = len(base.structure)
    for path in search:
        where = ("search", path)
        try:
            loc = space.location(path)
        except ValueError as exc:
            errors.append(field_error(where, str(exc), "search_path"))
            continue
        if loc[0] == "structure" and len(loc) == 2:
            if "structure" in search:
                message = "search structure or its layers, not both"
                errors.append(field_error(where, message, "search_path"))
            elif not 0 < loc[1] < layers - 1:
                message = (
                    f"the base has hidden layers structure[1] to structure[{layers - 2}]; "
                    "structure[0] and structure[-1] are the data's columns"
                    if layers > 2
                    else "the base's structure has no hidden layer to search"
                )
                errors.append(field_error(where, message, "search_path"))
        if path in space.CHOICE_FIELDS:
            values, takes = search[path].get("choice"), space.CHOICE_FIELDS[path]
            if takes is None and (values is None or not all(isinstance(v, str) for v in values)):
                message = f'{path} takes a choice of ids: {{"choice": ["<id>", ...]}}'
                errors.append(field_error(where, message, "search_path"))
            elif takes is not None and values is None:
                among = ", ".join(json.dumps(value) for value in takes)
                message = f'{path} takes a choice of {among}: {{"choice": [...]}}'
                errors.append(field_error(where, message, "search_path"))
        if space.takes_integers(path) and space.kind(search[path]) in ("uniform", "log_uniform"):
            message = f"{path} takes integers: use int_uniform, int_log_uniform or choice"
            errors.append(field_error(where, message, "search_path"))
        named = space.named_parameter(path)
        if named is not None:
            _check_taken(search, base, path, *named, errors)


def _check_taken(
    search: dict, base: JobCreate, path: str, option: str, parameter: str, errors: list[dict]
) -> None:
    """A parameter of an optimizer or a schedule that no trial's takes is refused."""
    dimension = search.get(f"options.{option}.name")
    given = getattr(base.options, option)
    if dimension is not None:
        names = dimension.get("choice", [])
    else:
        names = [given.name if given is not None else space.NAMED[option][1]]
    known = [name for name in names if space.parameters(option, name) is not None]
    if not known or any(parameter in space.parameters(option, name) for name in known):
        return  # an unknown name is the corners' to report
    registry, _ = space.NAMED[option]
    takers = [name for name, named in registry.items() if parameter in named.parameters]
    verb = "take" if len(takers) > 1 else "takes"
    listed = ", ".join(takers[:-1]) + " and " + takers[-1] if len(takers) > 1 else takers[0]
    message = (
        f"no trial's {option} takes {parameter} (the trials': {', '.join(known)}); "
        f"{listed} {verb} it: search options.{option}.name or give it in the base"
    )
    errors.append(field_error(("search", path), message, "search_path"))


def _check_counts(body: SweepCreate, search: dict, settings: Settings, errors) -> int:
    trials = body.trials
    if body.method == "grid":
        ranges = [p for p, d in search.items() if space.is_numeric(d)]
        for path in ranges:
            message = 'a grid takes choices only: {"choice": [...]}'
            errors.append(field_error(("search", path), message, "search_grid"))
        if ranges:
            return 0
        size = space.grid_size(search)
        if trials is None:
            trials = size
        elif trials > size:
            message = f"the grid has {size} points; trials may be at most that"
            errors.append(field_error(("trials",), message, "search_grid"))
    elif trials is None:
        trials = 10
    trials *= body.replicates  # the jobs it makes
    if trials > settings.max_sweep_trials:
        message = f"at most {settings.max_sweep_trials} trials (MAX_SWEEP_TRIALS), got {trials}"
        if body.replicates > 1:
            message += f" ({trials // body.replicates} x {body.replicates} replicates)"
        errors.append(field_error(("trials",), message, "limit_exceeded"))
    if body.replicates > 1 and body.early_stopping is not None:
        message = (
            "ASHA judges single trials at its rungs, replicates rank configurations by their "
            "mean: use one or the other"
        )
        errors.append(field_error(("replicates",), message, "sweep"))
    if body.max_parallel > settings.max_sweep_parallel:
        message = (
            f"at most {settings.max_sweep_parallel} (MAX_SWEEP_PARALLEL), got {body.max_parallel}"
        )
        errors.append(field_error(("max_parallel",), message, "limit_exceeded"))
    corners = space.corner_count(search)
    if corners > MAX_CORNERS:
        message = (
            f"the space has {corners} combinations of choices and range ends; at most "
            f"{MAX_CORNERS} are checked at submit: fewer choices, or ranges instead"
        )
        errors.append(field_error(("search",), message, "search_size"))
    return trials


def _values(search: dict, path: str, default) -> list:
    dimension = search.get(path)
    if dimension is None:
        return [default]
    return list(dimension[space.kind(dimension)])


def _check_objective(
    body: SweepCreate, search: dict, dataset, errors: list[dict], where=("objective", "metric")
) -> None:
    metric, options = body.objective.metric, body.base.options
    if metric.startswith("val_") and options.validation is None:
        splits = _values(search, "options.validation_split", options.validation_split)
        if any(split is None for split in splits):
            message = (
                f"{metric} needs a validation set: options.validation_split or "
                "options.validation in the base"
            )
            errors.append(field_error(where, message, "sweep_objective"))
    if "accuracy" in metric and dataset is not None:
        if not dataset.members["targets"].get("one_hot"):
            message = f"{metric} needs one-hot targets (classes); data set {dataset.id} has none"
            errors.append(field_error(where, message, "sweep_objective"))


def _init_checker(check_init):
    """check_init, asked once per job and structure."""
    answers: dict[tuple, str | None] = {}

    def starts(job_id: str, structure: list[int]) -> str | None:
        key = (job_id, tuple(structure))
        if key not in answers:
            answers[key] = check_init(job_id, structure) if check_init else None
        return answers[key]

    return starts


def _check_corners(
    body, search: dict, settings: Settings, find_dataset, errors, starts=None
) -> None:
    """Prepare every corner of the space as a job; the first failure per path is reported.
    ``starts``: also check each corner's init_from against its structure."""
    base_json = body.base.model_dump(mode="json", exclude_unset=True)
    reported: set[str] = set()
    for corner in space.corners(search):
        found = _corner_errors(space.apply(base_json, corner), settings, find_dataset, starts)
        for error in found:
            path = _blame(error["loc"], corner, base_json)
            if path in reported:
                continue
            reported.add(path)
            values = ", ".join(f"{p} = {v!r}" for p, v in corner.items())
            message = (
                f"the trial with {values} is not a valid job: {error['field']}: {error['msg']}"
            )
            errors.append(field_error(("search", path), message, "invalid_trial"))
        if len(reported) >= MAX_ERRORS:
            return


def _corner_errors(body: dict, settings: Settings, find_dataset, starts=None) -> list[dict]:
    try:
        job = JobCreate.model_validate(body)
    except ValidationError as exc:
        return validation_errors(exc)
    try:
        prepare_job(job, settings, find_dataset=find_dataset)
    except SpecError as exc:
        return exc.errors
    why = starts(job.init_from, job.structure) if starts and job.init_from else None
    return [field_error(("init_from",), why, "init_from")] if why else []


def _blame(loc: list, corner: dict, base_json: dict) -> str:
    """The searched path an error of a corner belongs to: the one at (or above) the field,
    else one below it (of an optimizer's, a parameter rather than a name core knows: the
    error is then core's on how its parameters go together), else the first whose value
    there differs from the base's."""
    below = []
    for path in corner:
        where = list(space.location(path))
        if loc[: len(where)] == where:
            return path
        if where[: len(loc)] == loc:
            below.append(path)
    if below:
        parameters = [path for path in below if not _known_name(path, corner[path])]
        return (parameters or below)[0]
    for path, value in corner.items():
        if _at(base_json, space.location(path)) != value:
            return path
    return next(iter(corner))


def _known_name(path: str, value) -> bool:
    """Is the path an optimizer's (a schedule's) name, and the value one of core's names?"""
    option, _, last = path.removeprefix("options.").partition(".")
    return option in space.NAMED and last == "name" and space.parameters(option, value) is not None


def _at(body: dict, loc: tuple):
    node = body
    for key in loc:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return None
    return node
