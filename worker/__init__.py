"""Celery workers: claim a job by id, train it with core, record everything in the database."""
