"""A consumer that takes one training message off the queue and never runs it, as a worker
killed whole right after fetching does: the test SIGKILLs it once it printed "fetched"."""

import sys
import time

from backprop.settings import get_settings
from messaging.celery_app import make_celery

settings = get_settings()
app = make_celery(settings)
with app.connection_for_read() as connection:
    queue = connection.SimpleQueue(app.amqp.queues[settings.training_queue])
    message = queue.get(timeout=30)  # fetched, never acknowledged
    print("fetched", message.headers.get("argsrepr"), flush=True)
    sys.stdout.flush()
    time.sleep(600)
