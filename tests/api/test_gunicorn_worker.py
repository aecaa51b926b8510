"""The API's gunicorn worker stops on a SIGINT/SIGQUIT whenever it arrives, and once."""

from __future__ import annotations

import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

from api.gunicorn_worker import ProblemWorker


def quit_in_a_thread(worker, interrupted) -> list:
    """Run ``interrupted`` (the code a signal lands in) in a thread; the exit codes seen."""
    exits = []

    def run():
        try:
            interrupted()
        except SystemExit as exc:
            exits.append(exc.code)

    handler = threading.Thread(target=run, daemon=True)
    handler.start()
    handler.join(timeout=10)
    assert not handler.is_alive(), "the quit signal's handler waits forever for a lock"
    return exits


def worker_with_a_pool(worker_int=lambda w: None) -> ProblemWorker:
    worker = ProblemWorker.__new__(ProblemWorker)  # the handler's state only, no arbiter
    worker.alive, worker.cfg = True, SimpleNamespace(worker_int=worker_int)
    worker.tpool = ThreadPoolExecutor(1)
    return worker


def test_a_quit_signal_while_a_request_is_handed_to_the_pool_stops_the_worker():
    worker = worker_with_a_pool()

    def submitting():
        with worker.tpool._shutdown_lock:  # held by ThreadPoolExecutor.submit: the signal lands
            worker.handle_quit(signal.SIGQUIT, None)

    assert quit_in_a_thread(worker, submitting) == [0]
    assert worker.alive is False


def test_a_second_quit_signal_during_the_first_is_ignored():
    calls = []

    def worker_int(w):  # gunicorn's hook, run by the first handler: the second signal lands
        calls.append("int")
        w.handle_quit(signal.SIGINT, None)

    worker = worker_with_a_pool(worker_int)
    assert quit_in_a_thread(worker, lambda: worker.handle_quit(signal.SIGINT, None)) == [0]
    assert calls == ["int"]
