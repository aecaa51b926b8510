"""A corpus of hostile requests against the real stack: each gets a clear 4xx, stores nothing.

Every case asserts the status, that the problem's text names what is wrong, that the answer is
problem+json, and that the number of stored jobs did not change.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from store import tokens
from store.db import get_database
from store.models import Job
from tests.support.stack import Client


def valid() -> dict:
    return {
        "structure": [3, 4, 2],
        "epochs": 2,
        "learning_rate": 1.0,
        "data": {"inputs": [[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]], "targets": [[1.0, 0.0], [0.0, 1.0]]},
    }


def edit(change) -> dict:
    spec = valid()
    change(spec)
    return spec


def raw(text: str) -> bytes:
    return text.encode()


def nested(depth: int) -> bytes:
    return ("[" * depth + "]" * depth).encode()


@dataclass
class Case:
    name: str
    status: int
    words: list[str]
    body: dict | bytes | None = None
    method: str = "POST"
    path: str = "/v1/jobs"
    headers: dict = field(default_factory=dict)
    token: str = "alice"  # alice, bob, none, revoked, expired, garbage


def npy(array, header: bytes | None = None, tail: bytes = b"") -> dict:
    """{"npy": base64 of the .npy file numpy.save writes}, optionally with its header
    replaced (the data is kept) or bytes appended."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    data = buffer.getvalue()
    if header is not None:
        data = header + data[128:]  # numpy.save pads the header to 128 bytes here
    return {"npy": base64.b64encode(data + tail).decode()}


def npy_header(descr: str, shape: tuple) -> bytes:
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    text += " " * (118 - len(text)) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode("latin1")


def with_inputs(value) -> dict:
    return edit(lambda s: s["data"].update(inputs=value))


