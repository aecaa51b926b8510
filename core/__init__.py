"""core: backpropagation and gradient descent in NumPy, from the seed notebook, fixed and batched.
The reason to change is which of core's names the other layers import.

>>> import numpy as np
>>> from core import Network
>>> np.random.seed(2023)
>>> Network([3, 2, 2]).W_n[0].round(4).tolist()
[[-0.1022, -1.1413], [2.6544, 1.4406], [0.0989, -3.1215]]
"""

from .activations import ACTIVATIONS, sigmoid, sigmoid_derivative
from .arrays import is_one_hot
from .config import TrainingConfig
from .costs import COSTS
from .errors import Diverged, ShapeError
from .gradcheck import gradient_check
from .network import Evaluation, Network
from .optimizers import (
    OPTIMIZERS,
    SGD,
    Adam,
    AdamW,
    Momentum,
    Optimizer,
    clip_by_global_norm,
    optimizer_from_dict,
)
from .schedules import (
    SCHEDULES,
    Constant,
    Cosine,
    Exponential,
    InverseScaling,
    Plateau,
    Schedule,
    StepDecay,
    schedule_from_dict,
)
from .split import held_out_count, validation_rows
from .training import COMPLETED, EARLY_STOPPED, STOPPED, EpochMetrics, Trainer

__all__ = [
    "ACTIVATIONS",
    "COMPLETED",
    "COSTS",
    "Adam",
    "AdamW",
    "Constant",
    "Cosine",
    "Diverged",
    "EARLY_STOPPED",
    "EpochMetrics",
    "Evaluation",
    "Exponential",
    "InverseScaling",
    "Momentum",
    "Network",
    "OPTIMIZERS",
    "Optimizer",
    "Plateau",
    "SCHEDULES",
    "SGD",
    "STOPPED",
    "Schedule",
    "ShapeError",
    "StepDecay",
    "Trainer",
    "TrainingConfig",
    "clip_by_global_norm",
    "gradient_check",
    "held_out_count",
    "validation_rows",
    "is_one_hot",
    "optimizer_from_dict",
    "schedule_from_dict",
    "sigmoid",
    "sigmoid_derivative",
]
