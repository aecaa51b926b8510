"""Optimizers: how one step turns a mini-batch's gradient into new weights and biases.

Each optimizer is a small class holding its parameters (``to_dict`` and ``from_dict`` give
them as plain JSON) and, once ``start`` has sized it for a network, its state: buffers in
the flat layout of ``core.workspace``, allocated once. An update is a handful of in-place
NumPy calls over the whole flat vector plus one subtraction per weight matrix and bias, so
it allocates nothing and costs the same number of calls whatever the depth.
The reason to change is an optimizer, or the arithmetic of its update.

The arithmetic is ``torch.optim``'s for one parameter group (``tests/core/test_references.py``
compares 100 steps of each with PyTorch in float64), where ``g`` is the gradient of the
mini-batch's mean cost, L2 term included (``TrainingConfig.l2``), after clipping:

- ``sgd``: theta -= rate * g, the seed's step (the gradient arrives already multiplied by
  rate / batch size, as ``Network.sgd_step`` computes it).
- ``momentum``: buf = g on the first step, then buf = momentum * buf + (1 - dampening) * g;
  theta -= rate * (g + momentum * buf if nesterov else buf). ``torch.optim.SGD``.
- ``adam``: g += weight_decay * theta; m = beta1 * m + (1 - beta1) * g;
  v = beta2 * v + (1 - beta2) * g^2; theta -= rate / (1 - beta1^t) * m /
  (sqrt(v) / sqrt(1 - beta2^t) + eps), t the steps taken. ``torch.optim.Adam``.
- ``adamw``: theta *= 1 - rate * weight_decay, then Adam's step without the coupled
  decay. ``torch.optim.AdamW``.

Both ``weight_decay`` parameters act on every parameter, biases included, as torch's do for
``model.parameters()``; ``TrainingConfig.l2`` is a term of the cost on the weights alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from .activations import constant
from .options import Options, boolean, real
from .workspace import Gradient, parameter_count, parameter_views

#: torch's clip_grad_norm_ adds this to the norm before dividing by it
CLIP_EPSILON = 1e-6


def clip_by_global_norm(flat: np.ndarray, max_norm: float, unit: float = 1.0) -> float:
    """Scale a flat gradient in place so that its norm is at most ``max_norm``.

    ``flat`` holds ``unit`` times the gradient (``sgd`` gets it times the rate); the norm is
    that of the gradient itself, over every weight and bias at once, and the factor is
    torch's ``clip_grad_norm_``'s: max_norm / (norm + 1e-6) when that is below 1. As there, an
    infinite norm zeroes the gradient, and a NaN one leaves it as it is (for the divergence
    check to report). Returns the norm before clipping.
    """
    norm = math.sqrt(float(np.dot(flat, flat))) / unit
    factor = max_norm / (norm + CLIP_EPSILON)
    if factor < 1.0:
        np.multiply(flat, factor, flat)
    return norm


class Optimizer(Options):
    """The interface: ``start``, then ``update`` once a step; state as plain arrays."""

    kind = "optimizer"

    @classmethod
    def registry(cls):
        return OPTIMIZERS

    #: state buffers, each in the flat layout; saved as opt_<buffer>_W<l> and opt_<buffer>_b<l>
    buffers: ClassVar[tuple[str, ...]] = ()

    def start(self, network) -> None:
        """Fresh state sized for ``network``'s parameters: zeros, and no step taken."""
        self.structure, self.dtype = list(network.structure), network.dtype
        self.steps = 0
        size = parameter_count(self.structure)
        self._state = {name: np.zeros(size, self.dtype) for name in self.buffers}
        # where an update builds its step (and add_l2 its term) before applying it
        self._scratch = np.empty(size, self.dtype)
        self._scratch_W, self._scratch_b = parameter_views(self._scratch, self.structure)

    def gradient_unit(self, rate: float) -> float:
        """What the gradient handed to ``update`` is multiplied by: 1, so the mean gradient."""
        return 1.0

    def update(self, weights: list, biases: list, gradient: Gradient, rate: float) -> None:
        """One step, in place on ``weights`` (W_n) and ``biases`` (B_n, columns).

        The gradient's buffer is the update's scratch and holds the step afterwards: Adam's
        update then streams four parameter-sized arrays through the caches, not five.
        """
        raise NotImplementedError

    def add_l2(self, gradient: Gradient, weights: list, coefficient: float) -> None:
        """gradient += coefficient * W for every weight matrix: an L2 term's gradient."""
        for W, G, S in zip(weights, gradient.weights, self._scratch_W):
            np.multiply(W, coefficient, S)
            np.add(G, S, G)

    @staticmethod
    def _subtract(weights: list, biases: list, gradient: Gradient) -> None:
        """theta -= the step, which the update has left in the gradient's buffer."""
        subtract = np.subtract
        for W, b, dW, db in zip(weights, biases, gradient.weights, gradient.biases):
            subtract(W, dW, W)
            subtract(b, db, b)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, np.ndarray]:
        """The name, the step count and every buffer, per parameter (copies)."""
        state = {"opt_name": np.array(self.name)}
        if self.buffers:
            state["opt_step"] = np.asarray(self.steps)
        for name in self.buffers:
            weights, biases = parameter_views(self._state[name], self.structure)
            for l, (W, b) in enumerate(zip(weights, biases)):
                state[f"opt_{name}_W{l}"] = W.copy()
                state[f"opt_{name}_b{l}"] = b.copy()
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Continue from ``state_dict()``; a state without optimizer keys is plain sgd's."""
        written_by = str(state["opt_name"]) if "opt_name" in state else "sgd"
        if written_by != self.name:
            raise ValueError(
                f"the state was written by optimizer {written_by!r}, the config has {self.name!r}"
            )
        if self.buffers:
            self.steps = int(state["opt_step"])
        for name in self.buffers:
            weights, biases = parameter_views(self._state[name], self.structure)
            for l, (W, b) in enumerate(zip(weights, biases)):
                _copy_into(W, state, f"opt_{name}_W{l}")
                _copy_into(b, state, f"opt_{name}_b{l}")


