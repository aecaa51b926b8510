"""Delivering callbacks: a signed POST of a job's final state to its ``callback_url``, and
of a sweep's state, once it ended, to the sweep's ``callback_url``.

A callback is a request the service makes on a user's behalf, so its URL must be http(s)
and, unless CALLBACK_ALLOW_PRIVATE_NETWORKS, must not resolve to a private, loopback,
link-local or otherwise reserved address: checked at submit and again, after DNS
resolution, before every delivery, and the delivery connects to the address that was
checked (no second lookup a rebinding name could answer differently). Redirects are not
followed. A delivery that fails (no answer, or not a 2xx) is retried with a doubling
backoff, WEBHOOK_ATTEMPTS times in all; every attempt is in the job's history (a sweep's:
in its ``callbacks``). ``X-Backprop-Event`` says which of the two a callback is.

A callback is due once, when its job or sweep ended (``store.callbacks``): its delivery is
queued where that happened (the worker, a cancel in the API) and, for one that a crash or
the broker left waiting, or whose queued task was lost, by the reconciler. So a callback
comes at least once: a receiver ignores a repeat of an ``id``.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import logging
import socket
import time
from datetime import timedelta
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from store import callbacks, jobs, sweeps, webhooks
from store.models import FINAL_STATUSES, Job, Sweep

from . import metrics as job_metrics

ANSWER_BYTES = 4096  # what is read of an answer's body: its status is what counts


log = logging.getLogger(__name__)


def stale_callback_seconds(settings) -> float:
    """How long a queued callback may go without an attempt before the reconciler
    queues it again: well past the longest wait between two attempts."""
    longest = settings.webhook_backoff_seconds * 2 ** max(settings.webhook_attempts - 2, 0)
    return max(1800.0, 2 * (longest + settings.webhook_timeout_seconds))


def refusal(url: str, allow_private: bool) -> str | None:
    """Why this URL may not be called back, or None."""
    return resolve(url, allow_private)[1]


def resolve(url: str, allow_private: bool) -> tuple[str | None, str | None]:
    """(the address to call the URL's host at, None), or (None, why it may not be called)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None, "expected an http:// or https:// URL with a host"
    try:
        httpx.URL(url)  # what the delivery will send
    except httpx.InvalidURL as exc:
        return None, f"not a URL that can be called ({exc})"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None, "the port is not a number from 1 to 65535"
    if not allow_private and port not in (80, 443) and port < 1024:
        return None, "the port must be 80, 443 or 1024 and above (the others are services')"
    try:
        found = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
        addresses = [ipaddress.ip_address(address[0]) for *_, address in found]
    except (OSError, ValueError) as exc:
        return None, f"the host does not resolve ({type(exc).__name__})"
    for ip in addresses if not allow_private else ():
        if not _public(ip):
            # which address is not said: the answer would tell what internal names resolve to
            return None, (
                f"{parts.hostname} resolves to a private, loopback, link-local or reserved "
                "address (CALLBACK_ALLOW_PRIVATE_NETWORKS allows them)"
            )
    return str(addresses[0]), None


NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A global unicast address, and so is any IPv4 address that an IPv6 one carries
    (mapped ``::ffff:a.b.c.d``, compatible ``::a.b.c.d``, NAT64, 6to4, Teredo), since
    the network may route it to that IPv4 address."""
    if not ip.is_global or ip.is_multicast:
        return False
    if ip.version == 4:
        return True
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    embedded = [ip.ipv4_mapped, ip.sixtofour, ip.teredo and ip.teredo[1]]
    if int(ip) >> 32 == 0 or any(ip in network for network in NAT64):
        embedded.append(low32)
    return all(_public(inner) for inner in embedded if inner is not None)


def pinned_request(url: str, address: str, **options) -> httpx.Request:
    """A request for ``url`` sent to ``address``, the one that was checked: a name that
    resolves elsewhere a moment later (DNS rebinding) is not looked up again. The Host
    header, TLS's server name and the certificate check keep the URL's host name."""
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = host + (f":{parts.port}" if parts.port else "")
    target = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    headers = dict(options.pop("headers", {}))
    name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    headers["Host"] = name + (f":{parts.port}" if parts.port else "")
    if parts.username is not None:  # user:password@host, as httpx would send it
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    return httpx.Request("POST", target, headers=headers, extensions=extensions, **options)


def deliver(db, settings, job_id: str, attempt: int) -> bool:
    """One delivery attempt of a job's callback; True when it is done (delivered, given
    up, or nothing to deliver). Every attempt is in the job's history."""
    with db.session() as session:
        job = session.get(Job, job_id)
        if job is None or (job.callback_state != callbacks.QUEUED and not _queued_before(job)):
            return True  # deleted, or already delivered or given up
        url = job.spec["callback_url"]
        secret = webhooks.secret_for(session, job.tenant)
        body = json.dumps(webhooks.payload(job)).encode()
    outcome, delivered, took = _post(settings, url, secret, body, webhooks.JOB_ENDED)
    last = attempt >= settings.webhook_attempts
    note = "" if delivered or not last else "; giving up"
    message = f"attempt {attempt}: {outcome} in {took:.0f} ms{note}"
    with db.session() as session:
        jobs.record_callback(session, db, job_id, message, delivered=delivered, last=last)
    return delivered or last


