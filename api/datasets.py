"""/v1/datasets: upload a data set once (streamed), list, read, download, delete; jobs train
on it by id. Handlers pick the parser for the body (``api/uploads.py``) and delegate the
rules to ``store.datasets``. The reason to change is how a /v1/datasets operation reads its
request or shapes its answer."""

from __future__ import annotations

import tempfile
from contextlib import ExitStack

from flask import Blueprint, Response, g, request, stream_with_context, url_for
from sqlalchemy.exc import IntegrityError

from service.datasets import remove_dataset
from store import dataset_reader, dataset_writer, datasets

from . import uploads
from .body import parse_body
from .field_errors import SpecError, field_error
from .job_rules import NPY_RULE, attachment
from .openapi import Rule, operation
from .problems import ApiProblem
from .schemas.datasets import (
    DatasetCreate,
    DatasetList,
    DatasetListQuery,
    DatasetOut,
    DatasetUploadQuery,
    MemberOut,
)
from .services import context, services
from .slots import held_until_closed
from .views import json_response as _json

bp = Blueprint("datasets", __name__, url_prefix="/v1/datasets")

NPZ = "application/x-npz"
OCTETS = "application/octet-stream"  # the same .npz bytes, for clients that know no other
BINARY = {"type": "string", "format": "binary"}
NPZ_BODY = {**BINARY, "description": "numpy.savez or numpy.savez_compressed of inputs and targets"}
UPLOAD_BODIES = {
    NPZ: NPZ_BODY,
    OCTETS: NPZ_BODY,
    "text/csv": {
        "type": "string",
        "description": "A header row, then a row per sample; name the targets with ?targets= "
        "or a class column with ?label=",
    },
    "multipart/form-data": {
        "type": "object",
        "properties": {"file": {**BINARY, "description": "a .npz or a .csv file"}},
        "required": ["file"],
    },
    "application/json": DatasetCreate,
}
LOCATION = {
    "Location": {
        "description": "The data set's URL",
        "required": True,
        "schema": {"type": "string"},
    }
}
DEDUPLICATED = {
    "Deduplicated": {
        "description": "true: the tenant already stored these arrays; this is that data set",
        "required": True,
        "schema": {"type": "string", "enum": ["true"]},
    },
    **LOCATION,
}


class _AlreadyStored(Exception):
    def __init__(self, sha256: str):
        self.sha256 = sha256


def dataset_view(row) -> DatasetOut:
    return DatasetOut(
        id=row.id,
        name=row.name,
        labels=row.labels,
        samples=row.samples,
        inputs=MemberOut(**{k: row.members["inputs"][k] for k in ("shape", "dtype")}),
        targets=MemberOut(**{k: row.members["targets"][k] for k in ("shape", "dtype")}),
        classes=row.classes,
        bytes=row.bytes,
        sha256=row.sha256,
        created_at=row.created_at,
    )


UPLOAD_RULES = (
    Rule(
        "npz",
        "a .npz body (or form file) is a complete zip of inputs.npy and targets.npy, as "
        "numpy.savez or numpy.savez_compressed write it",
    ),
    Rule(
        "dataset",
        "inputs and targets are 2-D, C-ordered arrays of finite floats or integers with as "
        "many rows each; a CSV upload names its targets with ?targets= or ?label= (one of "
        "the two), and those columns are in its header",
    ),
    Rule("csv", "a CSV is UTF-8 text, every row has the header's cells, every cell a number"),
    Rule("file_type", "a form's file field holds a .npz or a .csv"),
    Rule("size_mismatch", "in the JSON form, every row is as wide as its matrix's first row"),
    Rule("npy", NPY_RULE.text),
)


