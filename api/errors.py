"""The one map from the errors of the store and the use cases to problems (RFC 9457): the
reason to change is how such an error is answered over HTTP."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, current_app

from service.errors import NotContinuable, Refused, StorageQuotaExceeded
from store import datasets, jobs, sweeps

from .field_errors import SpecError, field_error
from .limits import queue_full
from .problems import ApiProblem


def _not_found(what: str, slug: str) -> Callable[[Exception], ApiProblem]:
    return lambda exc: ApiProblem(404, f"no {what} {exc.args[0]!r} for this tenant", slug=slug)


def _conflict(slug: str) -> Callable[[Exception], ApiProblem]:
    return lambda exc: ApiProblem(409, str(exc), slug=slug)


def _in_use(exc: datasets.DatasetInUse) -> ApiProblem:
    return ApiProblem(
        409,
        "queued or running jobs (or running sweeps) use this data set: "
        f"{', '.join(exc.job_ids[:20])}; cancel them or wait for them to end",
        slug="dataset-in-use",
    )


# the most specific first: a subclass is answered by its own entry
PROBLEMS: dict[type[Exception], Callable[[Exception], ApiProblem]] = {
    jobs.JobNotFound: _not_found("job", "job-not-found"),
    jobs.JobEnded: _conflict("job-finished"),
    jobs.JobNotEnded: _conflict("job-not-finished"),
    jobs.TrialOfSweep: _conflict("job-is-a-trial"),
    jobs.JobInUse: _conflict("job-in-use"),
    jobs.QueueFull: queue_full,
    sweeps.SweepNotFound: _not_found("sweep", "sweep-not-found"),
    sweeps.SweepEnded: _conflict("sweep-finished"),
    sweeps.SweepNotEnded: _conflict("sweep-not-finished"),
    datasets.DatasetNotFound: _not_found("data set", "dataset-not-found"),
    datasets.DatasetInUse: _in_use,
    NotContinuable: _conflict("job-not-continuable"),
    StorageQuotaExceeded: lambda exc: ApiProblem(413, str(exc), slug="storage-quota"),
}


def as_problem(exc: Exception) -> ApiProblem | SpecError:
    """The problem that answers a store's or a use case's error (the dashboard shows it on
    its page; the API answers it)."""
    if isinstance(exc, Refused):
        return SpecError([field_error(exc.loc, exc.message, exc.kind)])
    for kind in type(exc).__mro__:
        if kind in PROBLEMS:
            return PROBLEMS[kind](exc)
    raise exc


ANSWERED = (Refused, *PROBLEMS)


def init_app(app: Flask) -> None:
    def answer(exc: Exception):
        return current_app.handle_user_exception(as_problem(exc))

    for kind in ANSWERED:
        app.register_error_handler(kind, answer)
