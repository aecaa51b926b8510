"""Learning-rate schedules: the rate of every step, from ``TrainingConfig.learning_rate``.

A schedule with ``per="step"`` sets the rate of every mini-batch, with t the steps taken
so far; with ``per="epoch"`` it sets one rate for each epoch, with t the epochs finished.
Every rate is a closed form of those counters (``torch.optim.lr_scheduler``'s own closed
forms), so the training position alone restores it on resume; only ``plateau``, which
reacts to the costs seen, keeps state, and exports it with the trainer's.
The reason to change is a schedule, or the rate it gives.

- ``constant``: the base rate.
- ``step``: base * gamma ** (t // step_size). ``StepLR``.
- ``exponential``: base * gamma ** t. ``ExponentialLR``.
- ``cosine``: base * (t + 1) / (warmup + 1) for the first ``warmup`` t, then
  min_lr + (base - min_lr) * (1 + cos(pi * t' / t_max)) / 2 with t' = t - warmup, held at
  min_lr once t' passes t_max (torch's repeats the cosine). ``LinearLR(start_factor=1 /
  (warmup + 1), total_iters=warmup)`` then ``CosineAnnealingLR`` in a ``SequentialLR``.
- ``invscaling``: base / (s + 1) ** power_t with s the samples trained on before the step
  (per step) or the epoch (per epoch): scikit-learn's ``invscaling``, which is per epoch.
- ``plateau``: ``ReduceLROnPlateau`` on the cost early stopping watches (the validation
  cost when there is a validation set, else the training cost), checked after every epoch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .options import Options, choice, real, whole

PER = ("epoch", "step")


class Schedule(Options):
    """The interface: ``start`` once, ``rate`` for each step, ``end_epoch`` after each epoch."""

    kind = "schedule"
    per = "epoch"

    @classmethod
    def registry(cls):
        return SCHEDULES

    def start(self, base_rate: float, steps_per_epoch: int, epochs: int) -> None:
        """Ready the schedule for a run of ``epochs`` epochs of ``steps_per_epoch`` steps."""
        self.base = float(base_rate)

    def rate(self, step: int, epoch: int, samples: int) -> float:
        """The rate of the next step, after ``step`` steps, ``epoch`` finished epochs and
        ``samples`` samples trained on (per epoch: the epoch's first step)."""
        return self.base

    def end_epoch(self, monitored: float) -> None:
        """An epoch has ended with this cost (the one early stopping watches)."""

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"sched_name": np.array(self.name)}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Continue from ``state_dict()``; a state without schedule keys is a constant rate's."""
        written_by = str(state["sched_name"]) if "sched_name" in state else "constant"
        if written_by != self.name:
            raise ValueError(
                f"the state was written by schedule {written_by!r}, the config has {self.name!r}"
            )

    def _t(self, step: int, epoch: int) -> int:
        return step if self.per == "step" else epoch


class Constant(Schedule):
    name = "constant"


