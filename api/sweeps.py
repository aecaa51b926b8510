"""/v1/sweeps: submit, read, follow, list, cancel and delete hyperparameter searches, and
the best model.

Handlers parse, delegate to ``store.sweeps`` (the rules) and ``api.sweep_validation`` (the
checks at submit), and shape the answer. Trials are jobs: ``GET /v1/jobs?sweep=<id>``.
The reason to change is how a /v1/sweeps operation reads its request or shapes its answer."""

from __future__ import annotations

from functools import partial

from flask import Blueprint, Response, g, url_for

from service.jobs import find_dataset, init_refusal
from service.sweep_continuation import SweepMore, continue_sweep
from service.sweeps import remove_sweep, stop_sweep, submit_sweep
from store import sweeps
from store.idempotency import Replay
from store.models import RUNNING

from .job_models import model_view
from .job_rules import IDEMPOTENCY_HEADER, SUBMIT_RULES, submit_headers
from .jobs import idempotency_key, replayed
from .openapi import Rule, operation
from .problems import ApiProblem
from .schemas.models import ModelOut
from .schemas.sweeps import (
    SweepContinue,
    SweepCreate,
    SweepEventsQuery,
    SweepList,
    SweepListQuery,
    SweepOut,
    SweepQuery,
)
from .services import context, services
from .slots import held_until_closed
from .sweep_validation import prepare_sweep
from .views import event_stream, sweep_detail, sweep_summaries
from .views import json_response as _json

bp = Blueprint("sweeps", __name__, url_prefix="/v1/sweeps")

SWEEP_ID = "$response.body#/id"
LINKS = {
    "GetSweep": {"operationId": "getSweep", "parameters": {"sweep_id": SWEEP_ID}},
    "CancelSweep": {"operationId": "cancelSweep", "parameters": {"sweep_id": SWEEP_ID}},
    "GetSweepBestModel": {
        "operationId": "getSweepBestModel",
        "parameters": {"sweep_id": SWEEP_ID},
    },
}
SWEEP_RULES = (
    Rule(
        "search_path",
        "every key of search is a searchable field of a job (learning_rate, epochs, seed, "
        "structure, structure[i] for a hidden layer i, options.*, data.batch_size, "
        "data.shuffle, data.dataset_id, init_from), structure is not searched with its "
        "layers, integer fields take choice, int_uniform or int_log_uniform, "
        "data.dataset_id and init_from a choice of the tenant's data sets and jobs, the "
        "names of options.optimizer and options.schedule, their per and nesterov a choice, "
        "and a searched optimizer's or schedule's parameter is taken by some trial's",
    ),
    Rule("search_range", "a range is [low, high] with low < high, and low > 0 on a log scale"),
    Rule("search_grid", "method grid takes choices only, and at most the grid's size of trials"),
    Rule(
        "search_size",
        "the space has at most 4096 combinations of choices and range ends (each is checked)",
    ),
    Rule(
        "invalid_trial",
        "every trial the space can make is a valid job: each combination of the choices and "
        "the ends of the ranges passes createJob's rules (reported at search.<path>)",
    ),
    Rule(
        "sweep_data",
        "the base trains on a stored data set (data.dataset_id) and validates on a stored "
        "one or a split",
    ),
    Rule(
        "init_from",
        "base.init_from, and each init_from searched, names a succeeded job of this tenant "
        "with the trial's structure",
    ),
    Rule(
        "sweep_objective",
        "a val_ metric needs a validation set in every trial, an accuracy one-hot targets",
    ),
    Rule(
        "sweep",
        "early_stopping.min_epochs is below the epochs of every trial (or no rung is reached)",
    ),
    Rule(
        "limit_exceeded",
        "trials is at most {max_sweep_trials} (MAX_SWEEP_TRIALS), max_parallel at most "
        "{max_sweep_parallel} (MAX_SWEEP_PARALLEL); and the base within createJob's limits",
    ),
    Rule(
        "callback_url",
        "callback_url's and base.callback_url's host resolves, and not to a private, "
        "loopback, link-local or reserved address (unless the server allows them)",
    ),
    *(
        Rule(rule.type, f"in the base (errors under base.): {rule.text}")
        for rule in SUBMIT_RULES
        if rule.type not in ("npy", "init_from", "idempotency_key_reused", "callback_url")
    ),
)


