"""Talking to the broker: the Celery app's configuration and task names, sending "job X may be
ready" and callback deliveries (``dispatch``), and publishing "job X changed" (``notify``).

Both the API and the workers use it; it knows nothing of either (only the settings).
The reason to change is a new kind of message between the API and the workers.
"""
