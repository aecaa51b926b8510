"""What a request handler may use: settings, the database, the dispatcher, the model cache."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from threading import Lock
from typing import TYPE_CHECKING

from flask import current_app

from backprop.settings import Settings
from core import Network
from store.db import Database
from worker.dispatch import Dispatcher

from .watch import JobWatcher

if TYPE_CHECKING:
    from .auth import FailureLimit, KnownTokens, TokenCache


class ModelCache:
    """Trained networks by job id (a finished job's model never changes), least recent out."""

    def __init__(self, size: int = 16):
        self.size, self._models, self._lock = size, OrderedDict(), Lock()

    def get(self, job_id: str, load) -> Network:
        with self._lock:
            if job_id in self._models:
                self._models.move_to_end(job_id)
                return self._models[job_id]
        network = Network.from_arrays(load())
        with self._lock:
            self._models[job_id] = network
            while len(self._models) > self.size:
                self._models.popitem(last=False)
        return network

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._models.pop(job_id, None)


@dataclass
class Services:
    settings: Settings
    db: Database
    dispatcher: Dispatcher
    watcher: JobWatcher
    tokens: TokenCache
    known_tokens: KnownTokens
    auth_failures: FailureLimit | None = None  # set once the rate limiter exists
    models: ModelCache = field(default_factory=ModelCache)


def services() -> Services:
    return current_app.extensions["backprop"]
