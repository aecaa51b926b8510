"""Uploads whose cost is not their size, sent to the live API: each is refused with a 4xx
naming what is wrong, quickly, and the API's processes grow by less than 64 MiB meanwhile
(their resident memory sampled every 10 ms while the request runs)."""

from __future__ import annotations

import io
import threading
import time
import zipfile

import numpy as np
import psutil
import pytest

GROWTH_BOUND = 64 * 2**20


def api_memory(api) -> int:
    """Resident bytes of the API's gunicorn processes, master and workers."""
    master = psutil.Process(api.process.pid)
    total = 0
    for process in [master, *master.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def peak_growth(api, send) -> tuple[int, object, float]:
    """(the largest growth of the API's memory while ``send()`` ran, its answer, seconds)."""
    before = api_memory(api)
    peak, done = [before], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], api_memory(api))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    try:
        answer = send()
    finally:
        took = time.monotonic() - started
        done.set()
        sampler.join()
    return peak[0] - before, answer, took


def npz(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def npy_header(shape, dtype="<f8") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": dtype, "fortran_order": False, "shape": shape}
    )
    return buffer.getvalue()


def _declared_header_bomb() -> bytes:
    # a header that says it is 2 GiB long, then 64 MiB of spaces: about 64 KB deflated
    head = b"\x93NUMPY\x02\x00" + (2**31).to_bytes(4, "little")
    return npz({"inputs.npy": head + b" " * (64 * 2**20)})


def _huge_shape() -> bytes:
    return npz({"inputs.npy": npy_header((10**7, 8192)) + b"\0" * 1024})


def _wide_row() -> bytes:
    return npz({"inputs.npy": npy_header((2, 10**7)) + b"\0" * (2**20)})


BOMBS = {
    "npz: a header declared 2 GiB long": (_declared_header_bomb, "application/x-npz", 422),
    "npz: a shape of 655 GB": (_huge_shape, "application/x-npz", 413),
    "npz: rows of 10 million columns": (_wide_row, "application/x-npz", 422),
    "csv: 100,000 columns": (
        lambda: (",".join(f"c{i}" for i in range(100_000)) + "\n").encode(),
        "text/csv",
        422,
    ),
    "csv: 5,000 classes": (
        lambda: ("x,y\n" + "".join(f"{i},class{i}\n" for i in range(5000))).encode(),
        "text/csv",
        422,
    ),
}


@pytest.mark.parametrize("bomb", list(BOMBS))
def test_an_upload_bomb_is_refused_without_growing_the_api(stack, bomb):
    make, mimetype, status = BOMBS[bomb]
    body = make()
    client = stack.client()
    params = {"label": "y"} if "classes" in bomb else {"targets": "c0"} if "csv" in bomb else {}
    growth, answer, took = peak_growth(
        stack.api,
        lambda: client.post(
            "/v1/datasets", data=body, params=params, headers={"Content-Type": mimetype}
        ),
    )
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert growth < GROWTH_BOUND, f"{bomb}: the API grew by {growth / 2**20:.0f} MiB"
    assert took < 5, f"{bomb}: {took:.1f} s"
    print(
        f"{bomb}: {len(body)} bytes sent, {status} in {took:.2f} s, API +{growth / 2**20:.1f} MiB"
    )


def test_the_json_form_is_held_to_the_json_limit(stack):
    # MAX_CONTENT_LENGTH is 4 MiB in this stack; the data set limit is 2 GiB
    row = "[" + ",".join(["0.5"] * 64) + "]"
    rows = ",".join([row] * (5 * 2**20 // len(row)))
    body = f'{{"inputs": [{rows}], "targets": [{rows}]}}'.encode()
    answer = stack.client().post(
        "/v1/datasets", data=body, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 413, answer.text
