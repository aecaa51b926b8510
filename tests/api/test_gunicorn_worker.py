"""The API's gunicorn worker stops on the first SIGINT/SIGQUIT, whatever follows it."""

from __future__ import annotations

import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

from api.gunicorn_worker import ProblemWorker


def test_a_second_quit_signal_during_the_first_does_not_hang_the_worker():
    worker = ProblemWorker.__new__(ProblemWorker)  # the handler's state only, no arbiter
    worker.alive, worker.cfg = True, SimpleNamespace(worker_int=lambda w: None)
    worker.tpool = pool = ThreadPoolExecutor(1)
    shutdown = pool.shutdown

    def shutdown_hit_by_a_signal(wait=True, **kwargs):
        # the second signal's handler runs while the first holds the pool's shutdown lock
        with pool._shutdown_lock:
            worker.handle_quit(signal.SIGQUIT, None)
        shutdown(wait=wait, **kwargs)

    pool.shutdown = shutdown_hit_by_a_signal
    exits = []

    def first_signal():
        try:
            worker.handle_quit(signal.SIGINT, None)
        except SystemExit as exc:
            exits.append(exc.code)

    handler = threading.Thread(target=first_signal, daemon=True)
    handler.start()
    handler.join(timeout=10)
    assert not handler.is_alive(), "the handler waits forever for the shutdown lock"
    assert exits == [0] and worker.alive is False
