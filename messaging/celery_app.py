"""The Celery application's configuration: Redis broker, settings fit for long training
tasks, and the tasks' names (the API sends them, the workers register them).
The reason to change is a Celery setting or a task's name.

Celery is our distributed engine and Redis only carries hints ("job X may be ready"): the
database decides who trains what (see ``store/jobs.py``). Every setting below says why. The
workers run the app of ``worker/app.py``, which adds their pool and their tasks:

    celery -A worker.app worker -Q training,celery --pool prefork --concurrency 1
    celery -A worker.app beat
"""

from __future__ import annotations

import warnings

from celery import Celery
from celery.exceptions import CPendingDeprecationWarning

from backprop.settings import Settings, get_settings

from .broker import keepalive_options


def silence_the_connection_loss_warning() -> None:
    """Celery 5.x warns at every broker connection loss while
    worker_cancel_long_running_tasks_on_connection_loss is False, because its default becomes
    True in Celery 6. False is our choice, made explicitly in ``celery_config`` and explained
    there, so the warning says nothing an operator can act on: this silences it, and only it.
    Called once the worker runs (worker_ready): Celery's logging setup adds an "always" filter
    for its warnings at start-up, which would take precedence over an earlier one."""
    warnings.filterwarnings(
        "ignore",
        message=r"\s*In Celery 5\.1 we introduced an optional breaking change",
        category=CPendingDeprecationWarning,
    )


# Redis has no message priorities of its own: kombu keeps one list per priority step and
# takes from the lowest number first. New jobs go in at NEW_PRIORITY, jobs that already ran
# and lost their worker at RESUME_PRIORITY, so a resumed job never waits behind the queue.
RESUME_PRIORITY, NEW_PRIORITY = 0, 5
TRAIN_TASK = "backprop.train"
RECONCILE_TASK = "backprop.reconcile"
DELIVER_TASK = "backprop.deliver_callback"
DELIVER_SWEEP_TASK = "backprop.deliver_sweep_callback"


def celery_config(settings: Settings) -> dict:
    # Bounded timeouts on every Redis call: a publish against a dead or hung broker fails in
    # about a second (the API then answers 202 anyway and the reconciler sends the task later)
    # instead of blocking a request for minutes.
    timeouts = {
        "socket_connect_timeout": settings.broker_timeout_seconds,
        # a broker that accepts connections but never answers must not block forever
        "socket_timeout": 2 * settings.broker_timeout_seconds,
        # a broker gone silent (a cut network, no reset): TCP keepalives end an idle
        # connection, and kombu drops a BRPOP whose reply is overdue by more than
        # health_check_interval, so a cut-off worker consumes again within about
        # 1 + 2 x TCP_TIMEOUT_SECONDS of the heal, whatever the cut's length
        **keepalive_options(settings),
        "health_check_interval": max(1, int(settings.tcp_timeout_seconds)),
        "max_retries": 1,
        "interval_start": 0,
        "interval_step": 0.2,
        "interval_max": 0.2,
    }
    hard_limit = settings.max_runtime_seconds + 300
    return {
        "broker_url": settings.redis_url,
        "broker_connection_timeout": settings.broker_timeout_seconds,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            **timeouts,
            # Redis redelivers a message nobody acknowledged after this long. The defaults keep
            # it above the hard time limit below (7200 s > 3600 + 300 s), so a task is never
            # redelivered while it may still run; if an operator lowers it, a redelivery is
            # still harmless: the claim in store/jobs.py refuses a job under a live lease.
            "visibility_timeout": settings.visibility_timeout,
            # how often a worker sweeps for messages past the visibility timeout (kombu 5.7)
            "unacked_restore_interval": settings.unacked_restore_seconds,
            "unacked_restore_throttle": 1,
            "priority_steps": [RESUME_PRIORITY, NEW_PRIORITY],
            "queue_order_strategy": "priority",
        },
        "task_default_priority": NEW_PRIORITY,
        "task_publish_retry_policy": {
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.2,
        },
        # Training tasks go to their own queue so that short tasks (the reconciler) never
        # wait behind hours of training, and training workers can be scaled on their own.
        # Deliveries have a queue of their own too, run concurrently by a worker of their
        # own: a slow receiver delays neither the reconciler nor other deliveries.
        "task_routes": {
            TRAIN_TASK: {"queue": settings.training_queue},
            DELIVER_TASK: {"queue": settings.callbacks_queue},
            DELIVER_SWEEP_TASK: {"queue": settings.callbacks_queue},
        },
        "task_default_queue": settings.control_queue,
        # Acknowledge after the task ran: a worker that dies mid-task leaves its message to be
        # redelivered (after the visibility timeout). A pool child killed under a living worker
        # has its message rejected and requeued at once (task_reject_on_worker_lost); the new
        # delivery meets the dead child's live lease and is ignored, and the reconciler resends
        # the job once that lease expires.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # Prefetch one: a worker busy for an hour must not sit on messages others could run.
        "worker_prefetch_multiplier": 1,
        # Training processes per worker (WORKER_CONCURRENCY, else one per core); each gets
        # its share of the cores for BLAS (worker/tasks.py)
        "worker_concurrency": settings.worker_processes,
        # Celery can kill every running late-ack task when the broker connection drops, because
        # their messages will be redelivered. Here a redelivery is harmless (the claim refuses
        # a job under a live lease), while killing would throw away up to CHECKPOINT_SECONDS
        # of training and an attempt at every Redis blip: keep them running. (Celery warns
        # about this value at every connection loss: silence_the_connection_loss_warning.)
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # On SIGTERM a worker gets this long to finish (cooperatively) before it is stopped;
        # the job's lease and checkpoints make an unfinished job resume elsewhere.
        "worker_soft_shutdown_timeout": 10.0,
        "worker_enable_soft_shutdown_on_idle": True,
        # Backstops below the visibility timeout: the worker stops a job itself at its
        # max_runtime_seconds; these only catch a task stuck outside the training loop.
        "task_soft_time_limit": settings.max_runtime_seconds + 120,
        "task_time_limit": hard_limit,
        # Replace a pool process that grew past this (KiB): data sets are large, leaks are not.
        "worker_max_memory_per_child": settings.worker_max_memory_per_child,
        # Results live in our database, not in Celery's backend.
        "task_ignore_result": True,
        # How long the parent waits for a dead pool process's result before it reports the
        # WorkerLostError (10 s by default). There is no result to wait for (above), and the
        # report is what releases the dead process's job at once (tasks.TrainRequest).
        "worker_lost_wait": 0.2,
        "worker_hijack_root_logger": False,
        "beat_schedule": {
            "reconcile": {"task": RECONCILE_TASK, "schedule": settings.reconcile_seconds},
        },
    }


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("backprop")
    app.conf.update(celery_config(settings))
    return app
