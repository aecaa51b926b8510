"""A fully connected network trained by backpropagation, batch first.

Shapes follow the seed notebook: ``W_n[l]`` is (structure[l], structure[l+1]) and
``B_n[l]`` is a column (structure[l+1], 1), so one sample goes ``z = W.T @ a + b``. A batch
is a matrix whose rows are samples, so the same weights give ``Z = A @ W + b.T``: the whole
mini-batch moves through each layer in one matrix product, never a loop over samples.
The reason to change is the network: its layers' math, its input checks or its saved form.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .activations import HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS, get_activation
from .arrays import generator, is_one_hot
from .costs import get_cost
from .errors import ShapeError
from .workspace import Gradient, Workspace

INITS = ("normal", "scaled")
DTYPES = ("float64", "float32")


@dataclass(frozen=True)
class Evaluation:
    """Mean cost over the samples, and the share classified right when targets are one-hot."""

    cost: float
    accuracy: float | None


class Network:
    """A multilayer perceptron with the seed notebook's attributes and a batched core.

    structure : layer sizes, input first, e.g. [784, 30, 10].
    activation : hidden layers' activation (sigmoid, tanh, relu).
    output_activation : the output layer's (sigmoid, tanh, relu, identity, softmax).
    cost : "quadratic" (the seed's) or "cross_entropy".
    init : "normal" draws every bias and weight from N(0, 1) (the seed's); "scaled" divides
        each weight by sqrt(fan_in), as ``network2.py`` does, so hidden units start unsaturated.
    rng : None uses NumPy's global generator, as the seed does (``np.random.seed(2023)`` then
        ``Network([3, 2, 2])`` reproduces the notebook); an int seeds a private
        ``np.random.RandomState``, which draws exactly what the global one would after
        ``np.random.seed`` of the same int.
    """

    def __init__(
        self,
        structure: Sequence[int],
        *,
        activation: str = "sigmoid",
        output_activation: str = "sigmoid",
        cost: str = "quadratic",
        init: str = "normal",
        dtype: str | np.dtype = "float64",
        rng: int | np.random.RandomState | None = None,
    ):
        self.structure = _check_structure(structure)
        self.num_layers = len(self.structure)
        # native byte order: a big-endian '>f8' (an npz written on such a machine) trains too
        self.dtype = np.dtype(dtype).newbyteorder("=")
        if self.dtype.name not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype.name!r}")
        if activation not in HIDDEN_ACTIVATIONS:
            raise ValueError(f"activation must be one of {HIDDEN_ACTIVATIONS}, got {activation!r}")
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(
                f"output_activation must be one of {OUTPUT_ACTIVATIONS}, got {output_activation!r}"
            )
        self.activation = get_activation(activation)
        self.output_activation = get_activation(output_activation)
        self.cost = get_cost(cost)
        allowed = self.cost.output_activations
        if allowed is not None and output_activation not in allowed:
            raise ValueError(
                f"cost {cost!r} needs an output_activation in {allowed}, got {output_activation!r}"
            )
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        self.init = init

        draw = generator(rng)
        # The seed's order: every bias vector first, then every weight matrix.
        self.B_n = [draw.randn(n, 1) for n in self.structure[1:]]
        self.W_n = [draw.randn(n, m) for n, m in zip(self.structure[:-1], self.structure[1:])]
        if init == "scaled":
            self.W_n = [W / np.sqrt(W.shape[0]) for W in self.W_n]
        self.B_n = [b.astype(self.dtype, copy=False) for b in self.B_n]
        self.W_n = [W.astype(self.dtype, copy=False) for W in self.W_n]

    # ------------------------------------------------------------------ batched math

    def feedforward(
        self, inputs: np.ndarray, workspace: Workspace | None = None
    ) -> list[np.ndarray]:
        """Activations of every layer for a batch; activations[0] is the input itself.

        inputs : (n_samples, structure[0]). activations[l] : (n_samples, structure[l]).
        workspace : buffers to write the activations into (new arrays when None).
        """
        if workspace is None:  # new arrays for the activations only (predict, gradient)
            workspace = Workspace(self, len(inputs), backward=False)
        return workspace.forward(inputs, self.W_n, self.B_n)

    def backward(
        self,
        activations: list[np.ndarray],
        targets: np.ndarray,
        scale: float = 1.0,
        workspace: Workspace | None = None,
    ) -> tuple[float, list[np.ndarray], list[np.ndarray]]:
        """Gradients of the cost summed over one mini-batch, times ``scale``.

        activations : from ``feedforward``; targets : (n_samples, structure[-1]).
        Returns (cost, weight_grads, bias_grads); weight_grads[l] has W_n[l]'s shape and
        bias_grads[l] is a row (structure[l+1],). Every gradient is linear in the output
        error, so scaling that once scales them all: ``sgd_step`` passes the step size.
        workspace : where to write the gradients; new arrays when None.
        """
        ws = workspace
        if ws is None:
            ws = Workspace(self, len(targets), forward=False)  # gradients only
        loss = ws.backward(activations, targets, scale, self.W_n)
        return loss, ws.weight_grads, ws.bias_grads

    def gradient(
        self, inputs: np.ndarray, targets: np.ndarray
    ) -> tuple[float, list[np.ndarray], list[np.ndarray]]:
        """Cost and gradients summed over a batch (checked arrays, rows are samples)."""
        inputs, targets = self.check_batch(inputs, targets)
        return self.backward(self.feedforward(inputs), targets)

    def sgd_step(
        self, inputs: np.ndarray, targets: np.ndarray, learning_rate: float, decay: float = 1.0
    ) -> tuple[float, np.ndarray]:
        """One gradient descent step on one mini-batch, in place; no input checks.

        The step is learning_rate / batch size, as in the seed; ``decay`` (1 - eta*l2/n) shrinks
        the weights first, which is L2 regularisation as ``network2.py`` applies it.
        Returns the batch's summed cost before the step and its output activations, which
        live in a reused buffer: they are valid until the next step.
        """
        workspace = self._workspace(len(inputs))
        activations = self.feedforward(inputs, workspace)
        step = float(learning_rate) / len(inputs)  # a NumPy float rounds like a Python one
        loss, weight_grads, bias_grads = self.backward(activations, targets, step, workspace)
        for W, b, dW, db in zip(self.W_n, self.B_n, weight_grads, workspace.bias_columns):
            if decay != 1.0:
                W *= decay
            np.subtract(W, dW, W)
            np.subtract(b, db, b)  # db: bias_grads[l] seen as a column, like b
        return loss, activations[-1]

    def batch_gradient(
        self, inputs: np.ndarray, targets: np.ndarray, scale: float
    ) -> tuple[float, np.ndarray, Gradient]:
        """Forward and backward on one mini-batch into the training buffers; no input checks.

        Returns the batch's summed cost, its output activations and the gradient of the
        summed cost times ``scale``, in the flat layout of ``core.workspace``. The arrays are
        reused buffers, valid until the next step.
        """
        workspace = self._workspace(len(inputs))
        activations = self.feedforward(inputs, workspace)
        loss = workspace.backward(activations, targets, float(scale), self.W_n)
        return loss, activations[-1], workspace.parameter_gradient

    def _workspace(self, rows: int) -> Workspace:
        """The buffers for steps on batches of ``rows`` samples, kept for the next such step.

        A run has one batch size, plus the remainder at the end of each epoch, so a few
        entries cover it; explicit batches of many sizes just allocate as they go. They make
        training a network from two threads at once unsafe (it never was: both would write
        the weights); ``predict``, ``evaluate`` and ``gradient`` use none and stay safe.
        """
        return self._kept("_workspaces", rows, Workspace)

    def _kept(self, name: str, rows: int, make: Callable):
        """``make(self, rows)``, kept in the dict ``name`` of this network for the next step
        on ``rows`` samples; the oldest of 4 sizes makes room for a fifth."""
        kept = self.__dict__.get(name)
        if kept is None:  # not setdefault: that builds a new dict every step
            kept = self.__dict__[name] = {}
        found = kept.get(rows)
        if found is None:
            if len(kept) >= 4:
                del kept[next(iter(kept))]
            found = kept[rows] = make(self, rows)
        return found

    def release_workspaces(self) -> None:
        """Drop the training buffers (about 3 activations' and 1 model's worth of memory per
        batch size); the next training step allocates them again."""
        self.__dict__.pop("_workspaces", None)
        self.__dict__.pop("_column_batches", None)

    def __getstate__(self) -> dict:
        # pickles and copies carry the model, not buffers derived from the last mini-batch
        state = dict(self.__dict__)
        state.pop("_workspaces", None)
        state.pop("_column_batches", None)
        return state

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """Output activations (n_samples, structure[-1]) for inputs (n_samples, structure[0])."""
        inputs = self._check_inputs(inputs, "inputs")
        return self.feedforward(inputs)[-1]

    def evaluate(self, inputs: np.ndarray, targets: np.ndarray) -> Evaluation:
        """Mean cost, and accuracy (argmax agreement) when the targets are one-hot."""
        inputs, targets = self.check_batch(inputs, targets)
        outputs = self.feedforward(inputs)[-1]
        cost = self.cost.fn(outputs, targets, self.output_activation) / len(inputs)
        accuracy = None
        if is_one_hot(targets):
            accuracy = float(np.mean(outputs.argmax(axis=1) == targets.argmax(axis=1)))
        return Evaluation(cost, accuracy)

    def total_cost(self, inputs: np.ndarray, targets: np.ndarray) -> float:
        """The cost summed over all samples (what backprop differentiates)."""
        inputs, targets = self.check_batch(inputs, targets)
        outputs = self.feedforward(inputs)[-1]
        return self.cost.fn(outputs, targets, self.output_activation)

    # ------------------------------------------------------------------ the seed's API

    def backprop(self, x, y) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The seed's per-sample gradients: (bias grads as columns, weight grads) for one (x, y)."""
        inputs, targets = self.pairs_to_arrays([(x, y)], "x")
        _, weight_grads, bias_grads = self.backward(self.feedforward(inputs), targets)
        return [g.reshape(-1, 1) for g in bias_grads], weight_grads

    def gradient_descent(self, mini_batch, learning_rate: float) -> None:
        """One step of learning_rate / len(mini_batch) on a list of (x, y) column pairs.

        The seed's own batches, lists of (structure[0], 1) and (structure[-1], 1) columns of
        the network's dtype, are copied into buffers kept for their batch size
        (``_ColumnBatch``). Any other batch, and one that fails a check there, goes through
        ``pairs_to_arrays``, which converts it or raises naming the bad pair. Both give the
        same rows, so the same step.
        """
        if type(mini_batch) is list and mini_batch:
            columns = self._column_batch(len(mini_batch))
            if columns.fill(mini_batch):
                self.sgd_step(columns.inputs, columns.targets, float(learning_rate))
                return
        inputs, targets = self.pairs_to_arrays(mini_batch, "mini_batch")
        self.sgd_step(inputs, targets, float(learning_rate))

    def _column_batch(self, rows: int) -> _ColumnBatch:
        """The buffers for the seed's batches of ``rows`` pairs, kept as ``_workspace`` keeps
        a step's."""
        return self._kept("_column_batches", rows, _ColumnBatch)

    def train(self, epochs: int, training_data, learning_rate: float) -> None:
        """The seed's loop: every epoch, one step per mini-batch, in the order given."""
        from .config import TrainingConfig
        from .training import Trainer

        batches = list(training_data)
        pairs = [pair for batch in batches for pair in batch]
        inputs, targets = self.pairs_to_arrays(pairs, "training_data")
        config = TrainingConfig(epochs=epochs, learning_rate=learning_rate, shuffle=False)
        Trainer(self, inputs, targets, config, batch_sizes=[len(b) for b in batches]).run()

    def pairs_to_arrays(self, pairs: Iterable, field: str) -> tuple[np.ndarray, np.ndarray]:
        """Stack (x, y) column vectors into (inputs, targets) batches, checking every size.

        Checked pair by pair, with two ``_as_vector`` calls a sample, a 10-sample batch at
        64-30-10 took twice as long to convert as to train on: Python and NumPy call overhead,
        not arithmetic (``benchmarks/core_bench.py``, "seed API vs array API"). So the usual
        batch is converted and checked with a few NumPy calls for all its inputs and a few
        for all its targets (``_stack_vectors``). Any other batch, and any that fails a
        check, goes through the per-pair checks, which give the same arrays or raise naming
        the first bad pair and field, as they always have.
        """
        xs, ys = [], []
        try:
            for x, y in pairs:
                xs.append(x)
                ys.append(y)
        except Exception:  # not a pair, or the iterable failed
            self._check_pairs(xs, ys, field)  # a bad pair before that one is reported first
            raise
        if not xs:
            raise ValueError(f"{field}: expected at least one (x, y) pair, got none")
        inputs = _stack_vectors(xs, self.structure[0], self.dtype)
        targets = None if inputs is None else _stack_vectors(ys, self.structure[-1], self.dtype)
        if targets is None:
            checked_xs, checked_ys = self._check_pairs(xs, ys, field)
            return np.stack(checked_xs), np.stack(checked_ys)
        return inputs, targets

    def _check_pairs(self, xs: list, ys: list, field: str) -> tuple[list, list]:
        """``_as_vector`` of every x and y, in pair order: the first bad one raises."""
        checked_xs, checked_ys = [], []
        for i, (x, y) in enumerate(zip(xs, ys)):
            checked_xs.append(
                _as_vector(x, f"{field}[{i}] input", self.structure[0], self.dtype, "structure[0]")
            )
            checked_ys.append(
                _as_vector(
                    y, f"{field}[{i}] target", self.structure[-1], self.dtype, "structure[-1]"
                )
            )
        return checked_xs, checked_ys

    # ------------------------------------------------------------------ state

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The whole model as named plain arrays (what ``np.savez`` stores)."""
        arrays: dict[str, np.ndarray] = {
            "structure": np.array(self.structure, dtype=np.int64),
            "activation": np.array(self.activation.name),
            "output_activation": np.array(self.output_activation.name),
            "cost": np.array(self.cost.name),
            "init": np.array(self.init),
        }
        for l, (W, b) in enumerate(zip(self.W_n, self.B_n)):
            arrays[f"W{l}"] = W
            arrays[f"b{l}"] = b
        return arrays

    @classmethod
    def from_arrays(cls, arrays) -> Network:
        """Rebuild a network saved by ``to_arrays`` (weights are copied, dtype kept)."""
        structure = [int(n) for n in arrays["structure"]]
        net = cls(
            structure,
            activation=str(arrays["activation"]),
            output_activation=str(arrays["output_activation"]),
            cost=str(arrays["cost"]),
            init=str(arrays["init"]),
            dtype=arrays["W0"].dtype,
            rng=0,  # placeholder draws, replaced below
        )
        net.set_parameters(
            [arrays[f"W{l}"] for l in range(len(structure) - 1)],
            [arrays[f"b{l}"] for l in range(len(structure) - 1)],
        )
        return net

    def set_parameters(self, weights: Sequence[np.ndarray], biases: Sequence[np.ndarray]) -> None:
        """Replace weights and biases with copies, checking every shape."""
        if len(weights) != len(self.W_n) or len(biases) != len(self.B_n):
            raise ValueError(
                f"expected {len(self.W_n)} weight matrices and bias vectors, "
                f"got {len(weights)} and {len(biases)}"
            )
        new_W, new_B = [], []
        for l, (W, b) in enumerate(zip(weights, biases)):
            W = np.array(W, dtype=self.dtype)
            b = np.array(b, dtype=self.dtype).reshape(-1, 1)
            if W.shape != self.W_n[l].shape or b.shape != self.B_n[l].shape:
                raise ValueError(
                    f"layer {l}: expected weights {self.W_n[l].shape} and biases "
                    f"{self.B_n[l].shape}, got {W.shape} and {b.shape}"
                )
            new_W.append(W)
            new_B.append(b)
        self.W_n, self.B_n = new_W, new_B

    def parameters_finite(self) -> bool:
        return all(np.isfinite(W).all() for W in self.W_n) and all(
            np.isfinite(b).all() for b in self.B_n
        )

    # ------------------------------------------------------------------ checks

    def check_batch(self, inputs, targets) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets as 2-D arrays of the network's dtype with matching sizes."""
        inputs = self._check_inputs(inputs, "inputs")
        targets = _as_matrix(targets, "targets", self.structure[-1], self.dtype, "structure[-1]")
        if len(inputs) != len(targets):
            raise ShapeError("targets", len(inputs), len(targets), "one target row per input row")
        return inputs, targets

    def _check_inputs(self, inputs, field: str) -> np.ndarray:
        return _as_matrix(inputs, field, self.structure[0], self.dtype, "structure[0]")

    def __repr__(self) -> str:
        return (
            f"Network({self.structure}, activation={self.activation.name!r}, "
            f"output_activation={self.output_activation.name!r}, cost={self.cost.name!r}, "
            f"dtype={self.dtype.name!r})"
        )


class _ColumnBatch:
    """A mini-batch of the seed's column pairs as row matrices, in buffers reused from step
    to step: ``inputs`` (rows, structure[0]) then ``targets`` (rows, structure[-1]), the two
    parts of one flat buffer.

    A C-contiguous (n, 1) column holds its n numbers in order, so the bytes of every x and
    then every y, joined, are the input rows and then the target rows: what
    ``pairs_to_arrays`` gives, bit for bit. On a 10-sample batch at 64-30-10 a step takes
    about 20 us and NumPy's conversions about 0.14 us an array (np.asarray of the list of
    xs, np.concatenate of it); ``bytes.join`` takes about 0.03 us a vector, and checking
    each pair's shapes and dtype in Python about 0.1 us a pair. Reused buffers also keep
    the step from touching new memory every time.
    """

    def __init__(self, net: Network, rows: int):
        n_in, n_out = net.structure[0], net.structure[-1]
        dtype = np.dtype(net.dtype.name)  # NumPy's own instance, the one its arrays hold
        # a pair matches when (x.shape, x.dtype, y.shape, y.dtype) equals this: identity
        # checks for the dtypes, not dtype comparisons
        self.signature = ((n_in, 1), dtype, (n_out, 1), dtype)
        self.flat = np.empty(rows * (n_in + n_out), dtype)
        self.bytes = memoryview(self.flat).cast("B")
        self.inputs = self.flat[: rows * n_in].reshape(rows, n_in)
        self.targets = self.flat[rows * n_in :].reshape(rows, n_out)

    def fill(self, pairs: list) -> bool:
        """Copy ``pairs`` (a list of ``rows`` pairs) into ``inputs`` and ``targets``.

        False, and the buffers hold nothing useful, unless every pair is an (x, y) of the
        signature's shapes and dtype, every vector is C-contiguous (bytes.join takes no
        other) and every number is finite.
        """
        signature, xs, ys = self.signature, [], []
        try:
            for x, y in pairs:
                if (x.shape, x.dtype, y.shape, y.dtype) != signature:
                    return False
                xs.append(x)
                ys.append(y)
            xs += ys
            self.bytes[:] = b"".join(xs)
        except Exception:  # not a pair, not an array, not contiguous: the fallback says what
            return False
        # The sum of squares is finite exactly when every value is, unless it overflows, and
        # then the fallback decides (it accepts huge finite values). np.vdot: one call, no
        # temporary, and no floating-point warnings (ndarray.dot warns on overflow).
        return math.isfinite(np.vdot(self.flat, self.flat))


def _check_structure(structure) -> list[int]:
    try:
        sizes = [int(n) for n in structure]
    except (TypeError, ValueError):
        raise ValueError(f"structure must be a list of layer sizes, got {structure!r}") from None
    if len(sizes) < 2:
        raise ValueError(f"structure needs at least 2 layers (input and output), got {sizes}")
    if any(n < 1 for n in sizes) or any(n != s for n, s in zip(sizes, structure)):
        raise ValueError(f"structure must hold positive whole layer sizes, got {list(structure)}")
    return sizes


def _as_matrix(values, field: str, width: int, dtype: np.dtype, layer: str) -> np.ndarray:
    try:
        m = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{field}: expected a 2-D array of numbers ({exc})") from None
    if m.ndim == 1 and width == 1:
        m = m.reshape(-1, 1)
    if m.ndim != 2:
        raise ValueError(f"{field}: expected a 2-D array (rows are samples), got {m.ndim}-D")
    if m.shape[1] != width:
        raise ShapeError(field, width, m.shape[1], f"row length must equal the network's {layer}")
    if not _all_finite(m):
        raise ValueError(f"{field}: expected finite numbers, found NaN or infinity")
    return m


def _all_finite(m: np.ndarray) -> bool:
    """np.isfinite(m).all() in blocks of rows: no boolean copy of a large data set."""
    rows = max(1, (1 << 20) // max(1, m.shape[1]))
    return all(np.isfinite(m[i : i + rows]).all() for i in range(0, len(m), rows))


def _stack_vectors(vectors: list, size: int, dtype: np.dtype) -> np.ndarray | None:
    """``np.stack`` of ``_as_vector`` of each vector, if every one passes its checks; else
    None, and the caller checks them one by one for the error.

    One ``np.asarray`` of the whole list converts each vector as ``np.asarray`` of it alone
    would (the same cast of the same numbers: the rows are bitwise the same), and takes
    the vectors only if they all have one shape. So this accepts vectors of one shape that
    ``_as_vector`` accepts ((size, 1), (size,) or (1, size)), all finite; mixed shapes,
    wrong sizes, NaN or infinity, and anything NumPy cannot convert give None.
    """
    try:
        m = np.asarray(vectors, dtype=dtype)
    except Exception:  # mixed shapes, or not numbers: the per-vector checks say which
        return None
    shape = m.shape[1:]  # every vector's
    if not (len(shape) == 1 or len(shape) == 2 and 1 in shape) or m.size != len(m) * size:
        return None
    m = m.reshape(len(m), size)
    # The sum of squares is finite exactly when every value is, unless it overflows, and
    # then the values are huge but finite and the per-vector checks accept them. One call
    # with no temporary and no floating-point warnings, where isfinite(m).all() is two:
    # on a 10-sample batch the calls, not the arithmetic, are the cost.
    return m if math.isfinite(np.vdot(m, m)) else None


def _as_vector(v, field: str, size: int, dtype: np.dtype, layer: str) -> np.ndarray:
    v = np.asarray(v, dtype=dtype)
    if not (v.ndim == 1 or v.ndim == 2 and 1 in v.shape):
        raise ValueError(f"{field}: expected a column vector of size {size}, got shape {v.shape}")
    v = v.reshape(-1)
    if v.size != size:
        raise ShapeError(field, size, v.size, f"the network's {layer}")
    if not np.isfinite(v).all():
        raise ValueError(f"{field}: expected finite numbers, found NaN or infinity")
    return v