def _queued_before(job: Job) -> bool:
    """A delivery queued before callbacks were kept on the job (migration 0010 left the
    ended jobs' state None): it is delivered, and settles the state."""
    return (
        job.callback_state is None
        and bool(job.spec.get("callback_url"))
        and job.status in FINAL_STATUSES
    )


def deliver_sweep(db, settings, sweep_id: str, attempt: int) -> bool:
    """One delivery attempt of a sweep's callback, as ``deliver``; the attempts are in the
    sweep's ``callbacks``."""
    with db.session() as session:
        sweep = session.get(Sweep, sweep_id)
        if sweep is None or sweep.callback_state != callbacks.QUEUED:
            return True  # deleted, or already delivered or given up
        secret = webhooks.secret_for(session, sweep.tenant)
        url = sweep.spec["callback_url"]
        body = json.dumps(webhooks.sweep_payload(session, sweep)).encode()
    outcome, delivered, took = _post(settings, url, secret, body, webhooks.SWEEP_ENDED)
    last = attempt >= settings.webhook_attempts
    with db.session() as session:
        entry = {
            "attempt": attempt,
            "at": db.now(session).isoformat(),
            "outcome": outcome,
            "milliseconds": round(took, 1),
        }
        sweeps.record_callback(session, db, sweep_id, entry, delivered=delivered, last=last)
    return delivered or last


def queue_job_callbacks(
    db, dispatcher, job_ids: list[str] | None = None, stale_seconds: float | None = None
) -> int:
    """Queue the delivery of each ended job's callback (of ``job_ids``, or all) that waits:
    where a job ended (the worker, a cancel in the API), and in every reconciler round for
    the ones a crash or the broker left waiting; with ``stale_seconds``, again for one
    queued that long ago with no attempt since (its task was lost). Returns how many."""
    return _queue(db, jobs, dispatcher.callback, job_ids, stale_seconds)


def queue_sweep_callbacks(
    db, dispatcher, sweep_ids: list[str] | None = None, stale_seconds: float | None = None
) -> int:
    """As ``queue_job_callbacks``, for ended sweeps none of whose trials still runs."""
    return _queue(db, sweeps, dispatcher.sweep_callback, sweep_ids, stale_seconds)


def _queue(db, rows, send, ids: list[str] | None, stale_seconds: float | None) -> int:
    """Take the due callbacks of ``rows`` (``store.jobs`` or ``store.sweeps``) and queue
    them; one the broker did not take waits again for a reconciler round."""
    with db.session() as session:
        stale = None
        if stale_seconds is not None:
            stale = db.now(session) - timedelta(seconds=stale_seconds)
        due = rows.take_due_callbacks(session, db, ids, stale_before=stale)
    for number, row_id in enumerate(due):
        try:
            send(row_id)
        except Exception:  # the broker is away: a later reconciler round queues them
            log.warning("%s: could not queue its callback", row_id, exc_info=True)
            with db.session() as session:
                for unsent in due[number:]:
                    rows.callback_not_queued(session, unsent)
            return number
    return len(due)


async def _send(request: httpx.Request, seconds: float) -> int:
    """Send and read at most ANSWER_BYTES of the answer, all within ``seconds`` of wall
    clock (WEBHOOK_TIMEOUT_SECONDS): httpx's own timeouts bound each socket operation, so a
    receiver that drips a byte at a time would hold the attempt for ever without this
    deadline. No proxy or certificate settings come from the environment: the address
    checked is the one called."""
    async with asyncio.timeout(seconds):
        async with httpx.AsyncClient(
            timeout=seconds, follow_redirects=False, trust_env=False
        ) as http:
            answer = await http.send(request, stream=True)
            try:
                read = 0
                async for chunk in answer.aiter_raw():
                    read += len(chunk)
                    if read >= ANSWER_BYTES:
                        break
            finally:
                await answer.aclose()
            return answer.status_code


def _post(settings, url: str, secret: str, body: bytes, event: str) -> tuple[str, bool, float]:
    """POST the signed body to the URL's checked address: (outcome, delivered, ms)."""
    started = time.monotonic()
    address, why = resolve(url, settings.callback_allow_private_networks)
    if why is not None:
        outcome, delivered = f"refused: {why}", False
    else:
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "backprop-jobs",
            webhooks.EVENT_HEADER: event,
            webhooks.TIMESTAMP_HEADER: stamp,
            webhooks.SIGNATURE_HEADER: webhooks.sign(secret, stamp, body),
        }
        try:
            request = pinned_request(url, address, content=body, headers=headers)
            status = asyncio.run(_send(request, settings.webhook_timeout_seconds))
            delivered = 200 <= status < 300
            outcome = f"HTTP {status}"
        except TimeoutError:
            limit = settings.webhook_timeout_seconds
            outcome, delivered = f"no answer within {limit:g} s", False
        except httpx.HTTPError as exc:
            outcome, delivered = f"no answer ({type(exc).__name__})", False
        except Exception as exc:  # a URL httpx cannot send (InvalidURL): a failed attempt
            outcome, delivered = f"not sent ({type(exc).__name__})", False
    job_metrics.webhook_attempt(event, delivered)
    return outcome, delivered, (time.monotonic() - started) * 1000
