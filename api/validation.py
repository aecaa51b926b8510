"""Rules a job must pass at submit beyond its schema: everything known before training starts.

A job that passes here cannot fail later for a reason visible now: sizes match the structure,
rows are not ragged, the options fit together, the limits and the compute budget hold. Every
violation is reported with the path of the field and what was expected, and nothing is stored.
"""

from __future__ import annotations

import base64
import binascii
import io
import secrets
from dataclasses import dataclass

import numpy as np
from numpy.lib import format as npy_format

from backprop.settings import Settings
from core import held_out_count, validation_rows

from .schemas import ArrayData, BatchData, DatasetData, JobCreate, NpyArray, ValidationDataset


class SpecError(ValueError):
    """One or more fields of a request break a rule; ``errors`` are FieldError dicts."""

    def __init__(self, errors: list[dict]):
        self.errors = errors
        super().__init__("; ".join(f"{e['field']}: {e['msg']}" for e in errors))


def field_error(loc: tuple | list, msg: str, kind: str = "value_error") -> dict:
    return {"loc": list(loc), "field": dotted(loc), "msg": msg, "type": kind}


def dotted(loc) -> str:
    """["data", "inputs", 3] -> "data.inputs[3]"; the whole body is "body"."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


@dataclass(frozen=True)
class PreparedJob:
    """What the store keeps: the spec as JSON, the inline data as arrays, and the stored
    data sets the job trains and validates on."""

    spec: dict
    arrays: dict[str, np.ndarray]
    dataset_id: str | None = None
    val_dataset_id: str | None = None


def prepare_job(job: JobCreate, settings: Settings, find_dataset=None) -> PreparedJob:
    """Check every cross-field rule and convert the data; raises SpecError.

    ``find_dataset(id)`` returns the tenant's stored data set of that id, or None: its
    metadata (shapes, value ranges) is checked here, its data is never read."""
    errors: list[dict] = []
    structure = job.structure
    _check_limits(job, settings, errors)
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
    _check_budget(job, samples, settings, errors)
    if errors:
        raise SpecError(errors)
    spec = _spec(job, arrays, settings, seed, dataset, val_dataset)
    return PreparedJob(
        spec,
        arrays,
        dataset_id=dataset and dataset.id,
        val_dataset_id=val_dataset and val_dataset.id,
    )


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


def _check_limits(job: JobCreate, settings: Settings, errors: list[dict]) -> None:
    if len(job.structure) > settings.max_layers:
        errors.append(
            field_error(
                ("structure",),
                f"at most {settings.max_layers} layers are allowed, got {len(job.structure)}",
                "limit_exceeded",
            )
        )
    for i, width in enumerate(job.structure):
        if width > settings.max_layer_width:
            errors.append(
                field_error(
                    ("structure", i),
                    f"layers may be at most {settings.max_layer_width} wide, got {width}",
                    "limit_exceeded",
                )
            )
            break
    parameters = parameter_count(job.structure)
    if parameters > settings.max_parameters:
        errors.append(
            field_error(
                ("structure",),
                f"the network has {parameters} weights and biases, at most "
                f"{settings.max_parameters} are allowed (MAX_PARAMETERS)",
                "limit_exceeded",
            )
        )
    if job.epochs > settings.max_epochs:
        errors.append(
            field_error(
                ("epochs",),
                f"at most {settings.max_epochs} epochs are allowed, got {job.epochs}",
                "limit_exceeded",
            )
        )
    runtime = job.options.max_runtime_seconds
    if runtime is not None and runtime > settings.max_runtime_seconds:
        errors.append(
            field_error(
                ("options", "max_runtime_seconds"),
                f"at most {settings.max_runtime_seconds} seconds are allowed, got {runtime}",
                "limit_exceeded",
            )
        )


MAX_ROW_ERRORS = 10  # per matrix: enough to see the pattern, bounded for huge bodies


def _check_rows(rows, loc: tuple, width: int, layer: str, errors: list[dict]) -> bool:
    """Every row must have the width of a layer; reports each row that does not (the first
    MAX_ROW_ERRORS of them, then how many more)."""
    bad = [i for i, row in enumerate(rows) if len(row) != width]
    for i in bad[:MAX_ROW_ERRORS]:
        errors.append(
            field_error(
                (*loc, i),
                f"expected {width} values ({layer}), got {len(rows[i])}",
                "size_mismatch",
            )
        )
    if len(bad) > MAX_ROW_ERRORS:
        errors.append(
            field_error(
                loc,
                f"{len(bad) - MAX_ROW_ERRORS} more rows do not have {width} values",
                "size_mismatch",
            )
        )
    return not bad


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


def matrix_input(value, loc: tuple, width: int, layer: str, errors: list[dict]):
    """(the matrix, its row count): JSON rows or a decoded .npy array whose rows have the
    layer's width. The matrix is None (with an error) when they do not; the count is None
    only when the value could not be read at all."""
    if isinstance(value, NpyArray):
        array = decode_npy(value.npy, loc, errors)
        if array is None:
            return None, None
        if array.shape[1] != width:
            errors.append(
                field_error(
                    loc,
                    f"expected rows of {width} values ({layer}), "
                    f"got an array of shape {array.shape}",
                    "size_mismatch",
                )
            )
            return None, len(array)
        return array, len(array)
    return (value if _check_rows(value, loc, width, layer, errors) else None), len(value)


def decode_npy(text: str, loc: tuple, errors: list[dict]) -> np.ndarray | None:
    """The 2-D array of finite numbers in a base64 .npy file, or None and an error naming
    the field. The header is read and checked against the data's length before anything is
    allocated, so a header that claims a huge shape costs nothing; nothing is unpickled."""
    where = (*loc, "npy")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        errors.append(field_error(where, "expected base64 (RFC 4648) of a .npy file", "npy"))
        return None
    stream = io.BytesIO(raw)
    try:
        version = npy_format.read_magic(stream)
        read_header = {
            (1, 0): npy_format.read_array_header_1_0,
            (2, 0): npy_format.read_array_header_2_0,
        }[version]
        shape, fortran_order, dtype = read_header(stream)
    except (ValueError, KeyError, EOFError, SyntaxError, TypeError):
        message = "expected a .npy file (format 1.0 or 2.0, as numpy.save writes)"
        errors.append(field_error(where, message, "npy"))
        return None
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in "fiu":
        message = f"expected an array of floats or integers, got dtype {dtype.str!r}"
        errors.append(field_error(where, message, "npy"))
        return None
    if len(shape) != 2 or shape[0] < 1 or shape[1] < 1:
        message = (
            f"expected a 2-D array with at least one row (rows are samples), got shape {shape}"
        )
        errors.append(field_error(where, message, "npy"))
        return None
    data = memoryview(raw)[stream.tell() :]
    needed = shape[0] * shape[1] * dtype.itemsize
    if len(data) != needed:
        message = (
            f"the header's shape {shape} and dtype {dtype.str!r} need {needed} bytes of data, "
            f"the file has {len(data)}"
        )
        errors.append(field_error(where, message, "npy"))
        return None
    array = np.frombuffer(data, dtype=dtype)
    array = array.reshape(shape[::-1]).T if fortran_order else array.reshape(shape)
    if dtype.kind == "f":
        finite = np.isfinite(array).all(axis=1)
        if not finite.all():
            row = int(np.argmin(finite))
            errors.append(
                field_error((*loc, row), "expected finite numbers, found NaN or infinity", "npy")
            )
            return None
    return array


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


def parameter_count(structure: list[int]) -> int:
    return sum((n + 1) * m for n, m in zip(structure[:-1], structure[1:]))


def _check_budget(job: JobCreate, samples: int, settings: Settings, errors: list[dict]) -> None:
    """``samples``: the rows trained on and the rows validated on, every epoch."""
    cost = samples * job.epochs * parameter_count(job.structure)
    if cost > settings.max_job_cost:
        errors.append(
            field_error(
                ("epochs",),
                f"the job's compute cost is {cost:.3g} (rows trained and validated on {samples} "
                f"x epochs {job.epochs} x "
                f"parameters {parameter_count(job.structure)}), over the budget of "
                f"{settings.max_job_cost:.3g}; train fewer epochs, a smaller network or less data",
                "budget_exceeded",
            )
        )


def _spec(job: JobCreate, arrays, settings: Settings, seed: int, dataset, val_dataset) -> dict:
    """The job as stored: everything but the data, with defaults and the seed made explicit."""
    options = job.options.model_dump(exclude={"validation"})
    if options["max_runtime_seconds"] is None:
        options["max_runtime_seconds"] = settings.max_runtime_seconds
    data = job.data
    spec = {
        "structure": job.structure,
        "epochs": job.epochs,
        "learning_rate": job.learning_rate,
        "seed": seed,
        "options": options,
    }
    if isinstance(data, BatchData):
        layout = {
            "form": "batches",
            "batch_size": None,
            "shuffle": False,
            "batches": len(arrays["batch_sizes"]),
            "samples": len(arrays["inputs"]),
        }
    elif isinstance(data, DatasetData):
        held = 0
        if job.options.validation_split is not None:
            info = dataset.members["targets"]
            held = held_out_count(
                job.options.validation_split, dataset.samples, info.get("class_counts")
            )
        samples = dataset.samples - held
        layout = {
            "form": "dataset",
            "dataset_id": dataset.id,
            "dataset_sha256": dataset.sha256,
            "batch_size": data.batch_size,
            "shuffle": data.shuffle,
            "batches": -(-samples // data.batch_size),
            "samples": samples,
            "validation_samples": held,
        }
    else:
        layout = {
            "form": "arrays",
            "batch_size": data.batch_size,
            "shuffle": data.shuffle,
            "batches": -(-len(arrays["inputs"]) // data.batch_size),
            "samples": len(arrays["inputs"]),
        }
    layout.setdefault("validation_samples", len(arrays.get("val_inputs", ())))
    if val_dataset is not None:
        spec["validation"] = {"dataset_id": val_dataset.id, "dataset_sha256": val_dataset.sha256}
        layout["validation_samples"] = val_dataset.samples
    spec["data"] = layout
    return spec
