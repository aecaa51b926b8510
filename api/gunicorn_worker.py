"""gunicorn's threaded worker, answering the requests gunicorn itself refuses (a URL over its
request line limit, headers too large, a malformed request) with problem+json like the rest
of the API, instead of gunicorn's HTML page. The reason to change is how a connection is handled
below Flask: its refusals and slow clients.

gunicorn --worker-class api.gunicorn_worker.ProblemWorker --threads 32 'web:create_app()'
"""

from __future__ import annotations

import errno
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from gunicorn import util
from gunicorn.http import errors
from gunicorn.workers.base import Worker
from gunicorn.workers.gthread import _DEFER, ThreadWorker
from werkzeug.exceptions import RequestTimeout

from backprop.settings import Settings, get_settings

from .problems import PROBLEM_JSON

STATUSES = {
    errors.LimitRequestLine: (414, "URI Too Long", "the URL is too long: at most {limit} bytes"),
    errors.LimitRequestHeaders: (
        431,
        "Request Header Fields Too Large",
        "the request's headers are too large or too many",
    ),
}
DRAIN_BYTES = 1 << 20
# how long a closing connection is read from, so that what the client still sends does not
# reset the connection before it has read its answer
LINGER_SECONDS = 1.0
# a new connection's request line and headers must be in within this long; until then they
# are gathered without a thread (ProblemWorker.handle)
HEADER_SECONDS = 10.0
HEAD_BYTES = 64 * 1024  # past this much without the headers' end, gunicorn's parser decides
HEADERS_TOO_SLOW = f"the request line and headers did not arrive within {HEADER_SECONDS:g} s"
# gunicorn drains at most this much of a body the application did not read before it keeps a
# connection alive; past it, it closes the connection after the answer
UNREAD_BODY_BYTES = 64 * 1024
CLIENT_ERRORS = (
    errors.InvalidRequestLine,
    errors.InvalidRequestMethod,
    errors.InvalidHTTPVersion,
    errors.InvalidHeader,
    errors.InvalidHeaderName,
    errors.InvalidChunkSize,
    errors.ChunkMissingTerminator,
    errors.ObsoleteFolding,
)


