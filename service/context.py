"""What a use case acts with: the reason to change is a new shared resource of use cases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backprop.settings import Settings
from store.db import Database


@dataclass(frozen=True)
class Context:
    settings: Settings
    db: Database
    dispatcher: Any  # messaging's Dispatcher: sends the task messages that carry ids
    tenant: str


@dataclass(frozen=True)
class Idempotency:
    """An Idempotency-Key and the hash of the request body it came with."""

    key: str
    request_hash: str
