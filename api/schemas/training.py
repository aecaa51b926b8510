"""How a job steps: its optimizer, its learning-rate schedule and its gradient clipping, as
a job's options take them. The reason to change is an optimizer or a schedule of core's
(``core.optimizers``, ``core.schedules``) that jobs may name; each model's fields and
defaults are the core class's parameters."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from .common import Strict, json_int

Unit = Annotated[float, Field(ge=0, lt=1)]
Per = Literal["epoch", "step"]
PER = Field("epoch", description="step the rate after every epoch or every mini-batch")
MAX_STEPS = 10**9  # schedule lengths in epochs or mini-batches


class SGD(Strict):
    """Plain mini-batch gradient descent: w -= rate * gradient (the seed's arithmetic)."""

    name: Literal["sgd"]


class Momentum(Strict):
    """torch.optim.SGD's momentum: buf = momentum * buf + (1 - dampening) * gradient;
    w -= rate * buf (Nesterov: w -= rate * (gradient + momentum * buf))."""

    name: Literal["momentum"]
    momentum: Unit = 0.9
    dampening: Annotated[float, Field(ge=0, le=1)] = 0.0
    nesterov: bool = Field(False, description="needs momentum above 0 and dampening 0")


class Adam(Strict):
    """Adam with bias correction (torch.optim.Adam); weight_decay adds weight_decay * w to
    the gradient, as torch does."""

    name: Literal["adam"]
    beta1: Unit = 0.9
    beta2: Unit = 0.999
    eps: Annotated[float, Field(gt=0, le=1)] = 1e-8
    weight_decay: Annotated[float, Field(ge=0, le=1e3)] = 0.0


class AdamW(Adam):
    """Adam with decoupled weight decay (torch.optim.AdamW): w -= rate * weight_decay * w
    before each step."""

    name: Literal["adamw"]  # type: ignore[assignment]
    weight_decay: Annotated[float, Field(ge=0, le=1e3)] = 0.01


Optimizer = Annotated[SGD | Momentum | Adam | AdamW, Field(discriminator="name")]


class Constant(Strict):
    """The learning rate throughout."""

    name: Literal["constant"]


class StepDecay(Strict):
    """rate * gamma ** (t // step_size) (torch's StepLR)."""

    name: Literal["step"]
    step_size: json_int(ge=1, le=MAX_STEPS)
    gamma: Annotated[float, Field(gt=0, le=1e3)] = 0.1
    per: Per = PER


class Exponential(Strict):
    """rate * gamma ** t (torch's ExponentialLR)."""

    name: Literal["exponential"]
    gamma: Annotated[float, Field(gt=0, le=1e3)]
    per: Per = PER


class Cosine(Strict):
    """A linear warm-up over ``warmup`` steps or epochs, then half a cosine from the rate to
    min_lr over t_max (the rest of the run when not given), as torch's CosineAnnealingLR."""

    name: Literal["cosine"]
    t_max: json_int(ge=1, le=MAX_STEPS) | None = None
    min_lr: Annotated[float, Field(ge=0)] = 0.0
    warmup: json_int(ge=0, le=MAX_STEPS) = 0
    per: Per = PER


class InverseScaling(Strict):
    """rate / t ** power_t, as scikit-learn's invscaling (t as docs/core.md says)."""

    name: Literal["invscaling"]
    power_t: Annotated[float, Field(ge=0, le=10)] = 0.5
    per: Per = PER


class Plateau(Strict):
    """rate * factor once the watched cost (validation if given) has not improved for more
    than ``patience`` epochs (torch's ReduceLROnPlateau; with best "lowest" it is also
    scikit-learn's adaptive, whose parameters docs/core.md gives)."""

    name: Literal["plateau"]
    factor: Annotated[float, Field(gt=0, lt=1)] = 0.1
    patience: json_int(ge=0, le=10**6) = 10
    threshold: Annotated[float, Field(ge=0)] = 1e-4
    threshold_mode: Literal["rel", "abs"] = "rel"
    cooldown: json_int(ge=0, le=10**6) = 0
    min_lr: Annotated[float, Field(ge=0)] = 0.0
    eps: Annotated[float, Field(ge=0)] = 1e-8
    best: Literal["improvement", "lowest"] = "improvement"


Schedule = Annotated[
    Constant | StepDecay | Exponential | Cosine | InverseScaling | Plateau,
    Field(discriminator="name"),
]
ClipNorm = Annotated[float, Field(gt=0, le=1e9)]
