"""Celery's prefork pool, noticing a dead training process within half a second.

When a pool process dies, the parent reports ``WorkerLostError`` (which releases the dead
process's job at once: ``tasks.TrainRequest``) only when it next maintains the pool, after
``worker_lost_wait``. Celery maintains the pool every 5 seconds, so a kill waited up to 5 s
for its report; this pool does it every ``MAINTAIN_SECONDS`` (a look at a few processes).
Selected by ``worker_pool`` in ``worker/app.py``, so ``--pool prefork`` uses it.
The reason to change is how soon a dead training process is noticed.
"""

from __future__ import annotations

from celery.concurrency.asynpool import AsynPool
from celery.concurrency.prefork import TaskPool

MAINTAIN_SECONDS = 0.5


class _QuickAsynPool(AsynPool):
    @property
    def timers(self):
        return {self.maintain_pool: MAINTAIN_SECONDS}


class TrainingPool(TaskPool):
    Pool = _QuickAsynPool
