"""Sending "job X may be ready" to the training queue. The message carries the id only."""

from __future__ import annotations

from backprop.settings import Settings

from .celery_app import NEW_PRIORITY, RESUME_PRIORITY, TRAIN_TASK, make_celery


class Dispatcher:
    def __init__(self, settings: Settings):
        self.celery = make_celery(settings)
        self.queue = settings.training_queue
        self.timeout = settings.broker_timeout_seconds

    def send(self, job_id: str, *, first: bool = False) -> None:
        """Publish the task; raises (kombu's OperationalError) within about a second when the
        broker is down or hung. ``first``: a job that already ran and lost its worker goes
        ahead of every job that never started (the highest priority)."""
        self.celery.send_task(
            TRAIN_TASK,
            args=[job_id],
            queue=self.queue,
            retry=False,
            priority=RESUME_PRIORITY if first else NEW_PRIORITY,
        )

    def ping(self) -> None:
        """Raises when the broker cannot be reached."""
        with self.celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=self.timeout)
            connection.default_channel.client.ping()
