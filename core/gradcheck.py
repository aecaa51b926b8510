"""Theory against practice: backprop's gradient next to central finite differences.
The reason to change is how the check picks parameters or measures their error."""

from __future__ import annotations

import numpy as np

from .network import Network


def gradient_check(
    network: Network,
    inputs,
    targets,
    *,
    eps: float = 1e-5,
    floor: float = 1e-6,
    parameters: int | None = None,
    rng: np.random.RandomState | None = None,
) -> float:
    """Worst relative error between backprop and central differences of the summed cost.

    Every weight and bias is nudged by +-eps in a float64 copy of the network, so the
    network passed in is left untouched. The relative error of one parameter is
    |g_backprop - g_numeric| / max(|g_backprop| + |g_numeric|, floor * max(1, |C|)). The
    difference quotient carries a rounding error of about 1e-16 |C| / eps, so the floor,
    scaled by the cost C, keeps parameters whose gradient is zero up to that noise from
    counting as large errors. Correct backprop gives about 1e-7; a wrong formula 1e-3 or more.

    ``parameters`` checks that many weights and biases, drawn at random (``rng``) from all
    of them, instead of every one: a large network's check then costs 2 x ``parameters``
    forward passes of the batch.
    """
    arrays = network.to_arrays()
    for name in list(arrays):
        if name[0] in "Wb" and name[1:].isdigit():
            arrays[name] = arrays[name].astype(np.float64)
    net = type(network).from_arrays(arrays)
    inputs, targets = net.check_batch(inputs, targets)
    cost, weight_grads, bias_grads = net.backward(net.feedforward(inputs), targets)
    floor *= max(1.0, abs(cost))
    analytic = weight_grads + [g.reshape(-1, 1) for g in bias_grads]
    params = list(zip(net.W_n + net.B_n, analytic))
    coordinates = _coordinates([p.shape for p, _ in params], parameters, rng)
    worst = 0.0
    with np.errstate(over="ignore", under="ignore"):
        for k, index in coordinates:
            param, grad = params[k]
            original = param[index]
            param[index] = original + eps
            plus = net.total_cost(inputs, targets)
            param[index] = original - eps
            minus = net.total_cost(inputs, targets)
            param[index] = original
            numeric = (plus - minus) / (2 * eps)
            error = abs(grad[index] - numeric) / max(abs(grad[index]) + abs(numeric), floor)
            worst = max(worst, error)
    return worst


# past this many parameters, drawing without replacement by a permutation of all of them
# would cost more memory than the check: they are drawn one by one instead
PERMUTATION_LIMIT = 1_000_000


def _coordinates(shapes: list[tuple], parameters: int | None, rng) -> list[tuple[int, tuple]]:
    """(array, index) of the parameters to check, in order: every one, or ``parameters`` of
    them drawn at random, without ever listing them all."""
    sizes = [int(np.prod(shape)) for shape in shapes]
    total = sum(sizes)
    if parameters is None or parameters >= total:
        flat = np.arange(total)
    else:
        rng = rng if rng is not None else np.random.RandomState(0)
        if total <= PERMUTATION_LIMIT:
            flat = np.sort(rng.choice(total, size=parameters, replace=False))
        else:
            drawn: set[int] = set()
            while len(drawn) < parameters:
                drawn.add(int(rng.randint(total)))
            flat = np.array(sorted(drawn))
    starts = np.cumsum([0] + sizes)
    arrays = np.searchsorted(starts, flat, side="right") - 1
    return [
        (int(k), np.unravel_index(int(i - starts[k]), shapes[k]))
        for k, i in zip(arrays, flat, strict=True)
    ]