@bp.post("")
@operation(
    "createSweep",
    body=SweepCreate,
    responses={202: SweepOut},
    links={202: LINKS},
    headers={"Idempotency-Key": IDEMPOTENCY_HEADER},
    response_headers={202: submit_headers("sweep", "getSweep")},
    rules=SWEEP_RULES,
)
def submit(body: SweepCreate):
    """Start a hyperparameter search (202 with a Location to poll).

    Every trial is a job made from base with values from search, trained on the ordinary
    workers; at most max_parallel are queued or running at once, and with early_stopping
    (ASHA) poor trials end at a rung. Poll the Location until its status is succeeded,
    failed or cancelled."""
    ctx = context()
    idem = idempotency_key()
    prepared = prepare_sweep(
        body, ctx.settings, partial(find_dataset, ctx), partial(init_refusal, ctx)
    )
    stored = submit_sweep(
        ctx,
        prepared,
        name=body.name,
        labels=body.labels,
        max_parallel=body.max_parallel,
        callback_url=body.callback_url,
        base_callback_url=body.base.callback_url,
        idem=idem,
        answer=sweep_detail,
    )
    if isinstance(stored, Replay):
        return replayed(stored, _location(stored.response))
    return _json(stored.answer, 202, {"Location": _location({"id": stored.id})})


def _location(answer: dict) -> str:
    return url_for("sweeps.get_sweep", sweep_id=answer["id"])


@bp.get("")
@operation("listSweeps", query=SweepListQuery, responses={200: SweepList})
def list_sweeps(query: SweepListQuery):
    """The tenant's sweeps, newest first, a page at a time."""
    with services().db.reading() as session:
        found, cursor = sweeps.list_sweeps(
            session, g.tenant, limit=query.limit, cursor=query.cursor
        )
        view = SweepList(sweeps=sweep_summaries(session, found), next_cursor=cursor)
    return _json(view)


@bp.get("/<sweep_id>")
@operation("getSweep", query=SweepQuery, responses={200: SweepOut})
def get_sweep(sweep_id: str, query: SweepQuery):
    """Status, trial counts, the best trial, a leaderboard page and the compute saved."""
    with services().db.reading() as session:
        sweep = _find(session, sweep_id)
        view = sweep_detail(session, sweep, limit=query.limit, offset=query.offset)
    return _json(view)


@bp.get("/<sweep_id>/events")
@operation(
    "streamSweepEvents",
    query=SweepEventsQuery,
    responses={200: None},
    binary={200: "text/event-stream"},
    media_schemas={
        200: {  # OpenAPI 3.2's schema of each event of the stream
            "itemSchema": {
                "type": "object",
                "description": "One event; data is JSON text: the sweep as getSweep answers it",
                "required": ["event", "data"],
                "properties": {
                    "event": {"enum": ["sweep", "end"]},
                    "data": {"type": "string", "contentMediaType": "application/json"},
                },
            }
        }
    },
)
def sweep_events(sweep_id: str, query: SweepEventsQuery):
    """Server-sent events of a sweep: its state each time it changes.

    Events: `sweep` (data: the sweep as `getSweep` answers it, with the first `limit`
    leaderboard rows) whenever a trial moved (an epoch, a rung decision, a release, an end),
    and `end` once the sweep ended and none of its trials still runs; the stream closes.
    Each event carries the whole state, so a reconnect starts from the current state and
    misses nothing. The workers' notifications over Redis wake the stream; it also reads
    the database every couple of seconds, ends after `timeout` seconds, and a comment keeps
    idle connections open."""
    s = services()
    with s.db.reading() as session:
        _find(session, sweep_id)  # 404 before the stream starts
    tenant, watcher, timeout, limit = g.tenant, s.watcher, query.timeout, query.limit

    state = {"last": None}

    def read():
        with s.db.reading() as session:
            try:
                sweep = sweeps.get_sweep(session, tenant, sweep_id)
            except sweeps.SweepNotFound:  # deleted meanwhile
                return [], True
            view = sweep_detail(session, sweep, limit=limit)
        data, events = view.model_dump_json(), []
        if data != state["last"]:
            state["last"] = data
            events.append(f"event: sweep\ndata: {data}\n\n")
        ended = view.status != RUNNING and not (view.counts.queued or view.counts.running)
        if ended:
            events.append(f"event: end\ndata: {data}\n\n")
        return events, ended

    return event_stream(watcher, sweep_id, timeout, read, held_until_closed(s.waits))


