"""An ``.npz`` produced piece by piece, for downloads that never hold the whole archive (data
sets, models). The reason to change is the archive's format.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator

import numpy as np


class _Pipe(io.RawIOBase):
    """A write-only, unseekable file whose bytes are taken as they come."""

    def __init__(self):
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def npz_stream(members) -> Iterator[bytes]:
    """An ``.npz`` produced piece by piece: ``members`` are (name, dtype string, shape, an
    iterator of the member's raw C-ordered bytes)."""
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, dtype, shape, parts in members:
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                header, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)}
            )
            with archive.open(f"{name}.npy", "w", force_zip64=True) as out:
                out.write(header.getvalue())
                for part in parts:
                    out.write(part)
                    yield pipe.take()
            yield pipe.take()
    yield pipe.take()
