"""Cost functions as in Nielsen's ``network2.py``: a value ``fn`` and an output error ``delta``.

Costs are summed over the samples of a batch; callers divide by the batch size. ``delta`` is
dC/dz at the output layer, so it takes the output activation: the quadratic cost multiplies
by f'(z), while cross-entropy paired with its canonical output (sigmoid or softmax) cancels it.
The reason to change is a cost function, or the output error it gives.
"""

from __future__ import annotations

import numpy as np

from .activations import Activation


class Cost:
    name: str = ""
    #: output activations this cost is defined for (None: any)
    output_activations: tuple[str, ...] | None = None

    def fn(self, a: np.ndarray, y: np.ndarray, output: Activation) -> float:
        """Cost summed over the batch, a and y of shape (n_samples, n_outputs)."""
        raise NotImplementedError

    def loss_and_delta(
        self, a: np.ndarray, y: np.ndarray, output: Activation, delta: np.ndarray, scratch
    ) -> float:
        """The summed cost; writes dC/dz at the output layer into ``delta``.

        delta, scratch : arrays of a's shape and dtype (scratch may be overwritten).
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<cost {self.name}>"


class QuadraticCost(Cost):
    """C = 1/2 ||a - y||^2 per sample: the seed's cost."""

    name = "quadratic"

    def fn(self, a, y, output):
        diff = a - y
        return 0.5 * float(np.vdot(diff, diff))

    def loss_and_delta(self, a, y, output, delta, scratch):
        np.subtract(a, y, delta)
        loss = 0.5 * np.vdot(delta, delta)
        output.backward(a, delta, scratch)
        return loss


class CrossEntropyCost(Cost):
    """Binary cross-entropy per output unit for sigmoid, categorical for softmax.

    Either way dC/dz = a - y: the activation's derivative cancels, which is why this cost
    learns fast where a saturated sigmoid makes the quadratic cost crawl.
    """

    name = "cross_entropy"
    output_activations = ("sigmoid", "softmax")

    def fn(self, a, y, output):
        # clip so that a saturated output gives a large finite cost, not inf or nan
        eps = np.finfo(a.dtype).eps
        a = np.clip(a, eps, 1.0 - eps)
        if output.name == "softmax":
            return -float(np.vdot(y, np.log(a)))
        return -float(np.vdot(y, np.log(a)) + np.vdot(1.0 - y, np.log1p(-a)))

    def loss_and_delta(self, a, y, output, delta, scratch):
        np.subtract(a, y, out=delta)
        return self.fn(a, y, output)


COSTS: dict[str, Cost] = {c.name: c for c in (QuadraticCost(), CrossEntropyCost())}


def get_cost(name: str) -> Cost:
    try:
        return COSTS[name]
    except KeyError:
        raise ValueError(f"unknown cost {name!r}; expected one of {sorted(COSTS)}") from None