@bp.post("/<sweep_id>/cancel")
@operation("cancelSweep", responses={200: SweepOut, 202: SweepOut, 409: None})
def cancel(sweep_id: str):
    """Cancel: queued trials at once, running ones at their next mini-batch (202 while any
    runs); finished trials and their models stay."""
    stop_sweep(context(), sweep_id)
    with services().db.reading() as session:
        view = sweep_detail(session, _find(session, sweep_id))
    return _json(view, 202 if view.counts.running else 200)


@bp.post("/<sweep_id>/continue")
@operation(
    "continueSweep",
    body=SweepContinue,
    responses={202: SweepOut, 409: None},
    rules=(
        Rule("sweep", "add_trials only for random and tpe sweeps: a grid makes each point once"),
        Rule("limit_exceeded", "an extended trial's whole run is at most MAX_EPOCHS epochs"),
        Rule("budget_exceeded", "an extension's rows x epochs x parameters is at most its budget"),
    ),
)
def continue_(sweep_id: str, body: SweepContinue):
    """Continue a sweep (202): a cancelled sweep resumes with the same configurations, and
    any sweep can re-run its failed trials, add trials or extend its best ones.

    Cancelled trials continue from where they stopped, ASHA's paused ones may be promoted
    again, added trials draw their values on from the sweep's seed (as if it had asked for
    more from the start), and an extended trial is a new trial continued from the best
    one's final state. Each is bitwise what an uninterrupted run would have given. The
    sweep runs again, at most max_parallel trials at once. 409 when nothing would change."""
    extend = body.extend
    more = SweepMore(
        add_trials=body.add_trials,
        rerun_failed=body.rerun_failed,
        extend_top=extend.top if extend else 0,
        extend_epochs=extend.epochs if extend else 0,
    )
    continue_sweep(context(), sweep_id, more)
    with services().db.reading() as session:
        view = sweep_detail(session, _find(session, sweep_id))
    return _json(view, 202, {"Location": url_for("sweeps.get_sweep", sweep_id=sweep_id)})


@bp.delete("/<sweep_id>")
@operation("deleteSweep", responses={204: None, 409: None})
def delete_sweep(sweep_id: str):
    """Delete an ended sweep with its trials and all they stored (409 while it runs, or
    while trials of a cancelled sweep have not stopped yet). A data set it trained on stays."""
    for trial_id in remove_sweep(context(), sweep_id):
        services().models.forget(trial_id)
    return Response(status=204)


@bp.get("/<sweep_id>/best/model")
@operation("getSweepBestModel", responses={200: ModelOut, 409: None})
def best_model(sweep_id: str):
    """The best succeeded trial's model (as getJobModel); 409 before a trial succeeded."""
    with services().db.reading() as session:
        sweep = _find(session, sweep_id)
        best = sweeps.best_trial(sweep, sweeps.trials_of(session, sweep.id))
        if best is None:
            raise ApiProblem(
                409,
                f"the sweep is {sweep.status} and no trial has succeeded yet",
                slug="model-not-ready",
            )
        job_id = best.id
    return _json(model_view(job_id))


def _find(session, sweep_id: str):
    """The tenant's sweep (SweepNotFound: a 404)."""
    return sweeps.get_sweep(session, g.tenant, sweep_id)