class StepDecay(Schedule):
    name = "step"
    parameters = ("step_size", "gamma", "per")

    def __init__(self, step_size: int, gamma: float = 0.1, per: str = "epoch"):
        self.step_size = whole("schedule.step_size", step_size, 1)
        self.gamma = real("schedule.gamma", gamma, 0.0, low_open=True)
        self.per = choice("schedule.per", per, PER)

    def rate(self, step, epoch, samples):
        return self.base * self.gamma ** (self._t(step, epoch) // self.step_size)


class Exponential(Schedule):
    name = "exponential"
    parameters = ("gamma", "per")

    def __init__(self, gamma: float, per: str = "epoch"):
        self.gamma = real("schedule.gamma", gamma, 0.0, low_open=True)
        self.per = choice("schedule.per", per, PER)

    def rate(self, step, epoch, samples):
        return self.base * self.gamma ** self._t(step, epoch)


class Cosine(Schedule):
    name = "cosine"
    parameters = ("t_max", "min_lr", "warmup", "per")

    def __init__(
        self, t_max: int | None = None, min_lr: float = 0.0, warmup: int = 0, per: str = "epoch"
    ):
        # None: the rest of the run after the warm-up, in the units of ``per``
        self.t_max = None if t_max is None else whole("schedule.t_max", t_max, 1)
        self.min_lr = real("schedule.min_lr", min_lr, 0.0)
        self.warmup = whole("schedule.warmup", warmup, 0)
        self.per = choice("schedule.per", per, PER)

    def start(self, base_rate, steps_per_epoch, epochs):
        super().start(base_rate, steps_per_epoch, epochs)
        length = epochs * steps_per_epoch if self.per == "step" else epochs
        self.length = self.t_max or max(1, length - self.warmup)

    def rate(self, step, epoch, samples):
        t = self._t(step, epoch)
        if t < self.warmup:
            return self.base * (t + 1) / (self.warmup + 1)
        t = min(t - self.warmup, self.length)
        low = self.min_lr
        return low + (self.base - low) * (1 + math.cos(math.pi * t / self.length)) / 2


class InverseScaling(Schedule):
    name = "invscaling"
    parameters = ("power_t", "per")

    def __init__(self, power_t: float = 0.5, per: str = "epoch"):
        self.power_t = real("schedule.power_t", power_t, 0.0)
        self.per = choice("schedule.per", per, PER)

    def rate(self, step, epoch, samples):
        return self.base / (samples + 1) ** self.power_t


class Plateau(Schedule):
    """Multiply the rate by ``factor`` once the watched cost has not improved for more than
    ``patience`` epochs in a row; then wait ``cooldown`` epochs before counting again.

    An epoch improves when its cost is below best * (1 - threshold) ("rel") or best -
    threshold ("abs"). ``best`` says what the best cost is: "improvement" (torch) moves it
    only on an improving epoch; "lowest" (scikit-learn's ``adaptive``) is the lowest cost
    seen. A cut that would change the rate by ``eps`` or less is skipped, and the rate never
    goes below ``min_lr``.
    """

    name = "plateau"
    parameters = (
        "factor",
        "patience",
        "threshold",
        "threshold_mode",
        "cooldown",
        "min_lr",
        "eps",
        "best",
    )

    def __init__(
        self,
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float = 0.0,
        eps: float = 1e-8,
        best: str = "improvement",
    ):
        self.factor = real("schedule.factor", factor, 0.0, 1.0, low_open=True, high_open=True)
        self.patience = whole("schedule.patience", patience, 0)
        self.threshold = real("schedule.threshold", threshold, 0.0)
        self.threshold_mode = choice("schedule.threshold_mode", threshold_mode, ("rel", "abs"))
        self.cooldown = whole("schedule.cooldown", cooldown, 0)
        self.min_lr = real("schedule.min_lr", min_lr, 0.0)
        self.eps = real("schedule.eps", eps, 0.0)
        self.best = choice("schedule.best", best, ("improvement", "lowest"))

    def start(self, base_rate, steps_per_epoch, epochs):
        super().start(base_rate, steps_per_epoch, epochs)
        self.current, self.best_cost, self.bad_epochs, self.cooling = self.base, math.inf, 0, 0

    def rate(self, step, epoch, samples):
        return self.current

    def end_epoch(self, monitored):
        if self.threshold_mode == "rel":
            improved = monitored < self.best_cost * (1 - self.threshold)
        else:
            improved = monitored < self.best_cost - self.threshold
        if improved or (self.best == "lowest" and monitored < self.best_cost):
            self.best_cost = monitored
        self.bad_epochs = 0 if improved else self.bad_epochs + 1
        if self.cooling:
            self.cooling -= 1
            self.bad_epochs = 0
        if self.bad_epochs > self.patience:
            lowered = max(self.current * self.factor, self.min_lr)
            if self.current - lowered > self.eps:
                self.current = lowered
            self.cooling, self.bad_epochs = self.cooldown, 0

    def state_dict(self):
        return super().state_dict() | {
            "sched_rate": np.asarray(self.current),
            "sched_best": np.asarray(self.best_cost),
            "sched_bad_epochs": np.asarray(self.bad_epochs),
            "sched_cooldown": np.asarray(self.cooling),
        }

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.current = float(state["sched_rate"])
        self.best_cost = float(state["sched_best"])
        self.bad_epochs = int(state["sched_bad_epochs"])
        self.cooling = int(state["sched_cooldown"])


SCHEDULES: dict[str, type[Schedule]] = {
    s.name: s for s in (Constant, StepDecay, Exponential, Cosine, InverseScaling, Plateau)
}


def schedule_from_dict(spec) -> Schedule:
    """A schedule from ``{"name": ..., **parameters}``, a name or a schedule (copied)."""
    return Schedule.from_dict(spec)