GOOD_ROWS = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]])
VALID_TEXT = json.dumps(valid())
CASES = [
    # .npy files that are not what they claim
    Case("npy not base64", 422, ["data.inputs.npy", "base64"], with_inputs({"npy": "%%%"})),
    Case(
        "npy random bytes",
        422,
        ["data.inputs.npy", ".npy file"],
        with_inputs({"npy": base64.b64encode(b"hello, not numpy").decode()}),
    ),
    Case(
        "npy pickled objects",
        422,
        ["data.inputs.npy", "floats or integers", "|O"],
        with_inputs(npy(np.array([[{"a": 1}, 2, 3]], dtype=object))),
    ),
    Case(
        "npy strings",
        422,
        ["data.inputs.npy", "floats or integers"],
        with_inputs(npy(np.array([["a", "b", "c"]]))),
    ),
    Case(
        "npy complex",
        422,
        ["data.inputs.npy", "floats or integers"],
        with_inputs(npy(GOOD_ROWS.astype(complex))),
    ),
    Case(
        "npy 3-D",
        422,
        ["data.inputs.npy", "2-D", "(1, 2, 3)"],
        with_inputs(npy(GOOD_ROWS.reshape(1, 2, 3))),
    ),
    Case(
        "npy no rows",
        422,
        ["data.inputs.npy", "at least one row"],
        with_inputs(npy(np.zeros((0, 3)))),
    ),
    Case(
        "npy wrong width",
        422,
        ["data.inputs", "3 values", "structure[0]", "(2, 4)"],
        with_inputs(npy(np.zeros((2, 4)))),
    ),
    Case(
        "npy NaN in row 1",
        422,
        ["data.inputs[1]", "finite"],
        with_inputs(npy(np.array([[0.1, 0.2, 0.3], [0.3, np.nan, 0.1]]))),
    ),
    Case(
        "npy header claims a billion rows",
        422,
        ["data.inputs.npy", "24000000000 bytes", "the file has 48"],
        with_inputs(npy(GOOD_ROWS, header=npy_header("<f8", (10**9, 3)))),
    ),
    Case(
        "npy trailing bytes",
        422,
        ["data.inputs.npy", "need 48 bytes", "the file has 49"],
        with_inputs(npy(GOOD_ROWS, tail=b"x")),
    ),
    Case(
        "npy targets rows differ from inputs",
        422,
        ["data.targets", "expected 2 rows"],
        edit(lambda s: s["data"].update(targets=npy(np.eye(2)[:1]))),
    ),
    Case(
        "npy float32 overflow",
        422,
        ["options.dtype", "too large for float32"],
        edit(
            lambda s: (
                s["data"].update(inputs=npy(GOOD_ROWS * 1e300)),
                s.update(options={"dtype": "float32"}),
            )
        ),
    ),
    Case(
        "npy not an object",
        422,
        ["data.inputs", "valid list"],
        with_inputs("k05VTVBZAQB2AHsn"),
    ),
    Case(
        "npy with an extra field",
        422,
        ["data.inputs.shape", "Extra inputs"],
        with_inputs({**npy(GOOD_ROWS), "shape": [2, 3]}),
    ),
    # numbers that are not numbers
    Case(
        "json NaN",
        400,
        ["malformed JSON", "NaN is not a JSON value"],
        raw(VALID_TEXT.replace("0.2, 0.3]", "NaN, 0.3]", 1)),
    ),
    Case(
        "json Infinity",
        400,
        ["malformed JSON", "Infinity is not a JSON value"],
        raw(VALID_TEXT.replace('"learning_rate": 1.0', '"learning_rate": Infinity')),
    ),
    Case(
        "json -Infinity in targets",
        400,
        ["malformed JSON", "-Infinity is not a JSON value"],
        raw(VALID_TEXT.replace('"targets": [[1.0', '"targets": [[-Infinity')),
    ),
    Case(
        "1e999 overflows to infinity",
        422,
        ["learning_rate", "finite"],
        raw(VALID_TEXT.replace('"learning_rate": 1.0', '"learning_rate": 1e999')),
    ),
    Case(
        "1e999 as epochs",
        422,
        ["epochs", "integer"],
        raw(VALID_TEXT.replace('"epochs": 2', '"epochs": 1e999')),
    ),
    Case("boolean as epochs", 422, ["epochs", "integer"], edit(lambda s: s.update(epochs=True))),
    Case(
        "boolean in a row",
        422,
        ["data.inputs[0][0]", "number"],
        edit(lambda s: s["data"]["inputs"][0].__setitem__(0, True)),
    ),
    Case(
        "boolean as rate",
        422,
        ["learning_rate", "number"],
        edit(lambda s: s.update(learning_rate=False)),
    ),
    Case(
        "digits string as epochs", 422, ["epochs", "integer"], edit(lambda s: s.update(epochs="5"))
    ),
    Case(
        "digits string as rate",
        422,
        ["learning_rate", "number"],
        edit(lambda s: s.update(learning_rate="0.5")),
    ),
    Case(
        "string in a row",
        422,
        ["data.inputs[1][2]", "number"],
        edit(lambda s: s["data"]["inputs"][1].__setitem__(2, "0.1")),
    ),
    Case(
        "nested array where a number belongs",
        422,
        ["data.inputs[0][0]", "number"],
        edit(lambda s: s["data"]["inputs"][0].__setitem__(0, [0.1])),
    ),
    Case(
        "fractional layer size",
        422,
        ["structure[1]", "integer"],
        edit(lambda s: s.update(structure=[3, 4.5, 2])),
    ),
    # shapes
    Case(
        "input row too long",
        422,
        ["data.inputs[1]", "expected 3", "got 4"],
        edit(lambda s: s["data"]["inputs"][1].append(0.4)),
    ),
    Case(
        "ragged target rows",
        422,
        ["data.targets[1]", "expected 2", "got 1"],
        edit(lambda s: s["data"]["targets"][1].pop()),
    ),
    Case(
        "fewer targets than inputs",
        422,
        ["data.targets", "expected 2 rows", "got 1"],
        edit(lambda s: s["data"]["targets"].pop()),
    ),
    Case(
        "empty inputs",
        422,
        ["data.inputs", "at least 1"],
        edit(lambda s: s["data"].update(inputs=[], targets=[])),
    ),
    Case(
        "empty batches",
        422,
        ["data.batches", "at least 1"],
        edit(lambda s: s.update(data={"batches": []})),
    ),
    Case(
        "an empty batch",
        422,
        ["data.batches[0]", "at least 1"],
        edit(lambda s: s.update(data={"batches": [[]]})),
    ),
    Case(
        "pair that is not a pair",
        422,
        ["data.batches[0][0]", "at least 2"],
        edit(lambda s: s.update(data={"batches": [[[[0.1, 0.2, 0.3]]]]})),
    ),
    Case(
        "batch input of the wrong size",
        422,
        ["data.batches[0][0][0]", "expected an input of 3"],
        edit(lambda s: s.update(data={"batches": [[[[0.1, 0.2], [1.0, 0.0]]]]})),
    ),
    Case(
        "validation set of the wrong width",
        422,
        ["options.validation.inputs[0]", "expected 3"],
        edit(
            lambda s: s.update(options={"validation": {"inputs": [[1.0]], "targets": [[1.0, 0.0]]}})
        ),
    ),
    Case("missing data", 422, ["data", "required"], edit(lambda s: s.pop("data"))),
    Case("top-level array", 422, ["object"], raw("[1, 2, 3]")),
    # absurd sizes and numbers
    Case("one layer", 422, ["structure", "at least 2"], edit(lambda s: s.update(structure=[3]))),
    Case(
        "zero-width layer",
        422,
        ["structure[1]", "greater than or equal to 1"],
        edit(lambda s: s.update(structure=[3, 0, 2])),
    ),
    Case("negative layer", 422, ["structure[1]"], edit(lambda s: s.update(structure=[3, -4, 2]))),
    Case(
        "a million-wide layer",
        422,
        ["structure[1]", "at most 8192 wide"],
        edit(lambda s: s.update(structure=[3, 1_000_000, 2])),
    ),
    Case(
        "a thousand layers",
        422,
        ["structure", "at most 64 layers"],
        edit(lambda s: s.update(structure=[3] + [4] * 998 + [2])),
    ),
    Case(
        "epochs 10^12",
        422,
        ["epochs", "at most 100000 epochs"],
        edit(lambda s: s.update(epochs=10**12)),
    ),
    Case(
        "epochs zero",
        422,
        ["epochs", "greater than or equal to 1"],
        edit(lambda s: s.update(epochs=0)),
    ),
    Case(
        "negative rate",
        422,
        ["learning_rate", "greater than 0"],
        edit(lambda s: s.update(learning_rate=-0.1)),
    ),
    Case(
        "zero rate",
        422,
        ["learning_rate", "greater than 0"],
        edit(lambda s: s.update(learning_rate=0)),
    ),
    Case(
        "batch size zero",
        422,
        ["data.batch_size", "greater than or equal to 1"],
        edit(lambda s: s["data"].update(batch_size=0)),
    ),
    Case("negative l2", 422, ["options.l2"], edit(lambda s: s.update(options={"l2": -1.0}))),
    Case("seed out of range", 422, ["seed"], edit(lambda s: s.update(seed=2**40))),
    Case(
        "compute budget",
        422,
        ["epochs", "budget", "compute cost"],
        edit(
            lambda s: s.update(
                structure=[3, 3000, 3000, 2],  # under MAX_PARAMETERS: the budget refuses it
                epochs=90000,
                data={"inputs": [[0.1, 0.2, 0.3]] * 4, "targets": [[1.0, 0.0]] * 4},
            )
        ),
    ),
    Case(
        "too many parameters",
        422,
        ["structure", "MAX_PARAMETERS"],
        edit(lambda s: s.update(structure=[3, 8000, 8000, 2], epochs=1)),
    ),
    Case(
        "runtime over the limit",
        422,
        ["options.max_runtime_seconds", "at most"],
        edit(lambda s: s.update(options={"max_runtime_seconds": 10**9})),
    ),
    Case(
        "cross-entropy with identity output",
        422,
        ["options.output_activation", "cross_entropy"],
        edit(
            lambda s: s.update(options={"cost": "cross_entropy", "output_activation": "identity"})
        ),
    ),
    Case(
        "cross-entropy with targets outside [0, 1]",
        422,
        ["data.targets", "between 0 and 1"],
        edit(
            lambda s: (
                s.update(options={"cost": "cross_entropy"}),
                s["data"]["targets"][0].__setitem__(0, 3.0),
            )
        ),
    ),
    Case(
        "unknown activation",
        422,
        ["options.activation"],
        edit(lambda s: s.update(options={"activation": "swish"})),
    ),
    Case("name too long", 422, ["name", "at most 200"], edit(lambda s: s.update(name="x" * 201))),
    Case("NUL in the name", 422, ["name", "pattern"], edit(lambda s: s.update(name="a\u0000b"))),
    Case(
        "control character in a label",
        422,
        ["labels"],
        edit(lambda s: s.update(labels={"k": "v\u0007"})),
    ),
    Case("bad label key", 422, ["labels"], edit(lambda s: s.update(labels={"bad key!": "v"}))),
    Case(
        "too many labels",
        422,
        ["labels"],
        edit(lambda s: s.update(labels={f"k{i}": "v" for i in range(21)})),
    ),
    # syntax and framing
    Case(
        "unknown field",
        422,
        ["optimizer", "not permitted"],
        edit(lambda s: s.update(optimizer="sgd")),
    ),
    Case(
        "duplicate keys",
        400,
        ["duplicate key", "epochs"],
        raw(VALID_TEXT.replace('"epochs": 2', '"epochs": 2, "epochs": 3')),
    ),
    Case("malformed JSON", 400, ["malformed JSON"], raw('{"structure": [3, 4, 2],')),
    Case("empty body", 400, ["malformed JSON"], b""),
    Case("invalid UTF-8", 400, ["malformed JSON", "not UTF-8"], b'{"name": "\xff\xfe"}'),
    Case("UTF-16", 400, ["not UTF-8"], VALID_TEXT.encode("utf-16")),
    Case("byte order mark", 400, ["byte order mark"], b"\xef\xbb\xbf" + raw(VALID_TEXT)),
    Case("unpaired surrogate", 400, ["unpaired surrogate"], raw('{"name": "\\ud800"}')),
    Case(
        "an integer of 5,000 digits",
        422,
        ["epochs", "valid integer"],
        raw(VALID_TEXT.replace('"epochs": 2', '"epochs": ' + "9" * 5000)),
    ),
    Case(
        "ragged rows and a row count mismatch together",
        422,
        ["data.inputs[0]", "data.inputs[2]", "expected 3 rows", "data.targets"],
        edit(
            lambda s: s["data"].update(
                inputs=[[0.1], [0.1, 0.2, 0.3], [0.2, 0.3]], targets=[[1.0, 0.0]] * 2
            )
        ),
    ),
    Case(
        "a URL over the server's limit",
        414,
        ["too long"],
        None,
        "GET",
        "/v1/jobs?cursor=" + "1" * 4100,
    ),
    Case("a job id of 5,000 characters", 414, ["too long"], None, "GET", "/v1/jobs/" + "a" * 5000),
    Case("deeply nested JSON", 400, ["malformed JSON", "nested too deeply"], nested(100_000)),
    Case(
        "wrong content type",
        415,
        ["application/json"],
        raw(VALID_TEXT),
        headers={"Content-Type": "text/plain"},
    ),
    Case(
        "form content type",
        415,
        ["application/json"],
        raw("epochs=2"),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ),
    Case("body over the limit", 413, ["too large"], b'{"name": "' + b"x" * (5 * 2**20) + b'"}'),
    Case(
        "bad Idempotency-Key",
        422,
        ["Idempotency-Key"],
        valid(),
        headers={"Idempotency-Key": "é" * 3},
    ),
    # queries
    Case("malformed cursor", 422, ["query.cursor", "cursor"], None, "GET", "/v1/jobs?cursor=@@@"),
    Case(
        "limit too large",
        422,
        ["query.limit", "less than or equal to 200"],
        None,
        "GET",
        "/v1/jobs?limit=1000",
    ),
    Case("unknown status", 422, ["query.status"], None, "GET", "/v1/jobs?status=exploded"),
    Case("unknown query parameter", 422, ["query.sort"], None, "GET", "/v1/jobs?sort=asc"),
    Case("unknown query parameter", 422, ["query.bogus"], None, "GET", "/v1/jobs?bogus=1"),
    # who is asking
    Case("no token", 401, ["Bearer"], valid(), token="none"),
    Case("unknown token", 401, ["unknown, expired or revoked"], valid(), token="garbage"),
    Case("revoked token", 401, ["unknown, expired or revoked"], valid(), token="revoked"),
    Case("expired token", 401, ["unknown, expired or revoked"], valid(), token="expired"),
    Case(
        "basic auth instead of bearer",
        401,
        ["Bearer"],
        valid(),
        headers={"Authorization": "Basic YWxpY2U6c2VjcmV0"},
        token="none",
    ),
    Case("another tenant's job", 404, ["no job"], None, "GET", "/v1/jobs/{job}", token="bob"),
    Case(
        "another tenant cancels",
        404,
        ["no job"],
        None,
        "POST",
        "/v1/jobs/{job}/cancel",
        token="bob",
    ),
    Case(
        "unknown job", 404, ["no job"], None, "GET", "/v1/jobs/00000000-0000-0000-0000-000000000000"
    ),
    Case("NUL as a job id", 404, ["no job"], None, "GET", "/v1/jobs/%00"),
    Case("not a uuid", 404, ["no job"], None, "GET", "/v1/jobs/" + "9" * 300),
    Case(
        "predict with the wrong width",
        422,
        ["inputs[1]", "expected 3 values (the network's structure[0]), got 2"],
        {"inputs": [[0.1, 0.2, 0.3], [0.1, 0.2]]},
        "POST",
        "/v1/jobs/{job}/predict",
    ),
    Case(
        "predict with NaN",
        400,
        ["malformed JSON", "NaN"],
        raw('{"inputs": [[NaN, 0.1, 0.2]]}'),
        "POST",
        "/v1/jobs/{job}/predict",
    ),
]


