"""/openapi.json (generated from the operations' models) and interactive docs at /docs."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask_swagger_ui import get_swaggerui_blueprint

from .openapi import build_document

bp = Blueprint("openapi", __name__)

DESCRIPTION = (
    "Train neural networks over HTTP. Submit a job (structure, data, epochs, learning rate), "
    "poll it, read its metrics and model, predict. Errors are RFC 9457 problem details."
)


@bp.get("/openapi.json")
def openapi_json():
    document = current_app.extensions.get("openapi")
    if document is None:
        document = build_document(
            current_app, title="backprop-jobs", version="1.0.0", description=DESCRIPTION
        )
        current_app.extensions["openapi"] = document
    return jsonify(document)


docs = get_swaggerui_blueprint("/docs", "/openapi.json", config={"app_name": "backprop-jobs"})
