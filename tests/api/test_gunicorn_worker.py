"""The API's gunicorn worker stops on a SIGINT/SIGQUIT whenever it arrives, and once; it
serves a request that arrived on a kept-alive connection as its keep-alive ran out."""

from __future__ import annotations

import selectors
import signal
import socket
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from types import SimpleNamespace

import pytest

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


class KeptAlive:
    """A kept-alive connection as gunicorn's threaded worker holds it: a socket and a deadline."""

    def __init__(self, sock):
        self.sock, self.timeout, self.closed = sock, time.monotonic() - 1, False  # ran out

    def close(self):
        self.closed = True
        self.sock.close()


@pytest.fixture
def kept_alive():
    """A worker's poller holding one kept-alive connection whose keep-alive time ran out, the
    client's end of it, and the connections the worker handed to its threads."""
    server, client = socket.socketpair()
    worker = ProblemWorker.__new__(ProblemWorker)
    worker.poller, worker.nr_conns = selectors.DefaultSelector(), 1
    conn = KeptAlive(server)
    worker.keepalived_conns = deque([conn])
    served = []
    worker.enqueue_req = served.append
    worker.poller.register(
        server, selectors.EVENT_READ, partial(worker.on_client_socket_readable, conn)
    )
    yield worker, conn, client, served
    client.close()
    worker.poller.close()


def test_a_request_that_arrived_as_the_keep_alive_ran_out_is_served(kept_alive):
    worker, conn, client, served = kept_alive
    client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # after the wait for events
    worker.murder_keepalived()
    assert served == [conn] and not conn.closed
    assert not worker.keepalived_conns


def test_an_idle_connection_is_closed_when_its_keep_alive_runs_out(kept_alive):
    worker, conn, client, served = kept_alive
    worker.murder_keepalived()
    assert conn.closed and served == []
    assert worker.nr_conns == 0 and client.recv(1) == b""  # the client sees the close
