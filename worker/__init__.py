"""Celery workers: claim a job by id, train it with core, record everything in the database.
The reason to change is a new kind of work that the workers take on."""
