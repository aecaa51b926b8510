"""What to train for: epochs, rate, batches, regularisation, optimizer, schedule, clipping.

Everything about the model itself lives on the ``Network``; everything that decides how the
weights move lives here, checked once, with a ``ValueError`` that names the field.
The reason to change is a training option or the check on one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .optimizers import SGD, Optimizer, optimizer_from_dict
from .options import real
from .schedules import Constant, Schedule, schedule_from_dict


@dataclass(frozen=True)
class TrainingConfig:
    """The run's options; the defaults are the seed's plain mini-batch gradient descent.

    l2 : weight decay lambda; the cost gains (l2 / 2n) * sum(w^2) over the weights (not the
        biases), n the number of training samples. Its gradient (l2 / n) * W is part of the
        gradient every optimizer and the clipping see; with ``sgd`` it is the seed's
        W *= 1 - rate * l2 / n before each step. In torch terms, with no clipping, it is
        ``weight_decay = l2 / n`` on a parameter group of the weights alone.
    patience : stop when the monitored cost (validation cost if a validation set is given,
        else training cost) has not improved by more than ``min_delta`` for this many epochs.
    optimizer : an ``Optimizer``, its name, or its dict (``{"name": "adam", "beta1": 0.9}``);
        stored as an ``Optimizer`` (``core.optimizers``).
    schedule : a ``Schedule``, its name or its dict, stored as a ``Schedule``
        (``core.schedules``); ``learning_rate`` is its base rate.
    clip_norm : when set, each step's gradient is scaled down to this global norm, over
        every weight and bias at once, as ``torch.nn.utils.clip_grad_norm_`` does.
    """

    epochs: int
    learning_rate: float
    batch_size: int = 10
    shuffle: bool = True
    l2: float = 0.0
    patience: int | None = None
    min_delta: float = 0.0
    optimizer: Optimizer = field(default_factory=SGD)
    schedule: Schedule = field(default_factory=Constant)
    clip_norm: float | None = None

    def __post_init__(self):
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise ValueError(f"epochs must be a positive whole number, got {self.epochs!r}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(
                f"learning_rate must be positive and finite, got {self.learning_rate!r}"
            )
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ValueError(f"batch_size must be a positive whole number, got {self.batch_size!r}")
        if not (math.isfinite(self.l2) and self.l2 >= 0):
            raise ValueError(f"l2 must be zero or positive, got {self.l2!r}")
        if self.patience is not None and not (
            isinstance(self.patience, int) and self.patience >= 1
        ):
            raise ValueError(
                f"patience must be a positive whole number or None, got {self.patience!r}"
            )
        if not (math.isfinite(self.min_delta) and self.min_delta >= 0):
            raise ValueError(f"min_delta must be zero or positive, got {self.min_delta!r}")
        # frozen: the checked, converted values replace what was passed
        object.__setattr__(self, "optimizer", optimizer_from_dict(self.optimizer))
        object.__setattr__(self, "schedule", schedule_from_dict(self.schedule))
        if self.clip_norm is not None:
            object.__setattr__(
                self, "clip_norm", real("clip_norm", self.clip_norm, 0.0, low_open=True)
            )
