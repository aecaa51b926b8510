"""core: backpropagation and gradient descent in NumPy, from the seed notebook, fixed and batched.

>>> import numpy as np
>>> from core import Network
>>> np.random.seed(2023)
>>> Network([3, 2, 2]).W_n[0].round(4).tolist()
[[-0.1022, -1.1413], [2.6544, 1.4406], [0.0989, -3.1215]]
"""

from .activations import ACTIVATIONS, sigmoid, sigmoid_derivative
from .costs import COSTS
from .errors import Diverged, ShapeError
from .gradcheck import gradient_check
from .network import Evaluation, Network, is_one_hot
from .split import held_out_count, validation_rows
from .training import COMPLETED, EARLY_STOPPED, STOPPED, EpochMetrics, Trainer, TrainingConfig

__all__ = [
    "ACTIVATIONS",
    "COMPLETED",
    "COSTS",
    "Diverged",
    "EARLY_STOPPED",
    "EpochMetrics",
    "Evaluation",
    "Network",
    "STOPPED",
    "ShapeError",
    "Trainer",
    "TrainingConfig",
    "gradient_check",
    "held_out_count",
    "validation_rows",
    "is_one_hot",
    "sigmoid",
    "sigmoid_derivative",
]
