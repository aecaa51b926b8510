"""Strangers that open connections and send their request a byte at a time, or half of it
and nothing more, hold no thread of the API: a tenant's requests are answered as fast
meanwhile (p99 under 250 ms, /healthz under 100 ms), and every connection whose headers never
end gets a 408 problem, which it can read (the server reads on briefly before it closes)."""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid

import requests

from api.gunicorn_worker import HEADER_SECONDS
from tests.conftest import make_token

STRANGERS = 200


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def timed(session: requests.Session, url: str, n: int, **kwargs) -> list[float]:
    seconds = []
    for _ in range(n):
        started = time.perf_counter()
        answer = session.get(url, timeout=5, **kwargs)
        seconds.append(time.perf_counter() - started)
        assert answer.status_code == 200, answer.text
    return seconds


def test_half_sent_requests_hold_no_thread_and_slow_headers_end_in_a_408(stack):
    host, port = stack.base.removeprefix("http://").split(":")
    strangers, dripping, stop = [], [], threading.Event()
    try:
        for _ in range(STRANGERS):
            sock = socket.create_connection((host, int(port)), timeout=5)
            sock.sendall(b"GET /v1/jobs HT")  # half a request line, then nothing
            strangers.append(sock)

        def drip(sock):
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000:
                if stop.wait(0.2):
                    return
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    return

        for _ in range(20):
            sock = socket.create_connection((host, int(port)), timeout=5)
            dripping.append(sock)
            threading.Thread(target=drip, args=(sock,), daemon=True).start()
        time.sleep(0.5)  # every stranger is in

        tenant = requests.Session()  # a tenant of its own: the others' rate limit is theirs
        token = make_token(stack.database_url, f"slow-{uuid.uuid4().hex[:8]}")
        headers = {"Authorization": f"Bearer {token}"}
        jobs = timed(tenant, f"{stack.base}/v1/jobs", 100, headers=headers)
        health = timed(requests.Session(), f"{stack.base}/healthz", 200)
        print(
            f"with {STRANGERS} half-sent requests and 20 dripping ones open: GET /v1/jobs p99 "
            f"{p99(jobs) * 1000:.1f} ms, /healthz p99 {p99(health) * 1000:.1f} ms"
        )
        assert p99(jobs) < 0.25 and p99(health) < 0.1

        # a dripping client's headers never end: past HEADER_SECONDS it is answered 408
        answers = []
        for sock in dripping:
            sock.settimeout(HEADER_SECONDS + 5)
            answer = b""
            try:
                while b"\r\n\r\n" not in answer:
                    part = sock.recv(4096)
                    if not part:
                        break
                    answer += part
            except OSError as exc:
                answer = repr(exc).encode()
            answers.append(answer[:40])
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers
    finally:
        stop.set()
        for sock in strangers + dripping:
            sock.close()


def _answers(sock: socket.socket, count: int, seconds: float = 5.0) -> list[bytes]:
    """The status lines of the first ``count`` answers read from the socket."""
    sock.settimeout(seconds)
    data = b""
    while data.count(b"HTTP/1.1 ") < count:
        part = sock.recv(65536)
        if not part:
            break
        data += part
    return re.findall(rb"HTTP/1\.1 [0-9]{3} [^\r]*", data)


def test_pipelined_and_half_closed_requests_on_a_kept_alive_connection_are_answered(stack):
    host, port = stack.base.removeprefix("http://").split(":")
    one = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(one + one + one)  # three requests in one write
        assert _answers(sock, 3) == [b"HTTP/1.1 200 OK"] * 3
        assert time.monotonic() - started < 2.0  # none waited for a timeout
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(one)
        assert _answers(sock, 1) == [b"HTTP/1.1 200 OK"]
        sock.sendall(one)  # the next request on the kept-alive connection, then no more
        sock.shutdown(socket.SHUT_WR)
        assert _answers(sock, 1) == [b"HTTP/1.1 200 OK"]