def _copy_into(target: np.ndarray, state, key: str) -> None:
    value = np.asarray(state[key])
    if value.shape != target.shape:
        raise ValueError(f"state {key}: expected shape {target.shape}, got {value.shape}")
    np.copyto(target, value)


class SGD(Optimizer):
    """Plain mini-batch gradient descent, the seed's step."""

    name = "sgd"

    def gradient_unit(self, rate: float) -> float:
        # the gradient comes as the step itself, rate / batch size times the summed gradient,
        # the seed's arithmetic to the bit
        return rate

    def update(self, weights, biases, gradient, rate):
        self._subtract(weights, biases, gradient)  # the gradient is the step already


class Momentum(Optimizer):
    """Heavy-ball momentum, or Nesterov's, with ``torch.optim.SGD``'s buffer and dampening."""

    name = "momentum"
    parameters = ("momentum", "dampening", "nesterov")
    buffers = ("momentum",)

    def __init__(self, momentum: float = 0.9, dampening: float = 0.0, nesterov: bool = False):
        self.momentum = real("optimizer.momentum", momentum, 0.0, 1.0, high_open=True)
        self.dampening = real("optimizer.dampening", dampening, 0.0, 1.0)
        self.nesterov = boolean("optimizer.nesterov", nesterov)
        if self.nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError(
                "optimizer.nesterov needs a momentum above 0 and a dampening of 0, got "
                f"momentum {self.momentum!r} and dampening {self.dampening!r}"
            )

    def start(self, network) -> None:
        super().start(network)
        self._mu = constant(self.momentum, self.dtype)
        self._undamped = constant(1.0 - self.dampening, self.dtype)

    def update(self, weights, biases, gradient, rate):
        g, buf = gradient.flat, self._state["momentum"]
        if self.steps == 0:
            np.copyto(buf, g)  # the first step starts the buffer at g, undamped
        else:
            np.multiply(buf, self._mu, buf)
            if self.dampening:
                np.multiply(g, self._undamped, g)
            np.add(buf, g, buf)
        if self.nesterov:  # step = rate * (g + momentum * buf)
            np.multiply(buf, self._mu, self._scratch)
            np.add(g, self._scratch, g)
            np.multiply(g, rate, g)
        else:
            np.multiply(buf, rate, g)
        self.steps += 1
        self._subtract(weights, biases, gradient)