@pytest.fixture(scope="module")
def setup(stack):
    """A succeeded job of alice's to aim at, and tokens in every state."""
    alice = stack.client("alice")
    job = alice.submit(valid())
    assert alice.wait(job["id"])["status"] == "succeeded"
    db = get_database(stack.database_url)
    with db.session() as s:
        revoked = tokens.create_token(s, "alice")
        tokens.revoke_token(s, revoked.id)
        expired = tokens.create_token(s, "alice", expires_at=datetime.now(UTC) - timedelta(1))
    return {
        "job": job["id"],
        "tokens": {
            **stack.tokens,
            "revoked": revoked.token,
            "expired": expired.token,
            "garbage": "bpj_not-a-token",
            "none": None,
        },
    }


def count_jobs(database_url: str) -> int:
    with get_database(database_url).session() as s:
        return s.query(Job).count()


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_request(stack, setup, case: Case):
    client = Client(stack.base, setup["tokens"][case.token])
    headers = dict(case.headers)
    kwargs = {}
    if isinstance(case.body, dict):
        kwargs["data"] = json.dumps(case.body)
        headers.setdefault("Content-Type", "application/json")
    elif isinstance(case.body, bytes):
        kwargs["data"] = case.body
        headers.setdefault("Content-Type", "application/json")
    before = count_jobs(stack.database_url)
    response = client.request(
        case.method, case.path.format(job=setup["job"]), headers=headers, **kwargs
    )
    assert response.status_code == case.status, response.text[:500]
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = response.json()
    text = json.dumps(problem)
    for word in case.words:
        assert word in text, f"{word!r} not in {text[:800]}"
    assert problem["status"] == case.status and problem["request_id"]
    assert "Traceback" not in text
    if case.status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert count_jobs(stack.database_url) == before


def test_chunked_body_over_the_limit_is_413(stack):
    client = stack.client()

    def chunks():
        yield b'{"name": "'
        for _ in range(80):
            yield b"x" * 65536  # 5 MiB in all, with no Content-Length
        yield b'"}'

    before = count_jobs(stack.database_url)
    response = client.post("/v1/jobs", data=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.headers["Content-Type"] == "application/problem+json"
    assert count_jobs(stack.database_url) == before
