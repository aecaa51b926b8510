"""What the OpenAPI document says of the jobs' operations beyond their schemas: the rules
a submit must pass, the headers and the links. The reason to change is that prose."""

from __future__ import annotations

from .openapi import Rule

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
ETAG = {"ETag": {"description": "The job's state", "required": True, "schema": {"type": "string"}}}


def submit_headers(what: str, operation_id: str) -> dict:
    """The headers of a submit's 202: where to poll, and whether it replays a key."""
    return {
        "Location": {
            "description": f"The {what}'s URL ({operation_id})",
            "required": True,
            "schema": {"type": "string"},
        },
        "Idempotent-Replayed": {
            "description": "true when this is the stored answer of an earlier submit with the "
            f"same Idempotency-Key (no new {what} was made)",
            "schema": {"type": "string", "enum": ["true"]},
        },
    }


def attachment(filename: str) -> dict:
    """The Content-Disposition header of a download."""
    return {
        "Content-Disposition": {
            "description": f"attachment; filename={filename}",
            "required": True,
            "schema": {"type": "string"},
        }
    }


SUBMIT_HEADERS = submit_headers("job", "getJob")
NPZ_HEADERS = attachment("<job id>.npz")
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
        "softmax needs an output layer of 2 or more; optimizer momentum with nesterov needs "
        "a momentum above 0 and a dampening of 0",
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
CONTINUE_RULES = (
    Rule(
        "limit_exceeded",
        "the whole run's epochs (the job's so far and the new ones) are at most {max_epochs} "
        "(MAX_EPOCHS), and max_runtime_seconds at most {max_runtime_seconds}",
    ),
    Rule(
        "budget_exceeded",
        "rows x the new epochs x parameters is at most {max_job_cost:.3g} (MAX_JOB_COST)",
    ),
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
