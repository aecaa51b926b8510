"""Delivering a job's callback: a signed POST of its final state to ``callback_url``.

A callback is a request the service makes on a user's behalf, so its URL must be http(s)
and, unless CALLBACK_ALLOW_PRIVATE_NETWORKS, must not resolve to a private, loopback,
link-local or otherwise reserved address: checked at submit and again, after DNS
resolution, before every delivery, and the delivery connects to the address that was
checked (no second lookup a rebinding name could answer differently). Redirects are not
followed. A delivery that fails (no answer, or not a 2xx) is retried with a doubling
backoff, WEBHOOK_ATTEMPTS times in all; every attempt is in the job's history.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import socket
import time
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from store import jobs, webhooks
from store.models import FINAL_STATUSES, Job

DELIVER_TASK = "backprop.deliver_callback"
TIMEOUT_SECONDS = 10.0


def refusal(url: str, allow_private: bool) -> str | None:
    """Why this URL may not be called back, or None."""
    return resolve(url, allow_private)[1]


def resolve(url: str, allow_private: bool) -> tuple[str | None, str | None]:
    """(the address to call the URL's host at, None), or (None, why it may not be called)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None, "expected an http:// or https:// URL with a host"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        found = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
        addresses = [ipaddress.ip_address(address[0]) for *_, address in found]
    except (OSError, ValueError) as exc:
        return None, f"the host does not resolve ({type(exc).__name__})"
    for ip in addresses if not allow_private else ():
        if not ip.is_global or ip.is_multicast:
            return None, (
                f"{parts.hostname} resolves to {ip}, a private, loopback, link-local or "
                "reserved address (CALLBACK_ALLOW_PRIVATE_NETWORKS allows them)"
            )
    return str(addresses[0]), None


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
    """One delivery attempt; True when it is done (delivered, or nothing to deliver)."""
    with db.session() as session:
        job = session.get(Job, job_id)
        if job is None or job.status not in FINAL_STATUSES:
            return True
        url = job.spec.get("callback_url")
        if not url:
            return True
        secret = webhooks.secret_for(session, job.tenant)
        body = json.dumps(webhooks.payload(job)).encode()
    started = time.monotonic()
    address, why = resolve(url, settings.callback_allow_private_networks)
    if why is not None:
        outcome, delivered = f"refused: {why}", False
    else:
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "backprop-jobs",
            webhooks.TIMESTAMP_HEADER: stamp,
            webhooks.SIGNATURE_HEADER: webhooks.sign(secret, stamp, body),
        }
        try:
            with httpx.Client(timeout=TIMEOUT_SECONDS, follow_redirects=False) as http:
                answer = http.send(pinned_request(url, address, content=body, headers=headers))
            delivered = 200 <= answer.status_code < 300
            outcome = f"HTTP {answer.status_code}"
        except httpx.HTTPError as exc:
            outcome, delivered = f"no answer ({type(exc).__name__})", False
    took = (time.monotonic() - started) * 1000
    last = attempt >= settings.webhook_attempts
    note = "" if delivered or not last else "; giving up"
    with db.session() as session:
        jobs.add_event(
            session, job_id, "callback",
            f"attempt {attempt}: {outcome} in {took:.0f} ms{note}", at=db.now(session),
        )  # fmt: skip
    return delivered or last
