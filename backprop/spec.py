"""A job's spec: what the job trains and how, as the ``job`` row keeps it (its ``spec``
column), and the one derivation of how its data is cut (samples, batches, held-out
validation rows). The reason to change is a field of a job, or how its data is laid out.

Each part is a frozen dataclass that reads and writes the stored JSON unchanged:
``JobSpec.from_json(stored).to_json() == stored``, whatever version stored it. A row stored
before a key existed lacks it: the field reads as its default, and the key stays absent
when the spec is written back (``absent``). A key this version has no field for is kept as
it was (``extra``). So adding a training option is one line in ``TrainingOptions``.

A sweep's own spec is not one of these (``store.models.Sweep.spec`` stays JSON), but its
``base`` is a job spec's JSON, and so is each trial's (``tuning.sampling.trial_spec``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from functools import cache
from typing import Any, Self

from core import held_out_count
from core.optimizers import OPTIMIZERS
from core.workspace import parameter_count

_NESTED = "nested"  # metadata: the field's JSON is that record's
_OMITTED = "omitted"  # metadata: a None value is stored as no key at all


def _optional(nested: type | None = None):
    """A field stored only when it has a value (never as null)."""
    return field(default=None, metadata={_OMITTED: True, _NESTED: nested})


@dataclass(frozen=True, kw_only=True)
class _Record:
    """A JSON object with one key per field (the module's docstring says how keys that one
    version has and another lacks are kept)."""

    absent: frozenset[str] = field(default=frozenset(), repr=False)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def _stored_fields(cls) -> tuple:
        return _stored_fields(cls)[0]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        """The record of the stored JSON (copied: the spec shares nothing with ``data``)."""
        values, absent = {}, set()
        stored, names = _stored_fields(cls)
        for f in stored:
            if f.name in data:
                nested, value = f.metadata.get(_NESTED), data[f.name]
                if nested and value is not None:
                    values[f.name] = nested.from_json(value)
                else:  # JSON's scalars are immutable as they are
                    values[f.name] = value if type(value) in _SCALARS else copy.deepcopy(value)
            elif not f.metadata.get(_OMITTED) and f.default is not MISSING:
                absent.add(f.name)
        extra = {key: copy.deepcopy(value) for key, value in data.items() if key not in names}
        return cls(**values, absent=frozenset(absent), extra=extra)

    def to_json(self) -> dict[str, Any]:
        """The JSON as stored (a new object: changing it leaves the spec as it is)."""
        out = {}
        for f in self._stored_fields():
            value = getattr(self, f.name)
            if f.name in self.absent or (value is None and f.metadata.get(_OMITTED)):
                continue
            if isinstance(value, _Record):
                out[f.name] = value.to_json()
            else:
                out[f.name] = list(value) if isinstance(value, tuple) else copy.deepcopy(value)
        return out | copy.deepcopy(self.extra)


@cache
def _stored_fields(record: type) -> tuple[tuple, frozenset[str]]:
    """A record class's stored fields and their names (every spec read asks for them)."""
    stored = tuple(f for f in fields(record) if f.name not in ("absent", "extra"))
    return stored, frozenset(f.name for f in stored)


_SCALARS = frozenset({str, int, float, bool, type(None)})


@dataclass(frozen=True, kw_only=True)
class EarlyStop(_Record):
    """Stop when the monitored cost (validation if there is one) stops improving."""

    patience: int
    min_delta: float = 0.0


@dataclass(frozen=True, kw_only=True)
class TrainingOptions(_Record):
    """The core's training options, each with the request's default (``api.schemas.jobs.
    Options``); ``max_runtime_seconds`` is the service's limit when the request gave none."""

    activation: str = "sigmoid"
    output_activation: str = "sigmoid"
    cost: str = "quadratic"
    init: str = "normal"
    l2: float = 0.0
    dtype: str = "float64"
    early_stopping: EarlyStop | None = field(default=None, metadata={_NESTED: EarlyStop})
    validation_split: float | None = None
    max_runtime_seconds: int | None = None
    verify_gradients: bool = False
    # how the job steps (core.optimizers, core.schedules): absent, the seed's plain SGD at
    # the constant learning rate, without clipping
    optimizer: dict | None = _optional()
    schedule: dict | None = _optional()
    clip_norm: float | None = _optional()