def problem_response(status: int, reason: str, detail: str) -> bytes:
    request_id = uuid.uuid4().hex
    body = json.dumps(
        {
            "type": "about:blank",
            "title": reason,
            "status": status,
            "detail": detail,
            "request_id": request_id,
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        f"Content-Type: {PROBLEM_JSON}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-Request-Id: {request_id}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def leaves_body_unread(environ, status: str) -> bool:
    """Whether an answer may leave more of the request body unread than gunicorn drains: an
    error to a chunked body, or to a declared one past UNREAD_BODY_BYTES."""
    if int(status.split(" ", 1)[0]) < 400:
        return False
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return True
    length = environ.get("CONTENT_LENGTH") or "0"
    return length.isdigit() and int(length) > UNREAD_BODY_BYTES


@dataclass(frozen=True)
class Pacing:
    """Once the headers are in, a body (either way) must move: no read or write waits on
    the client longer than ``io_seconds``, and past the first ``grace_seconds`` spent
    waiting on it, the client must have kept up ``min_rate`` bytes a second (time the
    application spends between reads and writes is not counted). Event streams, which send
    little by design, are exempt from the rate; their slots and deadlines bound them."""

    io_seconds: float
    grace_seconds: float
    min_rate: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Pacing:
        return cls(
            settings.request_io_timeout_seconds,
            settings.transfer_grace_seconds,
            settings.min_transfer_bytes_per_second,
        )

    def too_slow(self, waited: float, moved: int) -> bool:
        """Whether a client that made the server wait ``waited`` seconds to move ``moved``
        bytes has fallen below the rate (after the grace)."""
        return waited > self.grace_seconds + moved / self.min_rate


class BodyTooSlow(RequestTimeout):
    """The client sends its request body too slowly: answered 408 when the application is
    reading it, the connection closed when gunicorn is (draining what was left unread)."""


class PacedReads:
    """A connection's socket reads (gunicorn's ``SocketUnreader.chunk``), timed: a client
    that sends nothing for IO_SECONDS, or falls below MIN_TRANSFER_RATE (``too_slow``), is
    refused with ``BodyTooSlow`` inside the read that finds it out, however large a read
    the application asked for. ``restart`` begins a new request's count."""

    def __init__(self, chunk, pacing: Pacing):
        self.chunk, self.pacing = chunk, pacing
        self.restart()

    def restart(self) -> None:
        self.waited, self.received = 0.0, 0

    def __call__(self, *args):
        started = time.monotonic()
        try:
            data = self.chunk(*args)
        except TimeoutError:
            detail = f"no part of the body arrived within {self.pacing.io_seconds:g} s"
            raise BodyTooSlow(detail) from None
        self.waited += time.monotonic() - started
        self.received += len(data)
        if self.pacing.too_slow(self.waited, self.received):
            raise BodyTooSlow(
                f"the body arrived at {self.received / self.waited:.0f} bytes a second, under "
                f"{self.pacing.min_rate} (after the first {self.pacing.grace_seconds:g} s)"
            )
        return data


class ClientTooSlow(OSError):
    """A client read the answer too slowly: the connection is closed (quietly: gunicorn
    treats a broken pipe as the client's leaving)."""


class PacedAnswer:
    """The answer's parts, each written by gunicorn before it asks for the next: the time
    between handing one over and being asked again is the time the client took."""

    def __init__(self, parts, pacing: Pacing, log, peer):
        self.parts, self.pacing, self.log, self.peer = parts, pacing, log, peer

    PIECE = 64 * 1024  # each write must end within io_seconds: a large part goes in pieces

    def __iter__(self):
        waited, sent = 0.0, 0
        for part in self.parts:
            for piece in self._pieces(part):
                handed = time.monotonic()
                yield piece
                waited += time.monotonic() - handed
                sent += len(piece)
                if self.pacing.too_slow(waited, sent):
                    self.log.warning("cut %s: read %d bytes in %.1f s", self.peer, sent, waited)
                    raise ClientTooSlow(errno.EPIPE, "the client reads too slowly")

    def _pieces(self, part: bytes):
        if len(part) <= self.PIECE:
            return (part,)
        return (part[start : start + self.PIECE] for start in range(0, len(part), self.PIECE))

    def close(self) -> None:
        """gunicorn calls this whether or not the parts were sent: the application's own
        close (teardown, slots given back) runs either way."""
        close = getattr(self.parts, "close", None)
        if close is not None:
            close()


def _closed(graceful: bool = False) -> None:
    """``TConn.close`` of a connection closed already."""


class ProblemWorker(ThreadWorker):
    """Also: an error answered before a large body was read (a 413, a 401 on an upload) says
    ``Connection: close``. gunicorn closes such a connection after the answer anyway, and a
    client told keep-alive would send its next request into the closed socket."""

    _serving = threading.local()
    _quitting = False

    def handle_quit(self, sig, frame):
        """SIGINT or SIGQUIT: stop now, taking no lock. gunicorn's threaded worker shuts its
        thread pool down here, which takes the pool's lock; a signal that arrives while the
        main thread holds that lock (handing a request to the pool) then waits forever, and
        the process keeps the listening socket, so the next start cannot bind it. The
        pool's threads are stopped at exit instead. A second signal (Ctrl-C reaches the
        whole process group, and the arbiter sends SIGQUIT on SIGINT) is ignored."""
        if self._quitting:
            return
        self._quitting = True
        Worker.handle_quit(self, sig, frame)  # not ThreadWorker's: no tpool.shutdown()

    def murder_keepalived(self, force=False):
        """A kept-alive connection whose next request has arrived is served, not closed, when
        its keep-alive time runs out. gunicorn closes expired connections after each wait for
        events, so a request that arrived after the wait returned was closed unread, and its
        client, told the connection stays open, got no answer."""
        if not force:
            self.wait_for_and_dispatch_events(timeout=0)
        super().murder_keepalived(force)

    def load_wsgi(self):
        super().load_wsgi()
        app = self.wsgi
        pacing = self.pacing = Pacing.from_settings(get_settings())

        def paced(environ, start_response):
            streams = [False]

            def start(status, headers, exc_info=None):
                if leaves_body_unread(environ, status):
                    self._serving.request.must_close = True
                streams[0] = any(
                    name.lower() == "content-type" and value.startswith("text/event-stream")
                    for name, value in headers
                )
                return start_response(status, headers, exc_info)

            parts = app(environ, start)
            if streams[0]:
                return parts
            return PacedAnswer(parts, pacing, self.log, environ.get("REMOTE_ADDR"))

        self.wsgi = paced

    def handle(self, conn):
        """Serve the connection's next request (``_serve``); a connection that is not kept
        open is closed here, in the pool's thread. gunicorn closes it gracefully on its main
        thread, lingering up to 2 s for what the client still sends: a client that keeps
        sending then stalls every connection of the process (every answer to a refused
        upload closes its connection so). Here the linger holds one thread for at most
        LINGER_SECONDS."""
        result = self._serve(conn)
        if result is False:
            util.close_graceful(conn.sock, timeout=LINGER_SECONDS)
            conn.close = _closed  # what gunicorn's main thread calls next
        return result

    def _serve(self, conn):
        """A request's line and headers are gathered without a thread, on a new connection
        and on a kept-alive one alike: what has arrived is read (never blocking) and kept on
        the connection, which goes back to gunicorn's poller until the blank line that ends
        the headers is in; then the parser gets those bytes first. So a client that sends
        its headers a byte at a time, or half of them and nothing more, holds no thread;
        past HEADER_SECONDS it gets a 408. (gunicorn's own threads wait for the first byte
        only, then read in a thread.)"""
        if self.cfg.is_ssl:
            return super().handle(conn)
        if "head" not in conn.__dict__:
            # a kept-alive connection's parser may hold bytes read ahead: they come first
            ahead = conn.parser.unreader.take_buffered() if conn.initialized else b""
            conn.head, conn.headers_by = bytearray(ahead), time.monotonic() + HEADER_SECONDS
        head, deadline = conn.head, conn.headers_by
        # never wait here: a kept-alive connection re-queued at once for bytes read ahead
        # still has the last request's timeout, which a recv would honour first
        conn.sock.settimeout(0)
        try:
            while len(head) < HEAD_BYTES:
                part = conn.sock.recv(HEAD_BYTES, socket.MSG_DONTWAIT)
                if not part:  # the client has sent all it will: answer what is complete
                    if b"\r\n\r\n" not in head:
                        return False
                    break
                head += part
        except (BlockingIOError, InterruptedError, TimeoutError):
            pass
        except OSError:
            return False
        if b"\r\n\r\n" not in head and len(head) < HEAD_BYTES:
            if time.monotonic() < deadline:
                return _DEFER  # wait in the poller for the rest
            self._send_and_close(conn.sock, 408, "Request Timeout", HEADERS_TOO_SLOW)
            return False
        del conn.head, conn.headers_by  # the next request on the connection starts afresh
        conn.sock.setblocking(True)
        conn.init()  # once per connection: does nothing on a kept-alive one
        conn.parser.unreader.unread(bytes(head))
        return super().handle(conn)

    def _send_and_close(self, sock, status: int, reason: str, detail: str) -> None:
        """Answer, then read what the client still sends for a moment before gunicorn closes
        the socket: closing it with bytes unread would reset the connection, and the client
        could lose the answer."""
        try:
            sock.setblocking(True)
            sock.settimeout(0.5)
            sock.sendall(problem_response(status, reason, detail))
            sock.shutdown(socket.SHUT_WR)
            ends = time.monotonic() + 1.0
            drained = 0
            while drained < DRAIN_BYTES and time.monotonic() < ends:
                part = sock.recv(65536)
                if not part:
                    break
                drained += len(part)
        except OSError:
            pass

    def handle_request(self, req, conn):
        self._serving.request = req
        conn.sock.settimeout(self.pacing.io_seconds)  # gunicorn's threads block on it
        unreader = conn.parser.unreader
        if not isinstance(unreader.chunk, PacedReads):
            unreader.chunk = PacedReads(unreader.chunk, self.pacing)
        unreader.chunk.restart()
        try:
            return super().handle_request(req, conn)
        except TimeoutError:  # a write the client did not take within io_seconds
            peer = (conn.client or ("",))[0]
            self.log.warning("cut %s: it read nothing for %g s", peer, self.pacing.io_seconds)
            raise ClientTooSlow(errno.EPIPE, "the client reads too slowly") from None
        finally:
            self._serving.request = None

    def handle_error(self, req, client, addr, exc):
        if isinstance(exc, BodyTooSlow):  # outside the application: draining, just close
            self.log.info("closed a connection from %s: %s", (addr or ("",))[0], exc.description)
            return
        known = next((v for kind, v in STATUSES.items() if isinstance(exc, kind)), None)
        if known is None and not isinstance(exc, CLIENT_ERRORS):
            return super().handle_error(req, client, addr, exc)
        status, reason, detail = known or (400, "Bad Request", f"malformed HTTP request: {exc}")
        self.log.warning("refused a request from %s: %s", (addr or ("",))[0], exc)
        detail = detail.format(limit=self.cfg.limit_request_line)
        try:
            client.settimeout(1.0)
            client.sendall(problem_response(status, reason, detail))
            # the rest of the refused request may still be arriving: closing with it unread
            # would reset the connection and the client could lose the answer, so stop
            # sending, and read (a bounded amount, briefly) until the client is done
            client.shutdown(socket.SHUT_WR)
            drained = 0
            while drained < DRAIN_BYTES and (part := client.recv(65536)):
                drained += len(part)
        except OSError:
            self.log.debug("could not send the whole refusal")