@bp.post("")
@operation(
    "createDataset",
    query=DatasetUploadQuery,
    responses={201: DatasetOut, 200: DatasetOut},
    raw_bodies=UPLOAD_BODIES,
    response_headers={201: LOCATION, 200: DEDUPLICATED},
    rules=UPLOAD_RULES,
)
def create_dataset(query: DatasetUploadQuery):
    """Store a data set: inputs and targets, streamed in (201 with a Location).

    The body is one of: the bytes of a .npz (application/x-npz or application/octet-stream)
    holding `inputs` and `targets` (2-D arrays of
    floats or integers, as many rows each), a CSV with a header row (with ?targets=col1,col2
    naming the target columns, or ?label=col naming a class column that becomes one-hot
    targets), a multipart form with a file field `file` (.npz or .csv), or the JSON form of
    a job's inline data. It is checked as it arrives and nothing of a failed upload is kept.
    The same arrays uploaded again by the tenant answer 200 with `Deduplicated: true` and
    the data set stored first."""
    s = services()
    mimetype = request.mimetype
    if mimetype != "application/json":  # the JSON form is parsed whole: the JSON limit holds
        request.max_content_length = s.settings.max_dataset_bytes
    if mimetype not in UPLOAD_BODIES:
        raise ApiProblem(
            415,
            f"send the data set as one of {', '.join(UPLOAD_BODIES)}, "
            f"not {mimetype or 'nothing'!r}",
            slug="unsupported-media-type",
        )
    body = parse_body(DatasetCreate) if mimetype == "application/json" else None
    name = body.name if body else query.name
    labels = body.labels if body else {}
    try:
        with ExitStack() as cleanup:
            # the whole body is in (on local disk) before the database is touched: a slow
            # client holds no transaction, and the checks and writes run at disk speed
            stream = _spooled_body(mimetype, cleanup, _spool_limit(mimetype))
            session = cleanup.enter_context(s.db.session())
            left = s.settings.max_dataset_storage_bytes - datasets.stored_bytes(session, g.tenant)
            builder = dataset_writer.DatasetBuilder(
                session,
                g.tenant,
                name,
                labels,
                s.settings.blob_chunk_bytes,
                max_columns=s.settings.max_layer_width,
                max_bytes=max(0, min(s.settings.max_dataset_bytes, left)),
            )
            try:
                classes = _read_body(builder, mimetype, body, stream, query)
            except BaseException:
                builder.abandon()  # its writer stops before the rollback
                raise
            dataset = builder.finish(classes)
            if datasets.find_duplicate(session, dataset) is not None:
                raise _AlreadyStored(dataset.sha256)  # rolls back what was written
            used = datasets.stored_bytes_in_turn(session, g.tenant)
            if used > s.settings.max_dataset_storage_bytes:
                raise ApiProblem(
                    413,
                    f"the tenant's data sets would take {used} bytes, over its storage quota "
                    f"of {s.settings.max_dataset_storage_bytes}; delete some first",
                    slug="storage-quota",
                )
            view = dataset_view(dataset)
    except (_AlreadyStored, IntegrityError) as exc:
        # stored before, or by a concurrent twin that committed first
        sha256 = exc.sha256 if isinstance(exc, _AlreadyStored) else builder.sha256
        with s.db.reading() as session:
            existing = datasets.by_sha256(session, g.tenant, sha256)
            if existing is None:
                raise
            view = dataset_view(existing)
        headers = {"Deduplicated": "true", "Location": _location(view.id)}
        return _json(view, 200, headers)
    g.dataset_id = view.id
    return _json(view, 201, {"Location": _location(view.id)})


# a .npz's arrays take at least its bytes less the zip's and the headers' own
NPZ_OVERHEAD_BYTES = 1 << 20


def _spool_limit(mimetype: str) -> int | None:
    """How much of a .npz body may be spooled: what the tenant may still store, and the
    zip's overhead (read before the spool, outside any transaction; the final count is
    exact). A CSV's text may be longer than the floats it stores: only MAX_DATASET_BYTES."""
    if mimetype not in (NPZ, OCTETS):
        return None
    s = services()
    with s.db.reading() as session:
        left = s.settings.max_dataset_storage_bytes - datasets.stored_bytes(session, g.tenant)
    return max(0, left) + NPZ_OVERHEAD_BYTES


