"""The tenant's own account: its storage use and quotas, and its webhook signing secret.
The reason to change is a field of the account's answers."""

from __future__ import annotations

from pydantic import Field

from .common import Out


class StoredOut(Out):
    count: int
    bytes: int


class UsageOut(Out):
    jobs: StoredOut = Field(description="Jobs, with their inline data, checkpoints and models")
    datasets: StoredOut
    dataset_quota_bytes: int = Field(description="MAX_DATASET_STORAGE_BYTES")
    job_quota_bytes: int = Field(
        description="MAX_JOB_STORAGE_BYTES: what the tenant's jobs may store (a submit that "
        "would pass it gets 413)"
    )


class WebhookSecretOut(Out):
    secret: str = Field(
        description="The tenant's new signing secret: X-Backprop-Signature is v1= and the "
        "hex HMAC-SHA256 of '<X-Backprop-Timestamp>.<body>' with it"
    )
