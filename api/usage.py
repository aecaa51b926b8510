"""/v1/usage: what the tenant stores, against its quota.
The reason to change is what the usage answer reports."""

from __future__ import annotations

from flask import Blueprint, g

from store import jobs

from .openapi import operation
from .schemas.account import StoredOut, UsageOut
from .services import services
from .views import json_response

bp = Blueprint("usage", __name__, url_prefix="/v1/usage")


@bp.get("")
@operation("getUsage", responses={200: UsageOut})
def get_usage():
    """Jobs and data sets the tenant stores: how many, and their bytes."""
    s = services()
    with s.db.reading() as session:
        used = jobs.usage(session, g.tenant)
    view = UsageOut(
        jobs=StoredOut(**used["jobs"]),
        datasets=StoredOut(**used["datasets"]),
        dataset_quota_bytes=s.settings.max_dataset_storage_bytes,
        job_quota_bytes=s.settings.max_job_storage_bytes,
    )
    return json_response(view)
