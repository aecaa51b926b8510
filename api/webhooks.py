"""/v1/webhooks: the tenant's secret that signs its jobs' callbacks.
The reason to change is how the signing secret is shown or rotated."""

from __future__ import annotations

from flask import Blueprint, g

from store import webhooks

from .openapi import operation
from .schemas.account import WebhookSecretOut
from .services import services
from .views import json_response

bp = Blueprint("webhooks", __name__, url_prefix="/v1/webhooks")


@bp.post("/secret")
@operation("rotateWebhookSecret", responses={200: WebhookSecretOut})
def rotate_secret():
    """Make a new signing secret for the tenant's callbacks and show it (the old one stops)."""
    with services().db.session() as session:
        secret = webhooks.secret_for(session, g.tenant, rotate=True)
    return json_response(WebhookSecretOut(secret=secret))
