"""The dashboard's sweep pages: the tenant's sweeps, a sweep's page (its leaderboard and
charts followed live, its configurations' means with replicates), and what its forms do:
cancel, continue, and delete after asking.
The reason to change is a sweep's page or one of its forms."""

from __future__ import annotations

import functools

from flask import g, redirect, render_template, request, url_for
from pydantic import ValidationError

from api.errors import ANSWERED
from api.schemas.sweeps import SweepContinue
from api.services import context, services
from api.views import sweep_detail, sweep_summaries
from service.sweep_continuation import SweepMore, continue_sweep
from service.sweeps import remove_sweep, stop_sweep
from store import sweeps
from store.models import RUNNING

from .forms import sweep_continuation_from_form
from .pages import PAGE_SIZE, ask_then_delete, bp, invalid_page, missing, refusal_page, signed_in


@bp.get("/sweeps")
@signed_in
def sweep_list():
    with services().db.reading() as db_session:
        found, _ = sweeps.list_sweeps(db_session, g.tenant, limit=PAGE_SIZE)
        summaries = sweep_summaries(db_session, found)
    return render_template("dashboard/sweeps.html", sweeps=summaries, page_size=PAGE_SIZE)


@bp.get("/sweeps/<sweep_id>")
@signed_in
def sweep_page(sweep_id: str):
    with services().db.reading() as db_session:
        try:
            sweep = sweeps.get_sweep(db_session, g.tenant, sweep_id)
        except sweeps.SweepNotFound:
            return missing("sweep", sweep_id)
        view = sweep_detail(db_session, sweep, limit=sweeps.MAX_BOARD)
    return render_template(
        "dashboard/sweep.html",
        sweep=view,
        data=view.model_dump(mode="json"),
        running=view.status == RUNNING,
        board=sweeps.MAX_BOARD,
    )


@bp.post("/sweeps/<sweep_id>/cancel")
@signed_in
def cancel_sweep(sweep_id: str):
    try:
        stop_sweep(context(), sweep_id)
    except ANSWERED as exc:
        return refusal_page("Not cancelled", exc)
    return redirect(url_for(".sweep_page", sweep_id=sweep_id))


@bp.post("/sweeps/<sweep_id>/continue")
@signed_in
def continue_sweep_form(sweep_id: str):
    """More for the sweep to do (POST /v1/sweeps/{id}/continue's rules), then its page."""
    try:
        body = SweepContinue.model_validate(sweep_continuation_from_form(request.form))
    except ValidationError as exc:
        return invalid_page("Not continued", exc)
    extend = body.extend
    more = SweepMore(
        add_trials=body.add_trials,
        rerun_failed=body.rerun_failed,
        extend_top=extend.top if extend else 0,
        extend_epochs=extend.epochs if extend else 0,
    )
    try:
        continue_sweep(context(), sweep_id, more)
    except ANSWERED as exc:
        return refusal_page("Not continued", exc)
    return redirect(url_for(".sweep_page", sweep_id=sweep_id))


@bp.route("/sweeps/<sweep_id>/delete", methods=["GET", "POST"])
@signed_in
def delete_sweep(sweep_id: str):
    """A page that asks first, then the delete (DELETE /v1/sweeps/{id}'s rules)."""

    def read(db_session):
        sweep = sweeps.get_sweep(db_session, g.tenant, sweep_id)
        trials = f"{sweep.released} trial" + ("" if sweep.released == 1 else "s")
        goes = f"its {trials} with their metrics, checkpoints and models (a stored data set stays)"
        return f"sweep {sweep.name or sweep.id}", goes, url_for(".sweep_page", sweep_id=sweep_id)

    remove = functools.partial(_remove_sweep, sweep_id)
    return ask_then_delete("sweep", read, sweeps.SweepNotFound, remove, url_for(".sweep_list"))


def _remove_sweep(sweep_id: str) -> None:
    for trial_id in remove_sweep(context(), sweep_id):
        services().models.forget(trial_id)
