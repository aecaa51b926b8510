"""/v1/jobs: submit, poll, list, metrics, model, predict, cancel. Handlers parse, delegate to
``store.jobs`` and ``core``, and shape the answer; the rules live there."""

from __future__ import annotations

import io
import json
import logging
import re
import time
from functools import partial

import numpy as np
from flask import Blueprint, Response, g, request, stream_with_context, url_for

from core.workspace import parameter_count
from service.context import Idempotency
from service.idempotent import Stored
from service.jobs import cancel_job, find_dataset, remove_job, submit_job
from store import dataset_reader, job_data, jobs, npz
from store.idempotency import Replay
from store.models import FINAL_STATUSES, RUNNING, SUCCEEDED

from .field_errors import SpecError, field_error
from .matrices import matrix_input
from .openapi import Rule, operation
from .problems import ApiProblem
from .schemas.job_views import JobList, JobOut, MetricsOut
from .schemas.jobs import EventsQuery, JobCreate, JobQuery, ListQuery
from .schemas.models import ModelOut, PredictDatasetRequest, PredictOut, PredictRequest
from .services import context, services
from .validation import prepare_job
from .views import event_stream, job_detail, job_summary, lineage_view, metric_view
from .views import json_response as _json
from .watch import RECHECK_SECONDS

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")
log = logging.getLogger("backprop.api")

IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
JOB_ID = "$response.body#/id"
IDEMPOTENCY_HEADER = {
    "description": "Retries with the same key and body return the first answer instead of "
    "starting another job (IDEMPOTENCY_TTL_SECONDS, 24 hours by default)",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x21-\\x7e]+$"},
}
IF_NONE_MATCH = {
    "description": "An ETag of this job from an earlier answer: 304 when nothing changed "
    "since; with wait, the long poll waits for a change from that state",
    "schema": {"type": "string"},
}
NPZ_HEADERS = {
    "Content-Disposition": {
        "description": "attachment; filename=<job id>.npz",
        "required": True,
        "schema": {"type": "string"},
    }
}
ETAG = {"ETag": {"description": "The job's state", "required": True, "schema": {"type": "string"}}}
SUBMIT_HEADERS = {
    "Location": {
        "description": "The job's URL (getJob)",
        "required": True,
        "schema": {"type": "string"},
    },
    "Idempotent-Replayed": {
        "description": "true when this is the stored answer of an earlier submit with the "
        "same Idempotency-Key (no new job was made)",
        "schema": {"type": "string", "enum": ["true"]},
    },
}
NPY_RULE = Rule(
    "npy",
    "an npy string is base64 of a .npy file (format 1.0 or 2.0, as numpy.save writes) "
    "holding a 2-D array of finite floats or integers with at least one row",
)
SUBMIT_RULES = (
    NPY_RULE,
    Rule(
        "size_mismatch",
        "every input row has structure[0] values and every target row structure[-1] "
        "(in data and in options.validation, inline or in a stored data set), and there are "
        "as many target rows as input rows",
    ),
    Rule("dataset_not_found", "a dataset_id names a data set of this tenant"),
    Rule("init_from", "init_from names a succeeded job of this tenant with the same structure"),
    Rule(
        "callback_url",
        "callback_url's host resolves, and not to a private, loopback, link-local or reserved "
        "address (unless the server allows them)",
    ),
    Rule(
        "budget_exceeded",
        "samples x epochs x parameters is at most {max_job_cost:.3g} (MAX_JOB_COST), where "
        "parameters = sum of (n_l + 1) x n_(l+1) over the layers",
    ),
    Rule(
        "option_conflict",
        "cost cross_entropy needs output_activation sigmoid or softmax; output_activation "
        "softmax needs an output layer of 2 or more",
    ),
    Rule(
        "target_range",
        "with cost cross_entropy every target lies in [0, 1], and with softmax each target row "
        "sums to 1",
    ),
    Rule("dtype_range", "with dtype float32 every value fits a float32 (below 3.4e38)"),
    Rule(
        "idempotency_key_reused",
        "an Idempotency-Key goes with one request body only, for IDEMPOTENCY_TTL_SECONDS",
    ),
)
PREDICT_RULES = (
    NPY_RULE,
    Rule("size_mismatch", "every row of inputs has as many values as the model's structure[0]"),
    Rule("overflow", "the network's outputs for the inputs are finite numbers"),
)
LINKS = {
    "GetJob": {"operationId": "getJob", "parameters": {"job_id": JOB_ID}},
    "GetJobMetrics": {"operationId": "getJobMetrics", "parameters": {"job_id": JOB_ID}},
    "GetJobModel": {"operationId": "getJobModel", "parameters": {"job_id": JOB_ID}},
    "Predict": {"operationId": "predict", "parameters": {"job_id": JOB_ID}},
    "CancelJob": {"operationId": "cancelJob", "parameters": {"job_id": JOB_ID}},
}


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
    accepted = accept(body, idempotency_key())
    if isinstance(accepted, Replay):  # the stored answer of an earlier submit
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
        answer=_detail,
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
    s = services()
    with s.db.session() as session:
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
    with services().db.reading() as session:
        return _detail(session, _find(session, job_id))


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
        _find(session, job_id)  # 404 before the stream starts
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

    return event_stream(watcher, job_id, timeout, read, s.waits.take(tenant))


