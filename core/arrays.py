"""Small rules about arrays that the network and the trainer share: which generator an
``rng`` argument means, and what a classification target looks like. The reason to change
is one of these rules."""

from __future__ import annotations

import numpy as np


def is_one_hot(targets: np.ndarray) -> bool:
    """True when every row is all zeros but a single one: a classification target."""
    return bool(
        targets.ndim == 2
        and targets.shape[1] > 1
        and np.isin(targets, (0, 1)).all()
        and (targets.sum(axis=1) == 1).all()
    )


def generator(rng) -> np.random.RandomState:
    """The generator ``rng`` names: NumPy's global one for None (what np.random.seed sets),
    a RandomState as it is, or a new one seeded with ``rng``."""
    if rng is None:
        return np.random.mtrand._rand  # the global state that np.random.seed sets
    if isinstance(rng, np.random.RandomState):
        return rng
    return np.random.RandomState(rng)
