"""Activation functions, each differentiated through its own output.

Backprop needs f'(z) only where it already holds a = f(z), so every derivative here is
written in terms of the activation (as in scikit-learn's ``_base.py``): the forward pass
keeps no ``z``. Both methods work in place on arrays the caller owns, because on small
networks the cost of a training step is the number of NumPy calls, not arithmetic.
"""

from __future__ import annotations

import numpy as np


class Activation:
    """An activation function: ``forward`` maps z to a, ``backward`` maps dC/da to dC/dz."""

    name: str = ""

    def forward(self, z: np.ndarray) -> np.ndarray:
        """Apply the function to z (n_samples, n_units), overwriting z; returns it."""
        raise NotImplementedError

    def backward(self, a: np.ndarray, grad: np.ndarray) -> np.ndarray:
        """dC/dz from a = f(z) and grad = dC/da, overwriting grad; returns it."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<activation {self.name}>"


class Sigmoid(Activation):
    name = "sigmoid"

    def forward(self, z):
        # 1 / (1 + exp(-z)), in the seed's order of operations so results match it bit for bit
        np.negative(z, out=z)
        np.exp(z, out=z)
        z += 1.0
        return np.reciprocal(z, out=z)

    def backward(self, a, grad):
        # sigma'(z) = sigma(z) * (1 - sigma(z)) = a * (1 - a)
        grad *= a * (1.0 - a)
        return grad


class Tanh(Activation):
    name = "tanh"

    def forward(self, z):
        return np.tanh(z, out=z)

    def backward(self, a, grad):
        # tanh'(z) = 1 - tanh(z)^2
        grad *= 1.0 - a * a
        return grad


class ReLU(Activation):
    name = "relu"

    def forward(self, z):
        return np.maximum(z, 0.0, out=z)

    def backward(self, a, grad):
        # the subgradient at z = 0 is taken as 0, as in scikit-learn
        grad *= a > 0
        return grad


class Identity(Activation):
    name = "identity"

    def forward(self, z):
        return z

    def backward(self, a, grad):
        return grad


class Softmax(Activation):
    """Row-wise softmax: an output layer for one-hot targets (not elementwise)."""

    name = "softmax"

    def forward(self, z):
        # shifting by the row maximum changes nothing mathematically and avoids exp overflow
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        return z

    def backward(self, a, grad):
        # Jacobian-vector product: dC/dz_i = a_i * (g_i - sum_j g_j a_j)
        grad -= (grad * a).sum(axis=1, keepdims=True)
        grad *= a
        return grad


ACTIVATIONS: dict[str, Activation] = {
    f.name: f for f in (Sigmoid(), Tanh(), ReLU(), Identity(), Softmax())
}
HIDDEN_ACTIVATIONS = ("sigmoid", "tanh", "relu")
OUTPUT_ACTIVATIONS = ("sigmoid", "tanh", "relu", "identity", "softmax")


def get_activation(name: str) -> Activation:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}"
        ) from None


def sigmoid(z):
    """The seed's sigmoid: 1 / (1 + exp(-z))."""
    return 1.0 / (1.0 + np.exp(-z))


def sigmoid_derivative(z):
    """The seed's sigmoid derivative, taken of z (not of the activation)."""
    return sigmoid(z) * (1 - sigmoid(z))
