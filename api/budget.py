"""The server's limits on one job: layers, widths, weights and biases, epochs, runtime, and
the compute budget (rows x epochs x parameters). The reason to change is a new limit or a new
way to count what a job costs.
"""

from __future__ import annotations

from backprop.settings import Settings
from core.workspace import parameter_count

from .field_errors import field_error
from .schemas.jobs import JobCreate


def check_limits(job: JobCreate, settings: Settings, errors: list[dict]) -> None:
    """An error for each of the server's limits the job's size breaks."""
    if len(job.structure) > settings.max_layers:
        errors.append(
            field_error(
                ("structure",),
                f"at most {settings.max_layers} layers are allowed, got {len(job.structure)}",
                "limit_exceeded",
            )
        )
    for i, width in enumerate(job.structure):
        if width > settings.max_layer_width:
            errors.append(
                field_error(
                    ("structure", i),
                    f"layers may be at most {settings.max_layer_width} wide, got {width}",
                    "limit_exceeded",
                )
            )
            break
    parameters = parameter_count(job.structure)
    if parameters > settings.max_parameters:
        errors.append(
            field_error(
                ("structure",),
                f"the network has {parameters} weights and biases, at most "
                f"{settings.max_parameters} are allowed (MAX_PARAMETERS)",
                "limit_exceeded",
            )
        )
    if job.epochs > settings.max_epochs:
        errors.append(
            field_error(
                ("epochs",),
                f"at most {settings.max_epochs} epochs are allowed, got {job.epochs}",
                "limit_exceeded",
            )
        )
    runtime = job.options.max_runtime_seconds
    if runtime is not None and runtime > settings.max_runtime_seconds:
        errors.append(
            field_error(
                ("options", "max_runtime_seconds"),
                f"at most {settings.max_runtime_seconds} seconds are allowed, got {runtime}",
                "limit_exceeded",
            )
        )


def check_budget(job: JobCreate, samples: int, settings: Settings, errors: list[dict]) -> None:
    """``samples``: the rows trained on and the rows validated on, every epoch."""
    cost = samples * job.epochs * parameter_count(job.structure)
    if cost > settings.max_job_cost:
        errors.append(
            field_error(
                ("epochs",),
                f"the job's compute cost is {cost:.3g} (rows trained and validated on {samples} "
                f"x epochs {job.epochs} x "
                f"parameters {parameter_count(job.structure)}), over the budget of "
                f"{settings.max_job_cost:.3g}; train fewer epochs, a smaller network or less data",
                "budget_exceeded",
            )
        )
