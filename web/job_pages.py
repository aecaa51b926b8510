"""The dashboard's job pages: the tenant's jobs followed live, a job's page (curves, weights,
options, gradient check, history), and what its forms do: cancel, delete after asking,
continue for more epochs, and compare with another job.
The reason to change is a job's page or one of its forms."""

from __future__ import annotations

import functools

from flask import g, redirect, render_template, request, url_for
from pydantic import ValidationError

from api.errors import ANSWERED
from api.schemas.jobs import ContinueJob, DiffQuery
from api.services import context, services
from api.views import job_detail, job_summary, metric_view
from service import continuation
from service.diff import COMPARED, diff_jobs
from service.jobs import cancel_job, remove_job
from store import jobs
from store.models import FINAL_STATUSES

from .forms import continuation_from_form
from .pages import (
    PAGE_SIZE,
    ask_then_delete,
    bp,
    error_page,
    invalid_page,
    missing,
    refusal_page,
    signed_in,
)

#: the tenant's latest jobs offered by the job page's compare form
RECENT = 20


@bp.get("/")
@signed_in
def job_list():
    with services().db.reading() as db_session:
        page = jobs.list_jobs(db_session, g.tenant, limit=PAGE_SIZE)
        summaries = [job_summary(j) for j in page.rows]
    return render_template("dashboard/jobs.html", jobs=summaries, page_size=PAGE_SIZE)


@bp.get("/jobs/<job_id>")
@signed_in
def job_page(job_id: str):
    with services().db.reading() as db_session:
        try:
            job = jobs.get_job(db_session, g.tenant, job_id)
        except jobs.JobNotFound:
            return missing("job", job_id)
        view = job_detail(job, jobs.events(db_session, job.id))
        rows = [metric_view(m).model_dump() for m in jobs.metrics(db_session, job.id)]
        latest = jobs.list_jobs(db_session, g.tenant, limit=RECENT + 1).rows
        others = [job_summary(j) for j in latest if j.id != job.id][:RECENT]
        not_continuable = continuation.why_not(job)  # None when it can be
    return render_template(
        "dashboard/job.html",
        job=view,
        metrics=rows,
        final=view.status in FINAL_STATUSES,
        others=others,
        not_continuable=not_continuable,
    )


@bp.post("/jobs/<job_id>/cancel")
@signed_in
def cancel(job_id: str):
    try:
        cancel_job(context(), job_id, answer=lambda _session, _job: None)
    except ANSWERED as exc:
        return refusal_page("Not cancelled", exc)
    return redirect(url_for(".job_page", job_id=job_id))


@bp.post("/jobs/<job_id>/continue")
@signed_in
def continue_job(job_id: str):
    """A new job that trains on from this one's final state (POST /v1/jobs/{id}/continue's
    rules), then its page."""
    try:
        body = ContinueJob.model_validate(continuation_from_form(request.form))
    except ValidationError as exc:
        return invalid_page("Not continued", exc)
    try:
        accepted = continuation.continue_job(
            context(),
            job_id,
            epochs=body.epochs,
            max_runtime_seconds=body.max_runtime_seconds,
            name=None,
            labels=None,
            idem=None,
            answer=lambda _session, _job: None,
        )
    except ANSWERED as exc:
        return refusal_page("Not continued", exc)
    return redirect(url_for(".job_page", job_id=accepted.id))


@bp.get("/jobs/<job_id>/diff")
@signed_in
def diff_page(job_id: str):
    """What differs between this job and another of the tenant's (GET /v1/jobs/{id}/diff):
    the spec's fields, the first epoch whose metrics differ, and the final weights' bits."""
    other_id = request.args.get("other", "").strip()
    try:
        DiffQuery.model_validate({"other": other_id})
    except ValidationError:
        message = f"{other_id!r} is not a job id" if other_id else "No job to compare with"
        return error_page("Not compared", f"{message}: give the id of another of your jobs.", 400)
    try:
        with services().db.reading() as db_session:
            pair = [job_summary(jobs.get_job(db_session, g.tenant, i)) for i in (job_id, other_id)]
        found = diff_jobs(context(), job_id, other_id)
    except jobs.JobNotFound as exc:
        return missing("job", exc.args[0])
    this, other = pair
    return render_template(
        "dashboard/diff.html", this=this, other=other, diff=found, compared=COMPARED
    )


@bp.route("/jobs/<job_id>/delete", methods=["GET", "POST"])
@signed_in
def delete_job(job_id: str):
    """A page that asks first, then the delete (DELETE /v1/jobs/{id}'s rules)."""

    def read(db_session):
        job = jobs.get_job(db_session, g.tenant, job_id)
        goes = "its data, checkpoints, metrics, history and model (a stored data set stays)"
        return f"job {job.name or job.id}", goes, url_for(".job_page", job_id=job_id)

    remove = functools.partial(_remove_job, job_id)
    return ask_then_delete("job", read, jobs.JobNotFound, remove, url_for(".job_list"))


def _remove_job(job_id: str) -> None:
    remove_job(context(), job_id)
    services().models.forget(job_id)
