"""The dashboard at /: its blueprint, sign-in with a token, the headers and CSRF check of
every page, the error and ask-first pages the other pages share, the submit form, and the
data sets. The reason to change is how the dashboard signs people in and answers them, or
the submit and data set pages; a job's pages are ``job_pages``, a sweep's ``sweep_pages``
(their routes are on this blueprint).

Pages are rendered from the same views as the API, and their forms call the same use
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
from service.datasets import remove_dataset
from store import datasets
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


def error_page(title: str, message: str, status: int):
    return render_template("dashboard/error.html", title=title, message=message), status


def missing(kind: str, given: str):
    return error_page(f"No such {kind}", f"There is no {kind} {given!r} for {g.tenant}.", 404)


def refusal_page(title: str, exc: Exception):
    """The page for a use case's refusal, with the API's status and words for it (a refused
    field: 422, naming the field)."""
    problem = as_problem(exc)
    if isinstance(problem, SpecError):
        return error_page(title, str(problem), 422)
    return error_page(title, problem.detail, problem.status)


def invalid_page(title: str, exc: ValidationError):
    """The page for a form whose fields break the API's schema: each field and why."""
    message = "; ".join(f"{e['field']}: {e['msg']}" for e in validation_errors(exc))
    return error_page(title, message, 422)


@bp.errorhandler(CSRFError)
def _csrf_failed(exc: CSRFError):
    message = f"The form has expired or did not come from this page ({exc.description})."
    return error_page("Form refused", message, 400)


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
    return ask_then_delete("data set", read, datasets.DatasetNotFound, remove, done)


def ask_then_delete(kind: str, read, not_found: type[Exception], remove, done: str):
    """GET: a page that says what goes and asks first (``read(db_session)`` gives what it
    is, what goes with it, and the page to go back to). POST: ``remove()``, then ``done``,
    or a page that says why it stays."""
    if request.method == "POST":
        try:
            remove()
        except ANSWERED as exc:
            return refusal_page("Not deleted", exc)
        return redirect(done)
    with services().db.reading() as db_session:
        try:
            what, goes, back = read(db_session)
        except not_found:
            message = f"There is no such {kind} for {g.tenant}."
            return error_page(f"No such {kind}", message, 404)
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
