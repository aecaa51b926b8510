"""The buffers of a training step, allocated once, and the step's batched math on them.

Every parameter-sized array of core (a network's gradient, an optimizer's moments) has one
layout: a flat vector holding W0, b0, W1, b1, ... in order, each weight matrix row-major
(structure[l], structure[l+1]) and each bias a column (structure[l+1], 1), exactly the shapes
of ``Network.W_n`` and ``Network.B_n``. Elementwise updates then run as one NumPy call over
the whole vector, and ``parameter_views`` gives the per-layer arrays that share its memory.
The reason to change is the flat layout, or the batched math of a step on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from .activations import constant


class Gradient(NamedTuple):
    """A gradient in the flat layout: ``flat`` and its per-layer views (no copies)."""

    flat: np.ndarray  # (parameter_count,)
    weights: list[np.ndarray]  # weights[l] : W_n[l]'s shape
    biases: list[np.ndarray]  # biases[l] : B_n[l]'s shape, a column


def parameter_count(structure: Sequence[int]) -> int:
    """Weights and biases of a network of these layer sizes."""
    return sum((n + 1) * m for n, m in zip(structure[:-1], structure[1:]))


def parameter_views(
    flat: np.ndarray, structure: Sequence[int]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-layer views of a flat parameter vector: (weights (n, m) each, bias columns (m, 1)).

    flat : (parameter_count(structure),); writing a view writes the vector.
    """
    weights, biases, offset = [], [], 0
    for n, m in zip(structure[:-1], structure[1:]):
        weights.append(flat[offset : offset + n * m].reshape(n, m))
        offset += n * m
        biases.append(flat[offset : offset + m].reshape(m, 1))
        offset += m
    return weights, biases


class Workspace:
    """Every array one training step on ``rows`` samples writes, allocated once and reused,
    and the step's batched math on them.

    A fresh temporary of a few hundred KiB comes from mmap or from a heap that glibc has just
    trimmed, and then the kernel faults in every one of its pages again: that halves the seed
    loop's speed in a fresh interpreter (``benchmarks/core_bench.py``). Reused buffers leave
    only the arithmetic, whatever the allocator's state. The methods bind what they call to
    locals and build no lists, because on small networks a step costs its Python overhead
    as much as its NumPy calls.
    """

    def __init__(self, net, rows: int, *, forward=True, backward=True):
        structure, dtype = net.structure, net.dtype
        sizes = structure[1:]
        self.forwards = [net.activation.forward] * (len(sizes) - 1)
        self.forwards.append(net.output_activation.forward)
        self.hidden_backward = net.activation.backward
        self.output = net.output_activation
        self.loss_and_delta = net.cost.loss_and_delta
        if forward:
            self.activations = [np.empty((rows, n), dtype) for n in sizes]
        if not backward:
            return
        self.deltas = [np.empty((rows, n), dtype) for n in sizes]
        # scratch is used and done with inside one call, so layers of one width share it
        by_width = {n: np.empty((rows, n), dtype) for n in set(sizes)}
        self.scratch = [by_width[n] for n in sizes]
        # every gradient is a view of one flat buffer, so an optimizer updates all of them
        # with a few calls on it instead of a few per layer; bias gradients are written as
        # rows and applied as columns (B_n's shape)
        self.gradient = np.empty(parameter_count(structure), dtype)
        self.weight_grads, self.bias_columns = parameter_views(self.gradient, structure)
        self.bias_grads = [column[:, 0] for column in self.bias_columns]
        self.parameter_gradient = Gradient(self.gradient, self.weight_grads, self.bias_columns)
        self.dtype = dtype
        self._constant = (None, None)

    def constant(self, value: float) -> np.ndarray:
        """``value`` as a 0-d array of the workspace's dtype, kept while it stays the same."""
        if self._constant[0] != value:
            self._constant = (value, constant(value, self.dtype))
        return self._constant[1]

    def forward(self, inputs, W_n, B_n) -> list[np.ndarray]:
        """``Network.feedforward`` into this workspace's buffers."""
        a, matmul, add = inputs, np.matmul, np.add
        for W, b, z, activate in zip(W_n, B_n, self.activations, self.forwards):
            matmul(a, W, z)
            add(z, b.T, z)
            a = activate(z)  # in place: a is z
        return [inputs, *self.activations]

    def backward(self, activations, targets, scale: float, W_n) -> float:
        """``Network.backward`` into this workspace's buffers; returns the summed cost."""
        last = len(W_n) - 1
        deltas, scratch = self.deltas, self.scratch
        delta = deltas[last]
        loss = self.loss_and_delta(activations[-1], targets, self.output, delta, scratch[last])
        if scale != 1.0:
            np.multiply(delta, self.constant(scale), delta)
        matmul, add_reduce, hidden_backward = np.matmul, np.add.reduce, self.hidden_backward
        weight_grads, bias_grads = self.weight_grads, self.bias_grads
        for l in range(last, 0, -1):
            a = activations[l]
            matmul(a.T, delta, weight_grads[l])
            add_reduce(delta, 0, None, bias_grads[l])  # delta.sum(0), minus a wrapper
            delta = matmul(delta, W_n[l].T, deltas[l - 1])
            hidden_backward(a, delta, scratch[l - 1])
        matmul(activations[0].T, delta, weight_grads[0])
        add_reduce(delta, 0, None, bias_grads[0])
        return loss
