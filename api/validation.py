"""Rules a job must pass at submit beyond its schema: everything known before training starts.

A job that passes here cannot fail later for a reason visible now: sizes match the structure,
rows are not ragged, the options fit together, the limits and the compute budget hold. Every
violation is reported with the path of the field and what was expected, and nothing is stored.
The reason to change is a rule across a job's fields and data, or how its data is stored (the
limits themselves are in ``api/budget.py``, the reading of a matrix in ``api/matrices.py``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np

from backprop.settings import Settings
from backprop.spec import DataLayout, JobSpec, StoredSet, TrainingOptions
from core import validation_rows
from core.optimizers import optimizer_from_dict
from core.schedules import schedule_from_dict

from .budget import check_budget, check_limits
from .field_errors import SpecError, field_error
from .matrices import MAX_ROW_ERRORS, matrix_input
from .schemas.jobs import ArrayData, BatchData, DatasetData, JobCreate, ValidationDataset


@dataclass(frozen=True)
class PreparedJob:
    """What the store keeps: the spec (which names the stored data sets the job trains and
    validates on) and the inline data as arrays."""

    spec: JobSpec
    arrays: dict[str, np.ndarray]


def prepare_job(job: JobCreate, settings: Settings, find_dataset=None) -> PreparedJob:
    """Check every cross-field rule and convert the data; raises SpecError.

    ``find_dataset(id)`` returns the tenant's stored data set of that id, or None: its
    metadata (shapes, value ranges) is checked here, its data is never read."""
    errors: list[dict] = []
    structure = job.structure
    check_limits(job, settings, errors)
    options = job.options
    if options.cost == "cross_entropy" and options.output_activation not in ("sigmoid", "softmax"):
        errors.append(
            field_error(
                ("options", "output_activation"),
                f"cost 'cross_entropy' needs output_activation 'sigmoid' or 'softmax', "
                f"got {options.output_activation!r}",
                "option_conflict",
            )
        )
    if options.output_activation == "softmax" and structure[-1] < 2:
        errors.append(
            field_error(
                ("structure",),
                "output_activation 'softmax' needs an output layer of 2 or more",
                "option_conflict",
            )
        )
    if options.validation_split is not None:
        if options.validation is not None:
            message = "give options.validation or options.validation_split, not both"
            errors.append(field_error(("options", "validation_split"), message, "option_conflict"))
        if isinstance(job.data, BatchData):
            message = "validation_split needs data as arrays or a data set, not explicit batches"
            errors.append(field_error(("options", "validation_split"), message, "option_conflict"))
    _check_stepping(options, errors)
    if errors:  # sizes are meaningless against a structure that is itself wrong
        raise SpecError(errors)

    seed = job.seed if job.seed is not None else secrets.randbits(32)
    dataset = val_dataset = None
    inputs = targets = batch_sizes = None
    if isinstance(job.data, BatchData):
        inputs, targets, batch_sizes = _batches(job.data, structure, errors)
    elif isinstance(job.data, DatasetData):
        dataset = _stored(find_dataset, job.data.dataset_id, ("data",), structure, errors)
    else:
        inputs, targets = _arrays(job.data, ("data",), structure, errors)
    validation = None
    if isinstance(options.validation, ValidationDataset):
        where = ("options", "validation")
        val_dataset = _stored(find_dataset, options.validation.dataset_id, where, structure, errors)
    elif options.validation is not None:
        validation = _arrays(options.validation, ("options", "validation"), structure, errors)
    if errors:
        raise SpecError(errors)

    dtype = np.dtype(options.dtype)
    arrays = {}
    if inputs is not None:
        arrays = {"inputs": _matrix(inputs, dtype), "targets": _matrix(targets, dtype)}
    if batch_sizes is not None:
        arrays["batch_sizes"] = np.asarray(batch_sizes, dtype=np.int64)
    if validation is not None:
        arrays["val_inputs"] = _matrix(validation[0], dtype)
        arrays["val_targets"] = _matrix(validation[1], dtype)
    if options.validation_split is not None and inputs is not None:
        if len(arrays["inputs"]) < 2:
            message = "a validation split needs at least two samples"
            errors.append(field_error(("options", "validation_split"), message, "size_mismatch"))
            raise SpecError(errors)
        held = validation_rows(arrays["targets"], options.validation_split, seed)
        arrays["val_inputs"], arrays["val_targets"] = (
            arrays["inputs"][held],
            arrays["targets"][held],
        )
        arrays["inputs"], arrays["targets"] = arrays["inputs"][~held], arrays["targets"][~held]
    for stored, where in ((dataset, ("data",)), (val_dataset, ("options", "validation"))):
        if stored is not None:
            _check_stored_values(stored, where, options, errors)
    if options.cost == "cross_entropy":
        _check_probabilities(arrays, options.output_activation, errors)
    samples = dataset.samples if dataset is not None else len(arrays["inputs"])
    if val_dataset is not None:
        samples += val_dataset.samples
    elif "val_inputs" in arrays and dataset is None:  # a data set's split is in its samples
        samples += len(arrays["val_inputs"])
    check_budget(job, samples, settings, errors)
    if errors:
        raise SpecError(errors)
    return PreparedJob(_spec(job, arrays, settings, seed, dataset, val_dataset), arrays)


def _stored(find_dataset, dataset_id: str, loc: tuple, structure: list[int], errors):
    """The tenant's data set, its columns checked against the structure; None and an error
    when it is not there or does not fit."""
    dataset = find_dataset(dataset_id) if find_dataset else None
    where = (*loc, "dataset_id")
    if dataset is None:
        errors.append(
            field_error(where, f"no data set {dataset_id!r} for this tenant", "dataset_not_found")
        )
        return None
    fits = True
    for member, width, layer in (
        ("inputs", structure[0], "structure[0]"),
        ("targets", structure[-1], "structure[-1]"),
    ):
        columns = dataset.members[member]["shape"][1]
        if columns != width:
            errors.append(
                field_error(
                    where,
                    f"the data set's {member} have {columns} columns, the network's {layer} "
                    f"is {width}",
                    "size_mismatch",
                )
            )
            fits = False
    return dataset if fits else None


def _check_stored_values(dataset, loc: tuple, options, errors: list[dict]) -> None:
    """The rules on values, from the statistics kept with a stored data set."""
    where = (*loc, "dataset_id")
    if options.dtype == "float32":
        for member in ("inputs", "targets"):
            info = dataset.members[member]
            if max(abs(info["min"]), abs(info["max"])) > float(np.finfo(np.float32).max):
                message = f"the data set's {member} have values too large for float32"
                errors.append(field_error(where, message, "dtype_range"))
    if options.cost == "cross_entropy":
        targets = dataset.members["targets"]
        if targets["min"] < 0 or targets["max"] > 1:
            message = "cost 'cross_entropy' needs targets between 0 and 1"
            errors.append(field_error(where, message, "target_range"))
        elif options.output_activation == "softmax" and not targets["rows_sum_to_one"]:
            message = "softmax with cross_entropy needs target rows that sum to 1"
            errors.append(field_error(where, message, "target_range"))


def _arrays(data: ArrayData, loc: tuple, structure: list[int], errors: list[dict]):
    inputs, in_rows = matrix_input(
        data.inputs, (*loc, "inputs"), structure[0], "the network's structure[0]", errors
    )
    targets, target_rows = matrix_input(
        data.targets, (*loc, "targets"), structure[-1], "the network's structure[-1]", errors
    )
    if in_rows is not None and target_rows is not None and in_rows != target_rows:
        errors.append(
            field_error(
                (*loc, "targets"),
                f"expected {in_rows} rows (one per input row), got {target_rows}",
                "size_mismatch",
            )
        )
    return inputs, targets


def _batches(data: BatchData, structure: list[int], errors: list[dict]):
    inputs, targets, sizes = [], [], []
    bad = 0
    for b, batch in enumerate(data.batches):
        for p, (x, y) in enumerate(batch):
            for value, index, width, layer in (
                (x, 0, structure[0], "structure[0]"),
                (y, 1, structure[-1], "structure[-1]"),
            ):
                if len(value) != width:
                    bad += 1
                    if bad > MAX_ROW_ERRORS:
                        continue
                    name = "input" if index == 0 else "target"
                    errors.append(
                        field_error(
                            ("data", "batches", b, p, index),
                            f"expected an {name} of {width} values (the network's {layer}), "
                            f"got {len(value)}",
                            "size_mismatch",
                        )
                    )
            inputs.append(x)
            targets.append(y)
        sizes.append(len(batch))
    if bad > MAX_ROW_ERRORS:
        message = f"{bad - MAX_ROW_ERRORS} more inputs or targets have the wrong size"
        errors.append(field_error(("data", "batches"), message, "size_mismatch"))
    return inputs, targets, sizes


def _matrix(rows, dtype) -> np.ndarray:
    matrix = np.array(rows, dtype=dtype)
    if not np.isfinite(matrix).all():
        # finite as float64 but not as float32 (beyond +-3.4e38)
        raise SpecError(
            [
                field_error(
                    ("options", "dtype"),
                    f"the data has values too large for {dtype.name}",
                    "dtype_range",
                )
            ]
        )
    return matrix


def _check_probabilities(arrays, output_activation: str, errors: list[dict]) -> None:
    for kind, loc in (
        ("targets", ("data", "targets")),
        ("val_targets", ("options", "validation", "targets")),
    ):
        targets = arrays.get(kind)
        if targets is None:
            continue
        if ((targets < 0) | (targets > 1)).any():
            errors.append(
                field_error(
                    loc, "cost 'cross_entropy' needs targets between 0 and 1", "target_range"
                )
            )
        elif output_activation == "softmax" and not np.allclose(targets.sum(axis=1), 1.0):
            errors.append(
                field_error(
                    loc,
                    "softmax with cross_entropy needs target rows that sum to 1",
                    "target_range",
                )
            )


def _check_stepping(options, errors: list[dict]) -> None:
    """What the schema cannot say of an optimizer or a schedule, core says (Nesterov needs
    momentum and no dampening): its ValueError, under the field."""
    for name, from_dict in (("optimizer", optimizer_from_dict), ("schedule", schedule_from_dict)):
        given = getattr(options, name)
        if given is None:
            continue
        try:
            from_dict(given.model_dump())
        except ValueError as exc:
            errors.append(field_error(("options", name), str(exc), "option_conflict"))


def _spec(job: JobCreate, arrays, settings: Settings, seed: int, dataset, val_dataset) -> JobSpec:
    """The job as stored: everything but the data, with defaults and the seed made explicit."""
    options = job.options.model_dump(exclude={"validation"})
    if options["max_runtime_seconds"] is None:
        options["max_runtime_seconds"] = settings.max_runtime_seconds
    data, validation = job.data, None
    validation_samples = len(arrays.get("val_inputs", ()))
    if val_dataset is not None:
        validation = StoredSet(dataset_id=val_dataset.id, dataset_sha256=val_dataset.sha256)
        validation_samples = val_dataset.samples
    if isinstance(data, BatchData):
        sizes = arrays["batch_sizes"].tolist()
        layout = DataLayout.for_batches(sizes, validation_samples=validation_samples)
    elif isinstance(data, DatasetData):
        layout = DataLayout.for_dataset(
            dataset.id,
            dataset.sha256,
            dataset.samples,
            batch_size=data.batch_size,
            shuffle=data.shuffle,
            split=job.options.validation_split,
            class_counts=dataset.members["targets"].get("class_counts"),
            # a validation data set's rows, else the split's (an inline validation set's
            # rows are not counted for a data set job)
            validation_samples=val_dataset.samples if val_dataset is not None else None,
        )
    else:
        layout = DataLayout.for_arrays(
            len(arrays["inputs"]),
            batch_size=data.batch_size,
            shuffle=data.shuffle,
            validation_samples=validation_samples,
        )
    return JobSpec(
        structure=job.structure,
        epochs=job.epochs,
        learning_rate=job.learning_rate,
        seed=seed,
        options=TrainingOptions.from_json(options),
        validation=validation,
        data=layout,
    )
