"""What a request handler may use: settings, the database, the dispatcher, the model cache.
The reason to change is a resource that request handlers share."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from threading import Lock

from flask import current_app, g

from backprop.settings import Settings
from core import Network
from messaging.dispatch import Dispatcher
from service.context import Context
from store.db import Database

from .slots import Slots
from .token_cache import FailureLimit, KnownTokens, TokenCache
from .watch import JobWatcher


class ModelCache:
    """Trained networks by job id (a finished job's model never changes), least recent out,
    at most ``max_bytes`` of parameters in all; a network larger than that is not kept."""

    def __init__(self, max_bytes: int = 256 * 2**20):
        self.max_bytes, self._models, self._lock = max_bytes, OrderedDict(), Lock()
        self._bytes = 0

    def get(self, job_id: str, load) -> Network:
        with self._lock:
            if job_id in self._models:
                self._models.move_to_end(job_id)
                return self._models[job_id][0]
        network = Network.from_arrays(load())
        size = sum(w.nbytes + b.nbytes for w, b in zip(network.W_n, network.B_n))
        with self._lock:
            if size <= self.max_bytes and job_id not in self._models:
                self._models[job_id] = (network, size)
                self._bytes += size
                while self._bytes > self.max_bytes:
                    _, (_, dropped) = self._models.popitem(last=False)
                    self._bytes -= dropped
        return network

    def forget(self, job_id: str) -> None:
        with self._lock:
            kept = self._models.pop(job_id, None)
            if kept is not None:
                self._bytes -= kept[1]


@dataclass
class Services:
    settings: Settings
    db: Database
    dispatcher: Dispatcher
    watcher: JobWatcher
    tokens: TokenCache
    known_tokens: KnownTokens
    waits: Slots
    transfers: Slots
    auth_failures: FailureLimit | None = None  # set once the rate limiter exists
    models: ModelCache = field(default_factory=ModelCache)  # create_app sizes it


def services() -> Services:
    return current_app.extensions["backprop"]


def context() -> Context:
    """The use cases' context for the request's tenant."""
    s = services()
    return Context(s.settings, s.db, s.dispatcher, g.tenant)
