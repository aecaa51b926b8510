"""Delivering callbacks: a signed POST of a job's final state to its ``callback_url``, and
of a sweep's state, once it ended, to the sweep's ``callback_url``. The reason to change is how
a callback is sent and retried.

Before every attempt the URL is checked again, after DNS resolution, and the delivery
connects to the address that was checked (``backprop/urls.py``). Redirects are not
followed. A delivery that fails (no answer, or not a 2xx) is retried with a doubling
backoff, WEBHOOK_ATTEMPTS times in all; every attempt is in the job's history (a sweep's:
in its ``callbacks``). ``X-Backprop-Event`` says which of the two a callback is.

When a callback is due, and who queues it: ``service.callbacks``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import httpx

from backprop.urls import pinned_request, resolve
from store import callbacks, jobs, sweeps, webhooks
from store.models import FINAL_STATUSES, Job, Sweep

from . import metrics as job_metrics

ANSWER_BYTES = 4096  # what is read of an answer's body: its status is what counts


log = logging.getLogger(__name__)


def deliver(db, settings, job_id: str, attempt: int) -> bool:
    """One delivery attempt of a job's callback; True when it is done (delivered, given
    up, or nothing to deliver). Every attempt is in the job's history."""
    with db.session() as session:
        job = session.get(Job, job_id)
        if job is None or (job.callback_state != callbacks.QUEUED and not _queued_before(job)):
            return True  # deleted, or already delivered or given up
        url = job.spec.callback_url
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
        job.callback_state is None and bool(job.spec.callback_url) and job.status in FINAL_STATUSES
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
