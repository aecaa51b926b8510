"""gunicorn's configuration of the API: its workers' metrics go to one directory, summed by
``GET /metrics`` in whichever worker answers it (``backprop.metrics``). The reason to change is
what gunicorn's master sets up or cleans up for its workers.

gunicorn --config python:api.gunicorn_conf ... 'web:create_app()'

Read once, by the master, before it forks a worker: the instance's directory is made (empty)
here under METRICS_DIR, and every worker inherits it. A worker that exits leaves its counts
in the sums; the master removes the directory when it stops.
"""

from __future__ import annotations

import shutil

from backprop import metrics
from backprop.settings import get_settings

_directory = metrics.instance_directory(get_settings().metrics_root, "api")
metrics.use_directory(_directory)


def child_exit(server, worker) -> None:
    metrics.process_died(worker.pid)


def on_exit(server) -> None:
    shutil.rmtree(_directory, ignore_errors=True)