def _event(kind: str, data: str, event_id: int) -> str:
    return f"id: {event_id}\nevent: {kind}\ndata: {data}\n\n"


@bp.get("/<job_id>/metrics")
@operation("getJobMetrics", responses={200: MetricsOut})
def get_metrics(job_id: str):
    """One row per finished epoch."""
    s = services()
    with s.db.reading() as session:
        _find(session, job_id)
        rows = [metric_view(m) for m in jobs.metrics(session, job_id)]
    return _json(MetricsOut(job_id=job_id, metrics=rows))


@bp.get("/<job_id>/model")
@operation("getJobModel", responses={200: ModelOut, 409: None})
def get_model(job_id: str):
    """The trained weights and biases in the seed's shapes, as JSON.

    The same arrays as a NumPy .npz file: getJobModelNpz (/model.npz)."""
    return _json(model_view(job_id))


def model_view(job_id: str) -> ModelOut:
    arrays, job = _model_and_job(job_id, as_json=True)
    layers = len(arrays["structure"]) - 1
    view = ModelOut(
        job_id=job_id,
        lineage=lineage_view(job),
        structure=arrays["structure"].tolist(),
        activation=str(arrays["activation"]),
        output_activation=str(arrays["output_activation"]),
        cost=str(arrays["cost"]),
        dtype=arrays["W0"].dtype.name,
        weights=[arrays[f"W{l}"].tolist() for l in range(layers)],
        biases=[arrays[f"b{l}"].tolist() for l in range(layers)],
    )
    return view


@bp.get("/<job_id>/model.npz")
@operation(
    "getJobModelNpz",
    responses={200: None, 409: None},
    binary={200: "application/octet-stream"},
    response_headers={200: NPZ_HEADERS},
)
def get_model_npz(job_id: str):
    """The trained model as a NumPy .npz file (numpy.load reads it).

    Members: structure, activation, output_activation, cost, and W0, b0, W1, b1, ... in the
    seed's shapes (W[l] is n_l x n_(l+1), b[l] is n_(l+1) x 1), and lineage: the model's
    lineage as JSON text (json.loads(str(npz["lineage"])))."""
    give_back = services().transfers.take(g.tenant)  # a slow reader holds a thread
    try:
        arrays, job = _model_and_job(job_id)
        lineage = np.array(lineage_view(job).model_dump_json())  # a str array: no pickle
        buffer = io.BytesIO()
        np.savez(buffer, **arrays, lineage=lineage)
        # not send_file: its answer skips the response's close, which gives the slot back
        response = Response(
            buffer.getvalue(),
            mimetype="application/octet-stream",
            headers={"Content-Disposition": f"attachment; filename={job_id}.npz"},
        )
    except BaseException:
        give_back()
        raise
    response.call_on_close(give_back)
    return response


@bp.post("/<job_id>/predict")
@operation(
    "predict", body=PredictRequest, responses={200: PredictOut, 409: None}, rules=PREDICT_RULES
)
def predict(job_id: str, body: PredictRequest):
    """Outputs of the trained network for a batch of inputs."""
    network = _network(job_id)
    errors: list[dict] = []
    width = network.structure[0]
    inputs, _ = matrix_input(body.inputs, ("inputs",), width, "the network's structure[0]", errors)
    if errors:
        raise SpecError(errors)
    _check_predict_cost(len(inputs), network, ("inputs",))
    with np.errstate(over="ignore", invalid="ignore"):
        outputs = network.predict(inputs)
    if not np.isfinite(outputs).all():
        message = "the network's outputs overflow for these inputs (values too large)"
        raise SpecError([field_error(("inputs",), message, "overflow")])
    return _json(PredictOut(outputs=outputs.tolist()))