def _spooled_body(mimetype: str, cleanup: ExitStack, limit: int | None):
    """The raw body copied to a temporary file (closed, and so removed, by ``cleanup``), at
    most ``limit`` bytes of it (413 past that); a multipart form is spooled by werkzeug
    itself (a large file part to disk, not memory)."""
    if mimetype == "application/json":
        return None  # parsed already, under the JSON limit
    if mimetype == "multipart/form-data":
        request.files  # noqa: B018 (parses the form)
        return None
    spool = cleanup.enter_context(tempfile.TemporaryFile())
    while chunk := request.stream.read(uploads.READ_BYTES):
        spool.write(chunk)
        if limit is not None and spool.tell() > limit:
            quota = services().settings.max_dataset_storage_bytes
            raise ApiProblem(
                413,
                f"the data set is larger than what the tenant may still store (its storage "
                f"quota is {quota} bytes); delete some first",
                slug="storage-quota",
            )
    spool.seek(0)
    return spool


def _read_body(builder, mimetype: str, body, stream, query: DatasetUploadQuery):
    if mimetype == "application/json":
        uploads.from_json(builder, body)
        return None
    if mimetype in (NPZ, OCTETS):
        uploads.from_npz(builder, uploads.body_chunks(stream))
        return None
    if mimetype == "text/csv":
        return _csv(builder, stream, query)
    upload = request.files.get("file")  # spooled by werkzeug
    if upload is None:
        error = field_error(("body", "file"), "expected a file field named 'file'")
        raise SpecError([error])
    filename = (upload.filename or "").lower()
    if filename.endswith(".npz") or upload.mimetype in (NPZ, OCTETS, "application/zip"):
        uploads.from_npz(builder, uploads.body_chunks(upload.stream))
        return None
    if filename.endswith(".csv") or upload.mimetype == "text/csv":
        return _csv(builder, upload.stream, query)
    error = field_error(("body", "file"), "expected a .npz or a .csv file", "file_type")
    raise SpecError([error])


def _csv(builder, stream, query: DatasetUploadQuery):
    targets = [c.strip() for c in query.targets.split(",")] if query.targets else None
    return uploads.from_csv(
        builder,
        stream,
        targets=targets,
        label=query.label,
        dtype=query.dtype,
        max_classes=services().settings.max_classes,
    )


def _location(dataset_id: str) -> str:
    return url_for("datasets.get_dataset", dataset_id=dataset_id)


@bp.get("")
@operation("listDatasets", query=DatasetListQuery, responses={200: DatasetList})
def list_datasets(query: DatasetListQuery):
    """The tenant's data sets, newest first, a page at a time."""
    with services().db.reading() as session:
        rows, next_cursor = datasets.list_datasets(session, g.tenant, query.limit, query.cursor)
        views = [dataset_view(r) for r in rows]
    return _json(DatasetList(datasets=views, next_cursor=next_cursor))


@bp.get("/<dataset_id>")
@operation("getDataset", responses={200: DatasetOut})
def get_dataset(dataset_id: str):
    """One data set: shapes, dtypes, bytes, sha256, classes."""
    with services().db.reading() as session:
        return _json(dataset_view(_find(session, dataset_id)))


@bp.get("/<dataset_id>/data")
@operation(
    "getDatasetData",
    responses={200: None},
    binary={200: OCTETS},
    response_headers={200: attachment("<data set id>.npz")},
)
def get_dataset_data(dataset_id: str):
    """The data set back as a .npz of inputs and targets, streamed (numpy.load reads it)."""
    s = services()
    with s.db.reading() as session:
        dataset = _find(session, dataset_id)  # 404 before the answer starts
    # each handful of chunks is read apart: no connection waits on the client
    parts = (part for part in dataset_reader.stream_npz(s.db, dataset) if part)
    give_back = held_until_closed(s.transfers)  # a slow reader holds a thread meanwhile
    response = Response(
        stream_with_context(parts),
        mimetype=OCTETS,
        headers={"Content-Disposition": f"attachment; filename={dataset_id}.npz"},
    )
    response.call_on_close(give_back)
    return response


@bp.delete("/<dataset_id>")
@operation("deleteDataset", responses={204: None, 409: None})
def delete_dataset(dataset_id: str):
    """Delete a data set (409 naming the jobs while a queued or running job uses it)."""
    g.dataset_id = dataset_id
    remove_dataset(context(), dataset_id)
    return Response(status=204)


def _find(session, dataset_id: str):
    """The tenant's data set (DatasetNotFound: a 404)."""
    g.dataset_id = dataset_id
    return datasets.get_dataset(session, g.tenant, dataset_id)
