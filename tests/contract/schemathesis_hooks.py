"""What the schemathesis runs need to know about our document, loaded with SCHEMATHESIS_HOOKS.

- ``npy-base64`` strings are generated as real .npy files (2-D, finite numbers), as the
  format's description says, instead of arbitrary base64 that no .npy reader takes.
- ``positive_data_acceptance_with_rules`` is schemathesis's positive data acceptance check
  with the one exception the contract allows: a 422 whose every field error names a rule
  that the operation's ``x-rules`` lists (rules JSON Schema cannot state, such as rows as
  wide as ``structure[0]``). Anything else is the built-in check's verdict, unchanged; the
  run excludes the built-in one so that each request is judged once.
"""

from __future__ import annotations

import base64
import io
import os

import numpy as np
import schemathesis
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance


@st.composite
def _npy(draw) -> str:
    rows = draw(st.integers(1, 4))
    columns = draw(st.integers(1, 4))
    dtype = draw(st.sampled_from(["<f8", "<f4", "<i8"]))
    if dtype[1] == "i":
        values = st.integers(-1000, 1000)
    else:
        values = st.floats(-1e3, 1e3, allow_nan=False, width=32)
    data = draw(st.lists(values, min_size=rows * columns, max_size=rows * columns))
    buffer = io.BytesIO()
    np.save(buffer, np.array(data, dtype=dtype).reshape(rows, columns))
    return base64.b64encode(buffer.getvalue()).decode()


schemathesis.openapi.format("npy-base64", _npy())


def excused_by_a_rule(case, response) -> bool:
    """A 422 whose errors each name a rule the operation documents in x-rules."""
    if response.status_code != 422:
        return False
    rules = {r["type"] for r in case.operation.definition.raw.get("x-rules", [])}
    try:
        errors = response.json().get("errors") or []
    except ValueError:
        return False
    return bool(errors) and all(e.get("type") in rules for e in errors)


@schemathesis.check
def positive_data_acceptance_with_rules(ctx, response, case):
    excused = excused_by_a_rule(case, response)
    _log(f"excused {case.method} {case.path}" if excused else "checked")
    if excused:
        return None
    return positive_data_acceptance(ctx, response, case)


def _log(line: str) -> None:
    """One line per judged response into CONTRACT_EXCUSES, for the test's figures."""
    path = os.environ.get("CONTRACT_EXCUSES")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")
