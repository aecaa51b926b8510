"""/v1/jobs: submit, poll, list, follow, metrics, cancel and delete (the model and predictions:
``api.job_models``). Handlers parse, call the use cases (``service.jobs``) or read the store,
and shape the answer. The reason to change is how a /v1/jobs operation reads its request or
shapes its answer."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from functools import partial

from flask import Blueprint, Response, g, request, url_for

from service.context import Idempotency
from service.continuation import continue_job
from service.diff import diff_jobs
from service.idempotent import Stored
from service.jobs import cancel_job, find_dataset, remove_job, submit_job
from store import jobs
from store.idempotency import Replay
from store.models import FINAL_STATUSES, RUNNING

from .field_errors import SpecError, field_error
from .job_rules import (
    CONTINUE_RULES,
    ETAG,
    IDEMPOTENCY_HEADER,
    IF_NONE_MATCH,
    LINKS,
    SUBMIT_HEADERS,
    SUBMIT_RULES,
)
from .openapi import operation
from .schemas.job_views import FieldDiffOut, JobDiffOut, JobList, JobOut, MetricsOut
from .schemas.jobs import ContinueJob, DiffQuery, EventsQuery, JobCreate, JobQuery, ListQuery
from .services import context, services
from .slots import held_until_closed
from .validation import prepare_job
from .views import event_stream, job_detail, job_summary, metric_view
from .views import json_response as _json
from .watch import RECHECK_SECONDS

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")
log = logging.getLogger("backprop.api")

IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def _detail(session, job) -> JobOut:
    return job_detail(job, jobs.events(session, job.id))


@bp.post("")
@operation(
    "createJob",
    body=JobCreate,
    responses={202: JobOut},
    links={202: LINKS},
    headers={"Idempotency-Key": IDEMPOTENCY_HEADER},
    response_headers={202: SUBMIT_HEADERS},
    rules=SUBMIT_RULES,
)
def submit(body: JobCreate):
    """Queue a training job (202 with a Location to poll).

    The job is stored before the answer, with its data, and trained once by a worker. Poll
    its Location (getJob, with ?wait= to long poll) until its status is succeeded, failed or
    cancelled."""
    return queued(accept(body, idempotency_key()))


def queued(accepted: Stored | Replay) -> Response:
    """202 with the new job and its Location, or the replay of an earlier request's answer."""
    if isinstance(accepted, Replay):  # the stored answer of an earlier request with the key
        return replayed(accepted, url_for("jobs.get_job", job_id=accepted.job_id))
    g.job_id = accepted.id
    location = url_for("jobs.get_job", job_id=accepted.id)
    return _json(accepted.answer, 202, {"Location": location})


def accept(body: JobCreate, idem: Idempotency | None = None) -> Stored | Replay:
    """Check the request and submit the tenant's job (``service.jobs.submit_job``): what
    it stored, with the job's view as its answer, or the replay of an earlier submit."""
    ctx = context()
    # a failure here stores nothing, key included
    prepared = prepare_job(body, ctx.settings, find_dataset=partial(find_dataset, ctx))
    return submit_job(
        ctx,
        prepared,
        name=body.name,
        labels=body.labels,
        callback_url=body.callback_url,
        init_from=body.init_from,
        idem=idem,
        answer=job_detail,  # the new job with the history stored with it: nothing read back
    )


def idempotency_key() -> Idempotency | None:
    """The request's Idempotency-Key, with the hash of its body, or None."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(key):
        message = "expected 1 to 255 visible ASCII characters"
        raise SpecError([field_error(("header", "Idempotency-Key"), message)])
    return Idempotency(key, g.body_sha256)


def replayed(replay: Replay, location: str | None) -> Response:
    """The stored answer of an earlier request with the same key, as first given."""
    g.job_id = replay.job_id
    headers = {"Idempotent-Replayed": "true"}
    if location is not None:
        headers["Location"] = location
    return Response(
        json.dumps(replay.response),
        status=replay.status_code,
        mimetype="application/json",
        headers=headers,
    )


@bp.get("")
@operation("listJobs", query=ListQuery, responses={200: JobList})
def list_jobs(query: ListQuery):
    """The tenant's jobs, newest first, a page at a time."""
    labels = None
    if query.label:
        key, _, value = query.label.partition(":")
        labels = {key: value}
    with services().db.reading() as session:
        try:
            page = jobs.list_jobs(
                session,
                g.tenant,
                statuses=[query.status] if query.status else None,
                labels=labels,
                limit=query.limit,
                cursor=query.cursor,
                sweep_id=query.sweep,
            )
        except ValueError as exc:
            raise SpecError([field_error(("query", "cursor"), str(exc))]) from None
        view = JobList(jobs=[job_summary(j) for j in page.rows], next_cursor=page.next_cursor)
    return _json(view)


