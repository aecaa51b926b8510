"""Held-out validation rows, chosen once from a seed: the same seed and targets always give
the same rows, so a resumed job validates on exactly the rows it started with.
The reason to change is how the held-out rows are drawn."""

from __future__ import annotations

import numpy as np

from .arrays import is_one_hot


def _take(fraction: float, n: int) -> int:
    """Rows a group of n gives: round(fraction * n), and at least one of two or more, but
    never the whole group."""
    take = int(round(fraction * n))
    return min(max(take, 1), n - 1) if n >= 2 else 0


def held_out_count(fraction: float, rows: int, class_counts=None) -> int:
    """How many rows ``validation_rows`` holds out, from the counts alone."""
    if class_counts is not None:
        return sum(_take(fraction, int(n)) for n in class_counts)
    return _take(fraction, rows)


def validation_rows(targets: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A boolean per row, True for the rows held out for validation.

    With one-hot targets the split is stratified: a class of n rows gives round(fraction *
    n) of them (at least one when it has two or more, never all), so every class is in both
    parts in proportion. Otherwise round(fraction * rows) rows are drawn at random.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie strictly between 0 and 1, got {fraction}")
    rows = len(targets)
    if rows < 2:
        raise ValueError("a validation split needs at least two rows")
    rng = np.random.RandomState(seed)
    held = np.zeros(rows, dtype=bool)
    if is_one_hot(targets):
        for label in range(targets.shape[1]):
            members = np.flatnonzero(targets[:, label] == 1)
            held[rng.permutation(members)[: _take(fraction, len(members))]] = True
    else:
        held[rng.permutation(rows)[: _take(fraction, rows)]] = True
    return held
