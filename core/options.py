"""Named parameter sets, such as an optimizer or a schedule, and their plain-dict form.

``{"name": "adam", "beta1": 0.9, ...}`` is what a JSON job spec stores; ``from_dict`` turns it
into the class registered under that name, checking every parameter, and ``to_dict`` gives
it back with every parameter spelled out. A ``ValueError`` names the field as a path
(``optimizer.beta1``) and says what was expected. The reason to change is how a named parameter
set is read, checked or written.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

import numpy as np

T = TypeVar("T", bound="Options")


@functools.cache
def _required(cls: type) -> tuple[str, ...]:
    signature = inspect.signature(cls.__init__)
    empty = inspect.Parameter.empty
    return tuple(p for p in cls.parameters if signature.parameters[p].default is empty)


class Options:
    """Base class: subclasses set ``name`` and ``parameters`` and check them in __init__."""

    kind: ClassVar[str] = ""  # the field that holds these options: "optimizer", "schedule"
    name: ClassVar[str] = ""
    parameters: ClassVar[tuple[str, ...]] = ()  # constructor keywords, in to_dict order

    @classmethod
    def registry(cls) -> Mapping[str, type[Options]]:
        """Every class of this kind by name (``OPTIMIZERS``, ``SCHEDULES``)."""
        raise NotImplementedError

    @classmethod
    def from_dict(cls: type[T], spec) -> T:
        """An instance from ``{"name": ..., **parameters}`` (``to_dict``'s form), a name, or
        an instance (copied), every parameter checked. On a named class, say ``Adam``, the
        dict must name that class."""
        options = from_spec(cls.kind, cls.registry(), spec)
        if cls.name and type(options) is not cls:
            raise ValueError(f"{cls.kind}.name must be {cls.name!r} here, got {options.name!r}")
        return options

    @classmethod
    def required(cls) -> list[str]:
        """The parameters without a default (read from the signature once per class)."""
        return list(_required(cls))

    def to_dict(self) -> dict[str, Any]:
        """The name and every parameter, as plain JSON values."""
        return {"name": self.name, **{p: getattr(self, p) for p in self.parameters}}

    def copy(self: T) -> T:
        """The same parameters, with fresh state."""
        return type(self)(**{p: getattr(self, p) for p in self.parameters})

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.to_dict() == self.to_dict()

    def __hash__(self) -> int:
        return hash((type(self), tuple(self.to_dict().items())))

    def __repr__(self) -> str:
        args = ", ".join(f"{p}={getattr(self, p)!r}" for p in self.parameters)
        return f"{type(self).__name__}({args})"


def from_spec(kind: str, registry: Mapping[str, type[T]], spec) -> T:
    """An instance from an instance (copied), a name, or a dict with a "name" key."""
    if isinstance(spec, Options) and spec.kind == kind:
        return spec.copy()
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping):
        raise ValueError(f"{kind} must be a name or a dict with a 'name' key, got {spec!r}")
    params = dict(spec)
    name = params.pop("name", None)
    cls = registry.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"{kind}.name must be one of {sorted(registry)}, got {name!r}")
    unknown = sorted(str(key) for key in set(params) - set(cls.parameters))
    if unknown:
        raise ValueError(
            f"{kind}: {name} takes no parameter {', '.join(unknown)}; "
            f"its parameters are {', '.join(cls.parameters) or 'none'}"
        )
    missing = [p for p in cls.required() if p not in params]
    if missing:
        raise ValueError(f"{kind}.{missing[0]} is required for {name}")
    return cls(**params)


# ---------------------------------------------------------------------- checks


def real(
    field: str,
    value,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a float, finite and within the bounds; else a ValueError naming ``field``."""
    interval = (
        f"{'(' if low_open else '['}{'-inf' if low is None else low}, "
        f"{'inf' if high is None else high}{')' if high_open or high is None else ']'}"
    )
    is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not is_number or not math.isfinite(value):
        raise ValueError(f"{field} must be a finite number in {interval}, got {value!r}")
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        raise ValueError(f"{field} must lie in {interval}, got {value!r}")
    return float(value)


def whole(field: str, value, low: int) -> int:
    """``value`` as an int of at least ``low``; a float such as 3.0 is refused."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
        raise ValueError(f"{field} must be a whole number of at least {low}, got {value!r}")
    return int(value)


def boolean(field: str, value) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{field} must be true or false, got {value!r}")
    return bool(value)


def choice(field: str, value, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{field} must be one of {list(allowed)}, got {value!r}")
    return value
