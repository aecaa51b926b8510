"""The dashboard's pages at /: sign in with a token, follow the tenant's jobs live, read a job's
curves, weights, options, gradient check and history, cancel it, download its model, delete
it, and submit a job on a stored data set or a small CSV; follow, cancel and delete sweeps;
list and delete data sets.
The reason to change is a page: what it shows, or which use case its form calls.

Pages are rendered here from the same views as the API, and its forms call the same use
cases (``service``). What changes while a page is open is read by
``static/dashboard/dashboard.js`` from the API itself (``/v1/jobs``, the job's
event stream, its model), authenticated by the session cookie (see ``api.auth``). The
cookie is signed with SECRET_KEY, HttpOnly and SameSite=Lax, and holds the hash of the
token signed in with, never the token. Every form carries a CSRF token (Flask-WTF); no
script or style comes from anywhere but this app.
"""

from __future__ import annotations

import functools

import numpy as np
from flask import (
    Blueprint,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFError, CSRFProtect
from pydantic import ValidationError

from api import auth
from api.datasets import dataset_view
from api.errors import ANSWERED, as_problem
from api.field_errors import SpecError, validation_errors
from api.jobs import accept
from api.problems import ApiProblem
from api.schemas.jobs import JobCreate
from api.services import context, services
from api.views import job_detail, job_summary, metric_view, sweep_detail, sweep_summaries
from service.datasets import remove_dataset
from service.jobs import cancel_job, remove_job
from service.sweeps import remove_sweep, stop_sweep
from store import datasets, jobs, sweeps
from store.models import FINAL_STATUSES, RUNNING
from store.tokens import hash_token

from .forms import job_from_form

bp = Blueprint(
    "dashboard",
    __name__,
    template_folder="templates",
    static_folder="static/dashboard",
    static_url_path="/static/dashboard",
)
csrf = CSRFProtect()

PAGE_SIZE = 50
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


@bp.before_request
def _identify():
    if request.endpoint == "dashboard.static":
        return None
    if request.method == "POST":
        csrf.protect()
    g.tenant = None
    digest = session.get("token")
    if digest:
        identity = auth.lookup(digest)
        if identity is None:  # revoked or expired since sign-in
            session.clear()
        else:
            g.tenant = identity.tenant
    return None


@bp.after_request
def _headers(response):
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.endpoint != "dashboard.static":
        response.headers["Cache-Control"] = "no-store"
    return response


def _error_page(title: str, message: str, status: int):
    return render_template("dashboard/error.html", title=title, message=message), status


def _missing(kind: str, given: str):
    return _error_page(f"No such {kind}", f"There is no {kind} {given!r} for {g.tenant}.", 404)


def _refusal_page(title: str, exc: Exception):
    """The page for a use case's refusal, with the API's status and words for it."""
    problem = as_problem(exc)
    return _error_page(title, problem.detail, problem.status)


@bp.errorhandler(CSRFError)
def _csrf_failed(exc: CSRFError):
    message = f"The form has expired or did not come from this page ({exc.description})."
    return _error_page("Form refused", message, 400)


def signed_in(view):
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        if g.tenant is None:
            return redirect(url_for(".sign_in", next=request.path))
        return view(*args, **kwargs)

    return wrapper


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in():
    target = _local(request.values.get("next"))
    if request.method == "GET":
        return render_template("dashboard/sign_in.html", next=target)
    token = request.form.get("token", "").strip()
    failures = services().auth_failures
    try:
        identity = token and auth.lookup(hash_token(token), failures)
    except ApiProblem as exc:  # too many failures from this address
        return render_template("dashboard/sign_in.html", next=target, error=exc.detail), 429
    if not identity:
        failures.count(request.remote_addr)
        error = "That token is unknown, expired or revoked."
        return render_template("dashboard/sign_in.html", next=target, error=error), 401
    session.clear()  # a new session for a new sign-in: nothing carries over
    session["token"] = hash_token(token)
    session.permanent = True
    return redirect(target)


def _local(target: str | None) -> str:
    """A path of this site to go back to after sign-in, never another site's. Browsers read
    a backslash as a slash and drop tabs and line breaks, so that ``/\\host``, or a slash,
    a tab and ``/host``, mean ``//host``: such targets are refused, not repaired."""
    if (
        target
        and target.startswith("/")
        and not target.replace("\\", "/").startswith("//")
        and target.isprintable()
        and not any(c.isspace() for c in target)
    ):
        return target
    return url_for(".job_list")


@bp.post("/sign-out")
def sign_out():
    session.clear()
    return redirect(url_for(".sign_in"))


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
            return _missing("job", job_id)
        view = job_detail(job, jobs.events(db_session, job.id))
        rows = [metric_view(m).model_dump() for m in jobs.metrics(db_session, job.id)]
    return render_template(
        "dashboard/job.html",
        job=view,
        metrics=rows,
        final=view.status in FINAL_STATUSES,
    )


@bp.post("/jobs/<job_id>/cancel")
@signed_in
def cancel(job_id: str):
    try:
        cancel_job(context(), job_id, answer=lambda _session, _job: None)
    except ANSWERED as exc:
        return _refusal_page("Not cancelled", exc)
    return redirect(url_for(".job_page", job_id=job_id))


@bp.route("/jobs/<job_id>/delete", methods=["GET", "POST"])
@signed_in
def delete_job(job_id: str):
    """A page that asks first, then the delete (DELETE /v1/jobs/{id}'s rules)."""

    def read(db_session):
        job = jobs.get_job(db_session, g.tenant, job_id)
        goes = "its data, checkpoints, metrics, history and model (a stored data set stays)"
        return f"job {job.name or job.id}", goes, url_for(".job_page", job_id=job_id)

    remove = functools.partial(_remove_job, job_id)
    return _ask_then_delete("job", read, jobs.JobNotFound, remove, url_for(".job_list"))


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
            return _missing("sweep", sweep_id)
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
        return _refusal_page("Not cancelled", exc)
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
    return _ask_then_delete("sweep", read, sweeps.SweepNotFound, remove, url_for(".sweep_list"))


@bp.app_template_filter("dtype_name")
def _dtype_name(dtype: str) -> str:
    """An array's dtype as people read it: float64, not <f8."""
    return np.dtype(dtype).name


@bp.get("/datasets")
@signed_in
def dataset_list():
    with services().db.reading() as db_session:
        rows, _ = datasets.list_datasets(db_session, g.tenant, PAGE_SIZE, None)
        stored = [dataset_view(row) for row in rows]
    return render_template("dashboard/datasets.html", datasets=stored, page_size=PAGE_SIZE)


@bp.route("/datasets/<dataset_id>/delete", methods=["GET", "POST"])
@signed_in
def delete_dataset(dataset_id: str):
    """A page that asks first, then the delete (DELETE /v1/datasets/{id}'s rules)."""

    def read(db_session):
        row = datasets.get_dataset(db_session, g.tenant, dataset_id)
        goes = f"its {row.samples} samples (finished jobs trained on it keep their models)"
        return f"data set {row.name or row.id}", goes, url_for(".dataset_list")

    remove = functools.partial(remove_dataset, context(), dataset_id)
    done = url_for(".dataset_list")
    return _ask_then_delete("data set", read, datasets.DatasetNotFound, remove, done)


def _ask_then_delete(kind: str, read, not_found: type[Exception], remove, done: str):
    """GET: a page that says what goes and asks first (``read(db_session)`` gives what it
    is, what goes with it, and the page to go back to). POST: ``remove()``, then ``done``,
    or a page that says why it stays."""
    if request.method == "POST":
        try:
            remove()
        except ANSWERED as exc:
            return _refusal_page("Not deleted", exc)
        return redirect(done)
    with services().db.reading() as db_session:
        try:
            what, goes, back = read(db_session)
        except not_found:
            message = f"There is no such {kind} for {g.tenant}."
            return _error_page(f"No such {kind}", message, 404)
    return render_template("dashboard/delete.html", what=what, goes=goes, back=back)


@bp.route("/submit", methods=["GET", "POST"])
@signed_in
def submit():
    with services().db.reading() as db_session:
        rows, _ = datasets.list_datasets(db_session, g.tenant, PAGE_SIZE, None)
        stored = [dataset_view(row) for row in rows]
    form = request.form if request.method == "POST" else {}
    if request.method == "GET":
        return render_template("dashboard/submit.html", datasets=stored, form=form, errors=[])
    try:
        body = JobCreate.model_validate(job_from_form(form))
        accepted = accept(body)
    except ValidationError as exc:
        errors = validation_errors(exc)
    except SpecError as exc:
        errors = exc.errors
    except ANSWERED as exc:  # a refused field, the queue or storage quota
        problem = as_problem(exc)
        errors = problem.errors if isinstance(problem, SpecError) else []
        errors = errors or [{"field": "", "msg": problem.detail}]
    else:
        return redirect(url_for(".job_page", job_id=accepted.id))
    page = render_template("dashboard/submit.html", datasets=stored, form=form, errors=errors)
    return page, 422


def _remove_job(job_id: str) -> None:
    remove_job(context(), job_id)
    services().models.forget(job_id)


def _remove_sweep(sweep_id: str) -> None:
    for trial_id in remove_sweep(context(), sweep_id):
        services().models.forget(trial_id)
