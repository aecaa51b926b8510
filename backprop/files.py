"""Files that hold secrets (the session key, the dev token, the dev environment).
The reason to change is how a file that holds a secret is written."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file that only its owner may read, from its first byte: created
    with mode 0600 (never written, then narrowed), and narrowed if it existed wider."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        os.fchmod(fd, 0o600)
        file.write(text)
