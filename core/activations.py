"""Activation functions, each differentiated through its own output.

Backprop needs f'(z) only where it already holds a = f(z), so every derivative here is
written in terms of the activation (as in scikit-learn's ``_base.py``): the forward pass
keeps no ``z``. Both methods work in place on arrays the caller owns, and ``backward`` takes
a scratch array for its intermediate: on small networks the cost of a training step is the
number of NumPy calls, and on large ones every fresh temporary is memory the kernel must
fault in again (see ``workspace.Workspace``). The reason to change is an activation function, or
how one is computed in place.
"""

from __future__ import annotations

import numpy as np


def constant(value: float, dtype) -> np.ndarray:
    """``value`` as a read-only 0-d array of ``dtype``.

    NumPy turns a Python float operand into an array on every call; a ready 0-d array of
    the operand's own dtype skips that (about 0.25 us a call, a tenth of a small network's
    step) and rounds exactly as the Python float would, since NumPy casts that to the
    array's dtype first.
    """
    c = np.array(value, dtype=dtype)
    c.flags.writeable = False
    return c


ONE = {np.dtype(t): constant(1.0, t) for t in ("float64", "float32")}


class Activation:
    """An activation function: ``forward`` maps z to a, ``backward`` maps dC/da to dC/dz."""

    name: str = ""

    def forward(self, z: np.ndarray) -> np.ndarray:
        """Apply the function to z (n_samples, n_units), overwriting z; returns it."""
        raise NotImplementedError

    def backward(self, a: np.ndarray, grad: np.ndarray, scratch: np.ndarray) -> np.ndarray:
        """dC/dz from a = f(z) and grad = dC/da, overwriting grad; returns it.

        scratch : an array of grad's shape and dtype that may be overwritten.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<activation {self.name}>"


class Sigmoid(Activation):
    name = "sigmoid"

    def forward(self, z):
        # 1 / (1 + exp(-z)), in the seed's order of operations so results match it bit for
        # bit (outputs passed positionally: the keyword costs a little on every call)
        one = ONE[z.dtype]
        np.negative(z, z)
        np.exp(z, z)
        np.add(z, one, z)
        return np.divide(one, z, z)

    def backward(self, a, grad, scratch):
        # sigma'(z) = sigma(z) * (1 - sigma(z)) = a * (1 - a)
        np.subtract(ONE[a.dtype], a, scratch)
        np.multiply(scratch, a, scratch)
        return np.multiply(grad, scratch, grad)


class Tanh(Activation):
    name = "tanh"

    def forward(self, z):
        return np.tanh(z, z)

    def backward(self, a, grad, scratch):
        # tanh'(z) = 1 - tanh(z)^2
        np.multiply(a, a, scratch)
        np.subtract(ONE[a.dtype], scratch, scratch)
        return np.multiply(grad, scratch, grad)


class ReLU(Activation):
    name = "relu"

    def forward(self, z):
        return np.maximum(z, 0.0, out=z)

    def backward(self, a, grad, scratch):
        # the subgradient at z = 0 is taken as 0, as in scikit-learn
        np.greater(a, 0.0, scratch)
        return np.multiply(grad, scratch, grad)


class Identity(Activation):
    name = "identity"

    def forward(self, z):
        return z

    def backward(self, a, grad, scratch):
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

    def backward(self, a, grad, scratch):
        # Jacobian-vector product: dC/dz_i = a_i * (g_i - sum_j g_j a_j)
        np.multiply(grad, a, out=scratch)
        grad -= scratch.sum(axis=1, keepdims=True)
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