@dataclass(frozen=True, kw_only=True)
class DataLayout(_Record):
    """How the training data is cut: ``form`` is batches (explicit mini-batches), arrays
    (inline rows) or dataset (a stored data set, ``dataset_id``). ``samples`` are the rows
    trained on, after any held out for validation; ``validation_samples`` the rows validated
    on. A job's layout is made by ``for_batches``, ``for_arrays`` or ``for_dataset``."""

    form: str
    dataset_id: str | None = _optional()
    dataset_sha256: str | None = _optional()
    batch_size: int | None  # None: the explicit batches' own sizes
    shuffle: bool
    batches: int  # mini-batches per epoch
    samples: int
    validation_samples: int = 0

    @classmethod
    def for_batches(cls, batch_sizes: Sequence[int], *, validation_samples: int) -> DataLayout:
        """Explicit mini-batches, trained in their order every epoch."""
        return cls(
            form="batches",
            batch_size=None,
            shuffle=False,
            batches=len(batch_sizes),
            samples=sum(batch_sizes),
            validation_samples=validation_samples,
        )

    @classmethod
    def for_arrays(
        cls, samples: int, *, batch_size: int, shuffle: bool, validation_samples: int
    ) -> DataLayout:
        """Inline rows (``samples`` of them after any split) cut into batches of batch_size."""
        return cls(
            form="arrays",
            batch_size=batch_size,
            shuffle=shuffle,
            batches=_batches(samples, batch_size),
            samples=samples,
            validation_samples=validation_samples,
        )

    @classmethod
    def for_dataset(
        cls,
        dataset_id: str,
        sha256: str,
        rows: int,
        *,
        batch_size: int,
        shuffle: bool,
        split: float | None,
        class_counts: Sequence[int] | None = None,
        validation_samples: int | None = None,
    ) -> DataLayout:
        """A stored data set of ``rows`` rows (per class: ``class_counts``, for one-hot
        targets). ``split`` holds out that fraction of them for validation, as
        ``core.validation_rows`` does; ``validation_samples`` is a validation data set's
        rows instead (a job has a split or a validation data set, not both)."""
        held = held_out_count(split, rows, class_counts) if split else 0
        samples = rows - held
        return cls(
            form="dataset",
            dataset_id=dataset_id,
            dataset_sha256=sha256,
            batch_size=batch_size,
            shuffle=shuffle,
            batches=_batches(samples, batch_size),
            samples=samples,
            validation_samples=held if validation_samples is None else validation_samples,
        )


def _batches(samples: int, batch_size: int) -> int:
    return -(-samples // batch_size)  # the last batch may be short


@dataclass(frozen=True, kw_only=True)
class StoredSet(_Record):
    """A stored data set the job validates on, with the digest it had at submit."""

    dataset_id: str
    dataset_sha256: str


@dataclass(frozen=True, kw_only=True)
class SweepTrial(_Record):
    """A sweep's trial: its sweep, its number there, and what the worker judges it by (the
    sweep's objective and ASHA's settings, as the sweep's spec holds them)."""

    id: str
    trial: int
    objective: dict[str, Any]
    early_stopping: dict[str, Any] | None = _optional()
    # with seed replicates: its configuration (1, 2, ...) and its replicate there (0, 1, ...)
    configuration: int | None = _optional()
    replicate: int | None = _optional()


@dataclass(frozen=True, kw_only=True)
class JobSpec(_Record):
    """A job as stored: everything but its data, with every default and the seed explicit."""

    structure: tuple[int, ...]  # layer sizes, input first
    epochs: int
    learning_rate: float
    seed: int
    options: TrainingOptions = field(metadata={_NESTED: TrainingOptions})
    validation: StoredSet | None = _optional(StoredSet)  # a validation data set
    data: DataLayout = field(metadata={_NESTED: DataLayout})
    callback_url: str | None = _optional()
    init_from: str | None = _optional()  # the job whose weights it starts from
    continued_from: str | None = _optional()  # the job whose final state it carries on from
    sweep: SweepTrial | None = _optional(SweepTrial)  # a sweep's trial

    def __post_init__(self):
        object.__setattr__(self, "structure", tuple(self.structure))

    @property
    def parameters(self) -> int:
        """The network's weights and biases."""
        return parameter_count(self.structure)

    @property
    def val_dataset_id(self) -> str | None:
        """The stored data set it validates on, if any (its training one: ``data.dataset_id``)."""
        return self.validation.dataset_id if self.validation is not None else None


def stored_copies(optimizer: Mapping | None, init_from: bool) -> int:
    """How many model-sized arrays a job stores: its model, its checkpoint's weights and
    its optimizer's state (``core.optimizers``: none for sgd, one buffer for momentum, two
    for adam), and the start weights copied from ``init_from``."""
    name = (optimizer or {}).get("name", "sgd")
    return 2 + len(OPTIMIZERS[name].buffers) + (1 if init_from else 0)
