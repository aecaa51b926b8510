"""The optimizers and schedules a job may name are core's, with core's parameters and
defaults: the request schema and core.optimizers / core.schedules cannot drift apart."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from api.schemas.training import Optimizer, Schedule
from core.optimizers import optimizer_from_dict
from core.schedules import schedule_from_dict

REQUIRED = {"step": {"step_size": 3}, "exponential": {"gamma": 0.9}}


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "adamw"])
def test_each_optimizer_has_core_s_parameters_and_defaults(name):
    given = TypeAdapter(Optimizer).validate_python({"name": name}).model_dump()
    assert given == optimizer_from_dict({"name": name}).to_dict()


@pytest.mark.parametrize(
    "name", ["constant", "step", "exponential", "cosine", "invscaling", "plateau"]
)
def test_each_schedule_has_core_s_parameters_and_defaults(name):
    body = {"name": name, **REQUIRED.get(name, {})}
    given = TypeAdapter(Schedule).validate_python(body).model_dump()
    assert given == schedule_from_dict(body).to_dict()


@pytest.mark.parametrize(
    "kind, body",
    [
        (Optimizer, {"name": "adam", "beta1": 1.0}),
        (Optimizer, {"name": "momentum", "momentum": -0.1}),
        (Optimizer, {"name": "rmsprop"}),
        (Optimizer, {"name": "sgd", "momentum": 0.9}),
        (Schedule, {"name": "step"}),
        (Schedule, {"name": "cosine", "per": "week"}),
        (Schedule, {"name": "plateau", "factor": 1.0}),
    ],
)
def test_what_core_refuses_the_schema_refuses(kind, body):
    with pytest.raises(ValidationError):
        TypeAdapter(kind).validate_python(body)
    with pytest.raises(ValueError):
        (optimizer_from_dict if kind is Optimizer else schedule_from_dict)(body)