@bp.get("/<job_id>")
@operation(
    "getJob",
    query=JobQuery,
    responses={200: JobOut, 304: None},
    headers={"If-None-Match": IF_NONE_MATCH},
    response_headers={200: ETAG, 304: ETAG},
)
def get_job(job_id: str, query: JobQuery):
    """Status, progress, latest metrics, error and history of one job (``?wait=`` long polls)."""
    seen = request.headers.get("If-None-Match")
    if query.wait > 0:
        give_back = services().waits.take(g.tenant)
        try:
            view = _wait_for_change(job_id, seen, query.wait, services().watcher)
        finally:
            give_back()
    else:
        view = _read_job(job_id)
    tag = etag(view)
    if tag == seen and not query.wait:
        return Response(status=304, headers={"ETag": tag})
    return _json(view, headers={"ETag": tag})


def _read_job(job_id: str) -> JobOut:
    """The tenant's job with its history (JobNotFound: a 404), read as rows on one
    connection: the poll's hot path."""
    g.job_id = job_id
    with services().db.reading_rows() as connection:
        return job_detail(*jobs.job_with_history(connection, g.tenant, job_id))


def _wait_for_change(job_id: str, seen: str | None, wait: float, watcher) -> JobOut:
    """The job once it differs from ``seen`` (else from its state now) or has ended, or
    after ``wait`` seconds: read again whenever a change of it is announced."""
    deadline = time.monotonic() + wait
    with watcher.watching(job_id) as changed:  # before the first read: no change slips by
        view = _read_job(job_id)
        seen = seen or etag(view)
        while etag(view) == seen and view.status not in FINAL_STATUSES:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            changed.wait(min(left, RECHECK_SECONDS))
            changed.clear()
            view = _read_job(job_id)
    return view


def etag(view: JobOut) -> str:
    """Names the job's state: it changes with every status, progress or history change."""
    return f'"{view.updated_at.timestamp():.6f}-{view.status}-{view.progress.epoch}"'


@bp.get("/<job_id>/events")
@operation(
    "streamJobEvents",
    query=EventsQuery,
    responses={200: None},
    binary={200: "text/event-stream"},
    headers={
        "Last-Event-ID": {
            "description": "The id of the last event seen: the stream resumes after it "
            "(EventSource sends it when it reconnects)",
            "schema": {"type": "string", "pattern": "^[0-9]{1,9}$"},
        }
    },
    media_schemas={
        200: {  # OpenAPI 3.2's schema of each event of the stream
            "itemSchema": {
                "type": "object",
                "description": "One event; data is JSON text (a job summary, or an epoch's row)",
                "required": ["id", "event", "data"],
                "properties": {
                    "id": {"type": "string", "pattern": "^[0-9]+$"},
                    "event": {"enum": ["status", "epoch", "end"]},
                    "data": {"type": "string", "contentMediaType": "application/json"},
                },
            }
        }
    },
)
def job_events(job_id: str, query: EventsQuery):
    """Server-sent events of a job: its status changes and one epoch event per epoch.

    Events: `status` (data: the job's status, progress and latest metrics), `epoch` (data:
    one epoch's metrics row, the epoch number as the event id), and `end` (the job ended;
    the stream closes). Rows come from the database, so a reconnect with Last-Event-ID
    misses nothing; the worker's notifications over Redis wake the stream. The stream also
    ends after `timeout` seconds, and a comment keeps idle connections open."""
    s = services()
    with s.db.reading() as session:
        find_job(session, job_id)  # 404 before the stream starts
    given = request.headers.get("Last-Event-ID")
    if given is not None and not re.fullmatch(r"[0-9]{1,9}", given):
        message = "expected the id of an event of this stream (an epoch number, 1 to 9 digits)"
        raise SpecError([field_error(("header", "Last-Event-ID"), message)])
    last = int(given) if given else 0
    tenant, watcher, timeout = g.tenant, s.watcher, query.timeout

    state = {"sent": last, "status": None}

    def read():
        with s.db.reading() as session:
            job = jobs.get_job(session, tenant, job_id)
            rows = jobs.metrics(session, job_id, after=state["sent"])
            summary = job_summary(job)
        events = []
        for row in rows:
            state["sent"] = row.epoch
            events.append(_event("epoch", metric_view(row).model_dump_json(), row.epoch))
        if job.status != state["status"]:
            state["status"] = job.status
            events.append(_event("status", summary.model_dump_json(), state["sent"]))
        ended = job.status in FINAL_STATUSES
        if ended:
            events.append(_event("end", summary.model_dump_json(), state["sent"]))
        return events, ended

    return event_stream(watcher, job_id, timeout, read, held_until_closed(s.waits))


