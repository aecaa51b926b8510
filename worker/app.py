"""The Celery application object for the command line: ``celery -A worker.app worker``."""

from .celery_app import make_celery

app = make_celery()

from . import tasks  # noqa: E402,F401  (registers the tasks on this app)