class Adam(Optimizer):
    """Adam with bias-corrected moments; ``weight_decay`` adds weight_decay * theta to g.

    The moments are kept as discounted sums, grad_sum = beta1 * grad_sum + g and
    square_sum = beta2 * square_sum + g^2, so torch's m is (1 - beta1) * grad_sum and its v
    (1 - beta2) * square_sum. The constant factors then join the per-step scalars instead
    of costing two passes over the vector each step.
    """

    name = "adam"
    parameters = ("beta1", "beta2", "eps", "weight_decay")
    buffers = ("grad_sum", "square_sum")
    decoupled: ClassVar[bool] = False  # AdamW: shrink theta instead of adding to g

    def __init__(
        self,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        self.beta1 = real("optimizer.beta1", beta1, 0.0, 1.0, high_open=True)
        self.beta2 = real("optimizer.beta2", beta2, 0.0, 1.0, high_open=True)
        self.eps = real("optimizer.eps", eps, 0.0, low_open=True)
        self.weight_decay = real("optimizer.weight_decay", weight_decay, 0.0)

    def start(self, network) -> None:
        super().start(network)
        self._b1, self._b2 = constant(self.beta1, self.dtype), constant(self.beta2, self.dtype)

    def update(self, weights, biases, gradient, rate):
        g = gradient.flat
        grad_sum, square_sum = self._state["grad_sum"], self._state["square_sum"]
        if self.weight_decay:
            self._decay(weights, biases, gradient, rate)
        self.steps += 1
        np.multiply(grad_sum, self._b1, grad_sum)
        np.add(grad_sum, g, grad_sum)
        np.multiply(g, g, g)
        np.multiply(square_sum, self._b2, square_sum)
        np.add(square_sum, g, square_sum)
        # torch's rate / c1 * m / (sqrt(v / c2) + eps), c = 1 - beta^t, is
        # k * grad_sum / (sqrt(square_sum) + eps / r) with r = sqrt((1 - beta2) / c2) and
        # k = rate * (1 - beta1) / (c1 * r)
        r = math.sqrt((1.0 - self.beta2) / (1.0 - self.beta2**self.steps))
        np.sqrt(square_sum, g)
        np.add(g, self.eps / r, g)
        np.divide(grad_sum, g, g)
        np.multiply(g, rate * (1.0 - self.beta1) / ((1.0 - self.beta1**self.steps) * r), g)
        self._subtract(weights, biases, gradient)

    def _decay(self, weights, biases, gradient, rate) -> None:
        """Weight decay on every parameter: coupled, g += weight_decay * theta (Adam), or
        decoupled, theta *= 1 - rate * weight_decay (AdamW)."""
        if self.decoupled:
            shrink = 1.0 - rate * self.weight_decay
            for p in (*weights, *biases):
                np.multiply(p, shrink, p)
            return
        grads, scratch = (*gradient.weights, *gradient.biases), (*self._scratch_W, *self._scratch_b)
        for p, G, S in zip((*weights, *biases), grads, scratch):
            np.multiply(p, self.weight_decay, S)
            np.add(G, S, G)


class AdamW(Adam):
    """Adam with decoupled weight decay: theta *= 1 - rate * weight_decay before the step."""

    name = "adamw"
    decoupled = True

    def __init__(
        self,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ):
        super().__init__(beta1, beta2, eps, weight_decay)


OPTIMIZERS: dict[str, type[Optimizer]] = {o.name: o for o in (SGD, Momentum, Adam, AdamW)}


def optimizer_from_dict(spec) -> Optimizer:
    """An optimizer from ``{"name": ..., **parameters}``, a name or an optimizer (copied)."""
    return Optimizer.from_dict(spec)