def _event(kind: str, data: str, event_id: int) -> str:
    return f"id: {event_id}\nevent: {kind}\ndata: {data}\n\n"


@bp.get("/<job_id>/diff")
@operation("diffJobs", query=DiffQuery, responses={200: JobDiffOut})
def diff(job_id: str, query: DiffQuery):
    """What differs between this job and another of the tenant's: the spec's fields, the
    first epoch whose metrics differ, and whether both final models are the same bits."""
    g.job_id = job_id
    found = diff_jobs(context(), job_id, query.other)
    view = JobDiffOut(
        job_id=job_id,
        other_id=query.other,
        spec=[FieldDiffOut(field=d.field, this=d.this, other=d.other) for d in found.spec],
        epochs_compared=found.epochs_compared,
        first_divergent_epoch=found.first_divergent_epoch,
        this_metrics=found.this_metrics,
        other_metrics=found.other_metrics,
        weights_equal=found.weights_equal,
        state_epoch=found.state_epoch,
        states_equal=found.states_equal,
    )
    return _json(view)


@bp.post("/<job_id>/continue")
@operation(
    "continueJob",
    body=ContinueJob,
    responses={202: JobOut, 409: None},
    links={202: LINKS},
    headers={"Idempotency-Key": IDEMPOTENCY_HEADER},
    response_headers={202: SUBMIT_HEADERS},
    rules=CONTINUE_RULES,
)
def continue_(job_id: str, body: ContinueJob):
    """Train an ended job further, as a new job that continues from its final state (202).

    A succeeded, ASHA-stopped, cancelled or timed-out job carries on with its weights,
    shuffling generator, optimizer, schedule and early-stopping record: the new job's model
    and every metrics row (its parent's rows are copied into it) are bitwise those of one
    job trained for the whole run from the start. Its spec is the parent's with the whole
    run's epochs and ``continued_from``. 409 when the job cannot carry on (still running,
    failed, or ended by its own early stopping)."""
    g.job_id = job_id
    idem = idempotency_key()
    if idem is not None:  # the key goes with this job's continuation, not any job's
        scoped = hashlib.sha256(f"{request.path}\n{idem.request_hash}".encode()).hexdigest()
        idem = Idempotency(idem.key, scoped)
    accepted = continue_job(
        context(),
        job_id,
        epochs=body.epochs,
        max_runtime_seconds=body.max_runtime_seconds,
        name=body.name,
        labels=body.labels,
        idem=idem,
        answer=_detail,
    )
    return queued(accepted)


@bp.get("/<job_id>/metrics")
@operation("getJobMetrics", responses={200: MetricsOut})
def get_metrics(job_id: str):
    """One row per finished epoch."""
    s = services()
    with s.db.reading() as session:
        find_job(session, job_id)
        rows = [metric_view(m) for m in jobs.metrics(session, job_id)]
    return _json(MetricsOut(job_id=job_id, metrics=rows))


@bp.post("/<job_id>/cancel")
@operation("cancelJob", responses={200: JobOut, 202: JobOut, 409: None})
def cancel(job_id: str):
    """Cancel: a queued job at once (200), a running one at its next mini-batch (202)."""
    g.job_id = job_id
    view = cancel_job(context(), job_id, _detail)
    return _json(view, 202 if view.status == RUNNING else 200)


@bp.delete("/<job_id>")
@operation("deleteJob", responses={204: None, 409: None})
def delete_job(job_id: str):
    """Delete a finished job and all it stored (409 while it is queued or running, and for
    a sweep's trial: trials go with their sweep).

    Its inline data, checkpoints, metrics, history and model go; a data set it trained on
    stays."""
    g.job_id = job_id
    remove_job(context(), job_id)
    services().models.forget(job_id)
    return Response(status=204)


def find_job(session, job_id: str):
    """The tenant's job (JobNotFound: a 404)."""
    g.job_id = job_id
    return jobs.get_job(session, g.tenant, job_id)
