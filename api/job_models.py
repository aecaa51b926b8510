"""/v1/jobs/{id}/model, model.npz, predict and predict.npz: what a succeeded job's model
answers. The reason to change is how a trained model is read, sent or run."""

from __future__ import annotations

import io

import numpy as np
from flask import Blueprint, Response, g, stream_with_context

from core.workspace import parameter_count
from service.jobs import find_dataset
from store import dataset_reader, job_data, npz
from store.models import SUCCEEDED

from .field_errors import SpecError, field_error
from .job_rules import NPZ_HEADERS, PREDICT_RULES
from .jobs import find_job
from .matrices import matrix_input
from .openapi import Rule, operation
from .problems import ApiProblem
from .schemas.models import ModelOut, PredictDatasetRequest, PredictOut, PredictRequest
from .services import context, services
from .slots import held_until_closed
from .views import json_response as _json
from .views import lineage_view

bp = Blueprint("job_models", __name__, url_prefix="/v1/jobs")


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
    give_back = held_until_closed(s.transfers)  # a slow reader holds a thread meanwhile
    response = Response(
        stream_with_context(part for part in stream if part),
        mimetype="application/octet-stream",
        headers={"Content-Disposition": f"attachment; filename={job_id}-outputs.npz"},
    )
    response.call_on_close(give_back)
    return response


def _succeeded(session, job_id: str):
    """The tenant's job, once it succeeded (404, or 409 before that)."""
    job = find_job(session, job_id)
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
        parameters = job.spec.parameters
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
