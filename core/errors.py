"""Exceptions raised by core: each names the input and what was expected.
The reason to change is a new kind of failure that core reports."""

from __future__ import annotations


class ShapeError(ValueError):
    """An input or target whose size does not match the network's structure.

    A ValueError, as the seed notebook's failing cells raised, but with a message that says
    which layer size was expected and what arrived instead.
    """

    def __init__(self, field: str, expected: int, actual: int, detail: str = ""):
        self.field, self.expected, self.actual = field, expected, actual
        message = f"{field}: expected size {expected}, got size {actual}"
        super().__init__(f"{message} ({detail})" if detail else message)


class Diverged(ArithmeticError):
    """Training produced a non-finite cost or weights: the learning rate is too high."""

    def __init__(self, epoch: int, cost: float):
        self.epoch, self.cost = epoch, cost
        super().__init__(
            f"training diverged in epoch {epoch}: the cost became {cost} "
            "(try a smaller learning rate)"
        )
