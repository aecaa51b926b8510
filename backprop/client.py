"""A Python client of the service, on httpx.

    from backprop.client import Client

    client = Client("http://127.0.0.1:8000", token)
    job = client.submit(structure=[2, 4, 1], epochs=500, learning_rate=2.0,
                        inputs=X, targets=Y, batch_size=2)
    done = client.wait(job["id"])             # long polls; raises JobFailed unless it succeeded
    net = client.model(job["id"], network=True)  # a core.Network
    outputs = client.predict(job["id"], X)

Arrays travel as ``.npy`` (exact, about 5 bytes a float32). Every error answer raises
``ApiError`` with the problem's detail and field errors. A 429 or 503 is retried after its
``Retry-After`` (tenacity), and a submit carries an ``Idempotency-Key`` so that a retried
submit never makes two jobs.
The reason to change is an API operation the client wraps, or how it calls one.
"""

from __future__ import annotations

import base64
import io
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
from tenacity import RetryCallState, retry, retry_if_exception

FINAL = ("succeeded", "failed", "cancelled")
RETRY_STATUSES = (429, 503)


class ApiError(Exception):
    """An error answer: ``status``, the problem's ``detail``, ``errors`` (field errors) and
    ``request_id``."""

    def __init__(self, status: int, problem: dict):
        self.status, self.problem = status, problem
        self.detail = problem.get("detail") or problem.get("title") or f"HTTP {status}"
        self.errors = problem.get("errors") or []
        self.request_id = problem.get("request_id")
        super().__init__(f"{status}: {self.detail}")


def _api_error(response: httpx.Response) -> ApiError:
    try:
        problem = response.json()
    except ValueError:
        problem = {"detail": response.text[:500]}
    error = ApiError(response.status_code, problem)
    error.retry_after = response.headers.get("Retry-After")
    return error


class JobFailed(Exception):
    """``wait`` saw the job end failed or cancelled."""

    def __init__(self, job: dict):
        self.job = job
        error = job.get("error") or {}
        text = f"{error.get('type')}: {error.get('message')}" if error else job["status"]
        super().__init__(f"job {job['id']} {job['status']} ({text})")


def _retryable(exc: BaseException) -> bool:
    return (
        isinstance(exc, ApiError)
        and exc.status in RETRY_STATUSES
        or isinstance(exc, httpx.TransportError)
    )


def _retry_after(state: RetryCallState) -> float:
    """The answer's Retry-After (whole seconds, so "0" means "within the second"), and never
    less than a short backoff that doubles from 0.25 s."""
    exc = state.outcome.exception() if state.outcome else None
    backoff = min(0.25 * 2 ** (state.attempt_number - 1), 10.0)
    header = getattr(exc, "retry_after", None)
    try:
        return min(max(float(header), backoff), 60.0)
    except (TypeError, ValueError):
        return backoff