def _check_predict_cost(rows: int, network, where: tuple) -> None:
    """Predictions run in the API's process: rows x parameters within MAX_PREDICT_COST."""
    limit = services().settings.max_predict_cost
    parameters = parameter_count(network.structure)
    cost = rows * parameters
    if cost > limit:
        message = (
            f"predicting {rows} rows with {parameters} parameters costs "
            f"{cost:.3g}, over MAX_PREDICT_COST ({limit:.3g}); send fewer rows at a time"
        )
        raise SpecError([field_error(where, message, "budget_exceeded")])


@bp.post("/<job_id>/predict.npz")
@operation(
    "predictDataset",
    body=PredictDatasetRequest,
    responses={200: None, 409: None},
    binary={200: "application/octet-stream"},
    rules=(
        Rule("dataset_not_found", "dataset_id names a data set of this tenant"),
        Rule("size_mismatch", "the data set's inputs have the model's structure[0] columns"),
    ),
)
def predict_dataset(job_id: str, body: PredictDatasetRequest):
    """Outputs for every row of a stored data set, streamed back as a .npz (member outputs).

    Rows are read, predicted and sent a stored chunk at a time, in the data set's order, so
    a data set of any size takes bounded memory."""
    s = services()
    network = _network(job_id)
    dataset = find_dataset(context(), body.dataset_id)
    where = ("dataset_id",)
    if dataset is None:
        message = f"no data set {body.dataset_id!r} for this tenant"
        raise SpecError([field_error(where, message, "dataset_not_found")])
    rows, columns = dataset.members["inputs"]["shape"]
    if columns != network.structure[0]:
        message = (
            f"the data set's inputs have {columns} columns, the model's structure[0] is "
            f"{network.structure[0]}"
        )
        raise SpecError([field_error(where, message, "size_mismatch")])
    _check_predict_cost(rows, network, where)
    shape = (rows, network.structure[-1])

    def outputs():
        # each handful of chunks is read apart: no connection waits on the client
        chunks = dataset_reader.detached_chunks(s.db, dataset, "inputs")
        for block in dataset_reader.as_rows(chunks, dataset, "inputs", network.dtype):
            with np.errstate(over="ignore", invalid="ignore"):
                yield np.ascontiguousarray(network.predict(block)).tobytes()

    stream = npz.npz_stream([("outputs", np.dtype(network.dtype).str, shape, outputs())])
    give_back = s.transfers.take(g.tenant)  # a slow reader holds a thread while it is sent
    response = Response(
        stream_with_context(part for part in stream if part),
        mimetype="application/octet-stream",
        headers={"Content-Disposition": f"attachment; filename={job_id}-outputs.npz"},
    )
    response.call_on_close(give_back)
    return response


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


def _find(session, job_id: str):
    """The tenant's job (JobNotFound: a 404)."""
    g.job_id = job_id
    return jobs.get_job(session, g.tenant, job_id)


def _succeeded(session, job_id: str):
    """The tenant's job, once it succeeded (404, or 409 before that)."""
    job = _find(session, job_id)
    if job.status != SUCCEEDED:
        raise ApiProblem(
            409,
            f"the job is {job.status}; a model exists once it succeeded",
            slug="model-not-ready",
        )
    return job


def _model_and_job(job_id: str, as_json: bool = False):
    """The model of the tenant's succeeded job, and the job. ``as_json``: a model past
    MAX_JSON_MODEL_PARAMETERS is refused (409) before it is loaded."""
    s = services()
    with s.db.reading() as session:
        job = _succeeded(session, job_id)
        parameters = parameter_count(job.spec["structure"])
        if as_json and parameters > s.settings.max_json_model_parameters:
            raise ApiProblem(
                409,
                f"the model has {parameters} weights and biases, more than the JSON form "
                f"holds (MAX_JSON_MODEL_PARAMETERS, {s.settings.max_json_model_parameters}); "
                f"GET /v1/jobs/{job_id}/model.npz has it",
                slug="model-too-large-for-json",
            )
        return job_data.load_model(session, job_id), job


def _network(job_id: str):
    """The succeeded job's trained network; checked on every call, loaded once (cache)."""
    s = services()
    with s.db.reading() as session:
        _succeeded(session, job_id)  # the tenant's own, succeeded job, before any cache

    def load():
        with s.db.reading() as session:
            return job_data.load_model(session, job_id)

    return s.models.get(job_id, load)
