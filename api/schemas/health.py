"""The answers of the liveness and readiness probes.
The reason to change is a field of what a probe reports."""

from __future__ import annotations

from typing import Literal

from .common import Out


class Health(Out):
    status: Literal["ok"]


class Readiness(Out):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str]
