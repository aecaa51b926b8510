"""``benchmarks/profiling.py``'s summary of py-spy's folded stacks: each sample is charged to
the deepest function of the service's own code on its stack, and to the library running."""

from __future__ import annotations

import sys

from tests.support.stack import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import profiling  # noqa: E402

FOLDED = "\n".join(
    [
        # a poll: gunicorn -> our wrapper -> Flask -> our view -> our store -> SQLAlchemy
        'process 7:"gunicorn";handle (api/gunicorn_worker.py:257);wsgi_app (flask/app.py:1511);'
        "get_job (api/jobs.py:167);job_with_history (store/jobs.py:141);"
        "execute (sqlalchemy/engine/base.py:1494) 6",
        # the same function at another line is the same function
        'process 7:"gunicorn";handle (api/gunicorn_worker.py:257);wsgi_app (flask/app.py:1511);'
        "get_job (api/jobs.py:167);job_with_history (store/jobs.py:138) 2",
        # our view itself, then Flask's own work below our wrapper
        'process 7:"gunicorn";handle (api/gunicorn_worker.py:257);wsgi_app (flask/app.py:1511);'
        "get_job (api/jobs.py:170) 1",
        'process 7:"gunicorn";handle (api/gunicorn_worker.py:257);wsgi_app (flask/app.py:1520) 1',
        # none of our code on the stack: gunicorn parsing a request, the standard library
        'process 7:"gunicorn";run (gunicorn/workers/gthread.py:425);select (selectors.py:468) 10',
        "not a folded line",
    ]
)


def test_each_sample_is_charged_to_the_deepest_own_function_and_the_running_library():
    found = profiling.summary(FOLDED)
    assert found["samples"] == 20
    assert found["own"] == [
        (50.0, "outside"),
        (40.0, "job_with_history (store/jobs.py)"),
        (5.0, "get_job (api/jobs.py)"),
        (5.0, "handle (api/gunicorn_worker.py)"),
    ]
    assert found["libraries"] == [
        (50.0, "python"),
        (30.0, "sqlalchemy"),
        (15.0, "ours"),
        (5.0, "flask"),
    ]


def test_the_report_names_the_row_the_part_and_the_largest_shares():
    (line,) = profiling.lines("get_job", {"API": profiling.summary(FOLDED), "worker": {
        "samples": 0, "own": [], "libraries": []}})  # fmt: skip
    assert line.startswith("profile of get_job, API (20 samples): running python 50%")
    assert "charged to outside 50%, job_with_history (store/jobs.py) 40%" in line