def npy(array) -> dict:
    """``{"npy": base64 of numpy.save}``: how arrays go into a request."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return {"npy": base64.b64encode(buffer.getvalue()).decode()}


def _matrix(value):
    return npy(value) if isinstance(value, np.ndarray) else value


class Client:
    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 60.0,
        retry_seconds: float = 120.0,
        transport: httpx.BaseTransport | None = None,
    ):
        self.http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
        )

        def stop(state: RetryCallState) -> bool:
            # an unreachable service is tried three times; a busy one (429, 503) for as long
            # as retry_seconds allows
            if isinstance(state.outcome.exception(), httpx.TransportError):
                return state.attempt_number >= 3
            return state.seconds_since_start >= retry_seconds or state.attempt_number >= 20

        self._retrying = retry(
            retry=retry_if_exception(_retryable), wait=_retry_after, stop=stop, reraise=True
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------ plumbing

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        """One request, retried on 429/503 (after Retry-After) and on connection errors;
        an error answer raises ApiError."""

        def once() -> httpx.Response:
            response = self.http.request(method, path, **kwargs)
            if response.status_code >= 400:
                raise _api_error(response)
            return response

        return self._retrying(once)()

    def _events(self, path: str, params: dict) -> Iterator[tuple[str, dict]]:
        """(event, data) of one server-sent event stream, as they arrive, until it closes;
        opened with the retries of ``request``."""

        def open_stream() -> httpx.Response:
            response = self.http.send(
                self.http.build_request("GET", path, params=params), stream=True
            )
            if response.status_code >= 400:
                response.read()
                response.close()
                raise _api_error(response)
            return response

        response = self._retrying(open_stream)()
        try:
            kind = None
            for line in response.iter_lines():
                if line.startswith("event: "):
                    kind = line[len("event: ") :]
                elif line.startswith("data: "):
                    yield kind, json.loads(line[len("data: ") :])
        finally:
            response.close()

    def _json(self, method: str, path: str, **kwargs):
        response = self.request(method, path, **kwargs)
        return response.json() if response.content else None

    # ---------------------------------------------------------------------------- jobs

    def submit(
        self,
        spec: dict | None = None,
        *,
        inputs=None,
        targets=None,
        dataset: str | None = None,
        batch_size: int = 10,
        shuffle: bool = True,
        idempotency_key: str | None = None,
        **fields,
    ) -> dict:
        """Queue a job: a whole spec, or its fields with ``inputs``/``targets`` (arrays or
        rows) or a ``dataset`` id. Returns the job (status queued)."""
        body = dict(spec or {})
        body.update(fields)
        if dataset is not None:
            body["data"] = {"dataset_id": dataset, "batch_size": batch_size, "shuffle": shuffle}
        elif inputs is not None:
            body["data"] = {
                "inputs": _matrix(inputs),
                "targets": _matrix(targets),
                "batch_size": batch_size,
                "shuffle": shuffle,
            }
        key = idempotency_key or str(uuid.uuid4())  # a retried submit makes one job
        return self._json("POST", "/v1/jobs", json=body, headers={"Idempotency-Key": key})

    def get(self, job_id: str) -> dict:
        return self._json("GET", f"/v1/jobs/{job_id}")

    def list(self, *, status: str | None = None, label: str | None = None) -> Iterator[dict]:
        """Every job of the tenant, newest first, page after page."""
        params = {k: v for k, v in {"status": status, "label": label}.items() if v}
        return self._pages("/v1/jobs", "jobs", params)

    def _pages(self, path: str, key: str, params: dict) -> Iterator[dict]:
        """The items of a listing, following next_cursor to its last page."""
        params = {"limit": 200, **params}
        while True:
            page = self._json("GET", path, params=params)
            yield from page[key]
            if not page.get("next_cursor"):
                return
            params["cursor"] = page["next_cursor"]

    def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        on_update: Callable[[dict], None] | None = None,
        raise_on_failure: bool = True,
    ) -> dict:
        """Long poll until the job ends; ``on_update`` sees every state. Raises JobFailed
        when it failed or was cancelled (unless ``raise_on_failure`` is False), TimeoutError
        after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        etag = None
        while True:
            left = 30.0 if deadline is None else max(0.0, min(30.0, deadline - time.monotonic()))
            headers = {"If-None-Match": etag} if etag else {}
            response = self.request(
                "GET", f"/v1/jobs/{job_id}", params={"wait": f"{left:.1f}"}, headers=headers
            )
            job = response.json()
            etag = response.headers.get("ETag")
            if on_update:
                on_update(job)
            if job["status"] in FINAL:
                if raise_on_failure and job["status"] != "succeeded":
                    raise JobFailed(job)
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s")

    def diff(self, job_id: str, other_id: str) -> dict:
        """What differs between two jobs: spec fields, the first epoch whose metrics differ,
        and whether both final models are the same bits (GET /v1/jobs/{id}/diff)."""
        return self._json("GET", f"/v1/jobs/{job_id}/diff", params={"other": other_id})

    def metrics(self, job_id: str, array: bool = False):
        """One row per finished epoch: dicts, or a NumPy structured array."""
        rows = self._json("GET", f"/v1/jobs/{job_id}/metrics")["metrics"]
        if not array:
            return rows
        names = ["epoch", "cost", "accuracy", "val_cost", "val_accuracy", "seconds"]
        dtype = [("epoch", "i8")] + [(n, "f8") for n in names[1:]]
        values = [tuple(np.nan if r[n] is None else r[n] for n in names) for r in rows]
        return np.array(values, dtype=dtype)

    def model(self, job_id: str, network: bool = False):
        """The trained model: the .npz's arrays (and ``lineage``), or a ``core.Network``."""
        data = self.request("GET", f"/v1/jobs/{job_id}/model.npz").content
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        if not network:
            return arrays
        from core import Network

        return Network.from_arrays(arrays)

    def predict(self, job_id: str, inputs) -> np.ndarray:
        body = {"inputs": _matrix(np.asarray(inputs) if not isinstance(inputs, dict) else inputs)}
        return np.array(self._json("POST", f"/v1/jobs/{job_id}/predict", json=body)["outputs"])

    def cancel(self, job_id: str) -> dict:
        return self._json("POST", f"/v1/jobs/{job_id}/cancel")

    def continue_job(
        self,
        job_id: str,
        epochs: int,
        *,
        max_runtime_seconds: int | None = None,
        idempotency_key: str | None = None,
    ) -> dict:
        """Train an ended job ``epochs`` more from its final state, as a new job (queued)
        whose run is bitwise one job trained for all the epochs (POST .../continue)."""
        body: dict = {"epochs": epochs}
        if max_runtime_seconds is not None:
            body["max_runtime_seconds"] = max_runtime_seconds
        key = idempotency_key or str(uuid.uuid4())  # a retried request makes one job
        return self._json(
            "POST", f"/v1/jobs/{job_id}/continue", json=body, headers={"Idempotency-Key": key}
        )

    def delete(self, job_id: str) -> None:
        self.request("DELETE", f"/v1/jobs/{job_id}")

    def usage(self) -> dict:
        return self._json("GET", "/v1/usage")

    # ---------------------------------------------------------------------------- sweeps

    def submit_sweep(self, body: dict, *, idempotency_key: str | None = None) -> dict:
        """Start a sweep (POST /v1/sweeps); a retried submit makes one sweep."""
        key = idempotency_key or str(uuid.uuid4())
        return self._json("POST", "/v1/sweeps", json=body, headers={"Idempotency-Key": key})

    def sweep(self, sweep_id: str, *, limit: int = 50, offset: int = 0) -> dict:
        """The sweep with a page of its leaderboard (best first)."""
        params = {"limit": limit, "offset": offset}
        return self._json("GET", f"/v1/sweeps/{sweep_id}", params=params)

    def sweeps(self) -> Iterator[dict]:
        return self._pages("/v1/sweeps", "sweeps", {})

    def cancel_sweep(self, sweep_id: str) -> dict:
        return self._json("POST", f"/v1/sweeps/{sweep_id}/cancel")

    def continue_sweep(
        self,
        sweep_id: str,
        *,
        add_trials: int = 0,
        rerun_failed: bool = False,
        extend: dict | None = None,
    ) -> dict:
        """Continue a sweep (POST /v1/sweeps/{id}/continue): a cancelled one resumes; with
        ``add_trials``, ``rerun_failed`` or ``extend`` ({"top": k, "epochs": n}) it does
        more. Every trial that comes back continues exactly where it was."""
        body: dict = {"add_trials": add_trials, "rerun_failed": rerun_failed}
        if extend is not None:
            body["extend"] = extend
        return self._json("POST", f"/v1/sweeps/{sweep_id}/continue", json=body)

    def delete_sweep(self, sweep_id: str) -> None:
        """Delete an ended sweep with its trials (ApiError 409 while it runs)."""
        self.request("DELETE", f"/v1/sweeps/{sweep_id}")

    def wait_sweep(
        self,
        sweep_id: str,
        timeout: float | None = None,
        on_update: Callable[[dict], None] | None = None,
        interval: float = 1.0,
        limit: int = 50,
    ) -> dict:
        """Follow the sweep's event stream until it ended and no trial still runs;
        ``on_update`` sees every state. TimeoutError after ``timeout`` seconds; a dropped
        stream is opened again after ``interval`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 25.0 if deadline is None else min(25.0, deadline - time.monotonic())
            if left <= 0:
                raise TimeoutError(f"sweep {sweep_id} still running after {timeout} s")
            params = {"limit": limit, "timeout": f"{max(left, 1.0):.1f}"}
            try:
                for kind, sweep in self._events(f"/v1/sweeps/{sweep_id}/events", params):
                    if on_update:
                        on_update(sweep)
                    if kind == "end":
                        return sweep
            except (httpx.TransportError, ValueError):  # dropped or cut short: open it again
                time.sleep(interval)

    def best_model(self, sweep_id: str) -> dict:
        """The best trial's model, as GET /v1/jobs/{id}/model gives it."""
        return self._json("GET", f"/v1/sweeps/{sweep_id}/best/model")

    # ------------------------------------------------------------------------ data sets

    def upload(
        self,
        source: str | Path | None = None,
        *,
        inputs=None,
        targets=None,
        name: str | None = None,
        target_columns: list[str] | None = None,
        label: str | None = None,
    ) -> dict:
        """Store a data set from a .npz or .csv file (streamed), or from arrays."""
        params = {k: v for k, v in {"name": name, "label": label}.items() if v}
        if target_columns:
            params["targets"] = ",".join(target_columns)
        if source is None:
            buffer = io.BytesIO()
            np.savez(buffer, inputs=np.asarray(inputs), targets=np.asarray(targets))
            content, kind = buffer.getvalue(), "application/x-npz"
            return self._json(
                "POST", "/v1/datasets", params=params, content=content,
                headers={"Content-Type": kind},
            )  # fmt: skip
        path = Path(source)
        kind = "text/csv" if path.suffix.lower() == ".csv" else "application/x-npz"

        def chunks():
            with open(path, "rb") as f:
                while part := f.read(1 << 20):
                    yield part

        return self._json(
            "POST", "/v1/datasets", params=params, content=chunks(),
            headers={"Content-Type": kind},
        )  # fmt: skip

    def datasets(self) -> Iterator[dict]:
        return self._pages("/v1/datasets", "datasets", {})

    def dataset(self, dataset_id: str) -> dict:
        return self._json("GET", f"/v1/datasets/{dataset_id}")

    def download(self, dataset_id: str) -> dict[str, np.ndarray]:
        data = self.request("GET", f"/v1/datasets/{dataset_id}/data").content
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}

    def delete_dataset(self, dataset_id: str) -> None:
        self.request("DELETE", f"/v1/datasets/{dataset_id}")
