"""Refusals of the use cases themselves, beside the store's errors: the reason to change is
a new kind of refusal a use case makes before or while it stores."""

from __future__ import annotations


class Refused(Exception):
    """A field of the request names something the use case cannot act on: ``loc`` is the
    field's place in the request, ``kind`` the rule it breaks (as the API's field errors)."""

    def __init__(self, loc: tuple, message: str, kind: str):
        super().__init__(message)
        self.loc, self.message, self.kind = loc, message, kind


class StorageQuotaExceeded(Exception):
    """What the request would store does not fit in MAX_JOB_STORAGE_BYTES."""

    def __init__(self, used: int, needed: int, limit: int, what: str, made_of: str):
        super().__init__(
            f"the tenant's jobs store {used} bytes and {what} needs about {needed} ({made_of}),"
            f" over the quota of {limit} (MAX_JOB_STORAGE_BYTES); delete finished jobs first"
        )
        self.used, self.needed, self.limit = used, needed, limit


class NotContinuable(Exception):
    """The job cannot be continued from its final state (it has not ended, it failed, or
    it kept no state); the message says why."""
