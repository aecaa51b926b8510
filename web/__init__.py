"""The dashboard: pages for people at /, on top of the API (``create_app`` is the whole
site, API and dashboard, as served). The reason to change is how the dashboard is wired
into the application: its session cookie and its CSRF protection."""

from __future__ import annotations

from flask import Flask

import api
from backprop.settings import Settings, get_settings

from . import job_pages, sweep_pages  # noqa: F401  (their routes join bp)
from .pages import bp, csrf


def create_app(settings: Settings | None = None) -> Flask:
    """The API (``api.create_app``) with the dashboard's pages: what gunicorn serves."""
    settings = settings or get_settings()
    app = api.create_app(settings)
    init_app(app, settings)
    return app


def init_app(app: Flask, settings: Settings) -> None:
    """The pages and their CSRF protection; the session cookie they sign in with is the
    API's (``api.auth.init_session``), which reads with it too."""
    app.config.update(
        # only the dashboard's forms are checked: the API takes bearer tokens, not cookies,
        # for anything that changes state
        WTF_CSRF_CHECK_DEFAULT=False,
        WTF_CSRF_TIME_LIMIT=None,  # a form's token lives as long as the session
    )
    csrf.init_app(app)
    app.register_blueprint(bp)
