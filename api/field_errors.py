"""How an error names the field it is about: the FieldError dicts of a 422's ``errors[]``
(a path, the same path as text, a message, a type), built from pydantic's errors or from a
rule beyond the schema (``SpecError``). The reason to change is how a field is named to the
client.
"""

from __future__ import annotations

from pydantic import ValidationError

from tuning.space import DIMENSION_KINDS


class SpecError(ValueError):
    """One or more fields of a request break a rule; ``errors`` are FieldError dicts."""

    def __init__(self, errors: list[dict]):
        self.errors = errors
        super().__init__("; ".join(f"{e['field']}: {e['msg']}" for e in errors))


def field_error(loc: tuple | list, msg: str, kind: str = "value_error") -> dict:
    return {"loc": list(loc), "field": dotted(loc), "msg": msg, "type": kind}


def dotted(loc) -> str:
    """["data", "inputs", 3] -> "data.inputs[3]"; the whole body is "body"."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def validation_errors(exc: ValidationError, where: tuple = ()) -> list[dict]:
    """A pydantic error as FieldError dicts, one per bad field."""
    details = exc.errors(include_url=False, include_input=False, include_context=False)
    errors = []
    for error in details:
        loc = _strip_union_tags((*where, *error["loc"]))
        msg = error["msg"]
        if error["type"] == "model_type":  # not the class name, what the client must send
            msg = "expected a JSON object"
        errors.append(field_error(loc, msg, error["type"]))
    return errors


MATRIX_FORMS = ("json-rows", "npy-file")  # the tags of api.schemas.common.MatrixInput


def _strip_union_tags(loc: tuple) -> tuple:
    # pydantic names the chosen member of a union in the path: data.arrays.inputs.json-rows[0]
    if loc and loc[0] == "base":  # a sweep's base job
        return ("base", *_strip_union_tags(loc[1:]))
    if len(loc) > 2 and loc[0] == "search" and loc[2] in DIMENSION_KINDS:
        loc = (*loc[:2], *loc[3:])  # search.<path>.<kind>.<kind>: the kind once
    if len(loc) > 1 and loc[0] == "data" and loc[1] in ("arrays", "batches"):
        loc = (loc[0], *loc[2:])
    if len(loc) > 2 and loc[0] == "options" and loc[1] in ("optimizer", "schedule"):
        loc = (*loc[:2], *loc[3:])  # options.optimizer.<name>.beta1: the name is the tag
    # a bad key of a mapping: pydantic adds "[key]" after it; the key is the field
    return tuple(part for part in loc if part not in MATRIX_FORMS and part != "[key]")
