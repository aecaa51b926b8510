"""The Celery application object for the command line: ``celery -A worker.app worker``.
The reason to change is the worker app's pool or the tasks it registers."""

from messaging.celery_app import make_celery

app = make_celery()
# prefork, maintained every half second (worker/pool.py): a dead process is reported within a
# second of its death
app.conf.worker_pool = "worker.pool:TrainingPool"

from . import tasks  # noqa: E402,F401  (registers the tasks on this app)
