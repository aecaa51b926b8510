"""Delivering a job's callback: a signed POST of its final state to ``callback_url``.

A callback is a request the service makes on a user's behalf, so its URL must be http(s)
and, unless CALLBACK_ALLOW_PRIVATE_NETWORKS, must not resolve to a private, loopback,
link-local or otherwise reserved address: checked at submit and again, after DNS
resolution, before every delivery. Redirects are not followed. A delivery that fails (no
answer, or not a 2xx) is retried with a doubling backoff, WEBHOOK_ATTEMPTS times in all;
every attempt is in the job's history.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from urllib.parse import urlsplit

import httpx

from store import jobs, webhooks
from store.models import FINAL_STATUSES, Job

DELIVER_TASK = "backprop.deliver_callback"
TIMEOUT_SECONDS = 10.0


def refusal(url: str, allow_private: bool) -> str | None:
    """Why this URL may not be called back, or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "expected an http:// or https:// URL with a host"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        found = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
    except (OSError, ValueError) as exc:
        return f"the host does not resolve ({type(exc).__name__})"
    if allow_private:
        return None
    for *_, address in found:
        ip = ipaddress.ip_address(address[0])
        if not ip.is_global or ip.is_multicast:
            return (
                f"{parts.hostname} resolves to {ip}, a private, loopback, link-local or "
                "reserved address (CALLBACK_ALLOW_PRIVATE_NETWORKS allows them)"
            )
    return None


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
    why = refusal(url, settings.callback_allow_private_networks)
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
            answer = httpx.post(
                url, content=body, headers=headers, timeout=TIMEOUT_SECONDS, follow_redirects=False
            )
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
