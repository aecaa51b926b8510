"""Slots for requests that hold a server thread for long: long polls and event streams
(waits), and large uploads and streamed downloads (transfers).

Each kind is counted per API process: at most ``per_process`` at once, so that the other
threads stay for ordinary requests, and at most ``per_tenant`` of one tenant's, so that one
tenant cannot take them all. A request past either gets 429 with Retry-After instead of a
thread. The reason to change is which requests hold a slot, or how many may.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from flask import current_app, g, request

from .problems import ApiProblem


@dataclass(frozen=True)
class Kind:
    what: str  # "long polls and event streams"
    process_setting: str  # the settings that bound it, named in the refusal
    tenant_setting: str
    slug: str
    advice: str  # what the client can do instead


WAITS = Kind(
    "long polls and event streams",
    "MAX_WAITS_PER_PROCESS",
    "MAX_WAITS_PER_TENANT",
    "too-many-waits",
    "poll without ?wait=",
)
TRANSFERS = Kind(
    "uploads and downloads",
    "MAX_TRANSFERS_PER_PROCESS",
    "MAX_TRANSFERS_PER_TENANT",
    "too-many-transfers",
    "wait for one to end",
)


class Slots:
    RETRY_AFTER = "2"

    def __init__(self, kind: Kind, per_process: int, per_tenant: int):
        self.kind, self.per_process, self.per_tenant = kind, per_process, per_tenant
        self._by_tenant: dict[str, int] = defaultdict(int)
        self._total = 0
        self._lock = threading.Lock()

    def take(self, tenant: str) -> Callable[[], None]:
        """A slot for the tenant, or ApiProblem 429; returns the function that gives it back
        (exactly once, however often it is called)."""
        kind = self.kind
        with self._lock:
            if self._by_tenant[tenant] >= self.per_tenant:
                detail = (
                    f"the tenant already holds {self.per_tenant} {kind.what} on this server "
                    f"process ({kind.tenant_setting}); {kind.advice}"
                )
            elif self._total >= self.per_process:
                detail = (
                    f"this server process already holds {self.per_process} {kind.what} "
                    f"({kind.process_setting}); retry, or {kind.advice}"
                )
            else:
                self._by_tenant[tenant] += 1
                self._total += 1
                detail = None
        if detail is not None:
            raise ApiProblem(429, detail, slug=kind.slug, headers={"Retry-After": self.RETRY_AFTER})
        given = threading.Event()

        def give_back() -> None:
            with self._lock:
                if given.is_set():
                    return
                given.set()
                self._by_tenant[tenant] -= 1
                self._total -= 1
                if not self._by_tenant[tenant]:
                    del self._by_tenant[tenant]

        return give_back

    def held(self) -> int:
        with self._lock:
            return self._total


#: a request body past this many bytes (or chunked) holds a transfer slot while it is read
LARGE_BODY_BYTES = 64 * 1024


def hold_transfer_for_large_bodies() -> None:
    """before_request, after the token and the rate limit: a request that sends a large
    body (an upload, a large submit) takes a transfer slot of its tenant, given back at the
    request's teardown, since a client may take its time sending it."""
    tenant = g.get("tenant")
    if tenant is None:
        return
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    if chunked or (request.content_length or 0) > LARGE_BODY_BYTES:
        g.give_back_transfer = current_app.extensions["backprop"].transfers.take(tenant)


def held_until_closed(slots: Slots) -> Callable[[], None]:
    """A slot for a response that holds it until it is closed (``call_on_close`` gives it
    back): should the request fail after the slot was taken (in a view, or an after_request
    hook, when Flask drops the response unclosed), its teardown gives it back instead."""
    give_back = slots.take(g.tenant)
    g.setdefault("slots_held", []).append(give_back)
    return give_back


def give_back_transfer(exc=None) -> None:
    """teardown_request: the slot of ``hold_transfer_for_large_bodies``, if one was taken;
    and, when the request failed, the slots of ``held_until_closed``."""
    give_back = g.pop("give_back_transfer", None)
    if give_back is not None:
        give_back()
    if exc is not None:
        for give_back in g.pop("slots_held", []):
            give_back()
