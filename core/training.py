"""Mini-batch training with per-epoch metrics, callbacks and exact resume.

A ``Trainer`` owns everything that decides the next step: the network, the data, the
shuffling generator, the optimizer's state, the schedule's, the position inside the current
epoch and the early-stopping record. ``state_dict`` exports all of it as plain arrays, so a
run stopped anywhere (at an epoch boundary or between two mini-batches) and resumed from
that state performs exactly the arithmetic the uninterrupted run would have, and ends with
bitwise equal weights.
The reason to change is the course of a run: its steps, early stopping or resumable state.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .arrays import generator, is_one_hot
from .config import TrainingConfig
from .errors import Diverged
from .optimizers import SGD, clip_by_global_norm

#: how ``Trainer.run`` ended
COMPLETED, EARLY_STOPPED, STOPPED = "completed", "early_stopped", "stopped"


@dataclass(frozen=True)
class EpochMetrics:
    """One finished epoch. ``cost`` is the mean over the epoch's mini-batches as they were
    trained (plus the L2 term), as Keras and scikit-learn report it; validation figures are
    measured after the epoch's last step. ``learning_rate`` is the rate of that last step."""

    epoch: int
    cost: float
    accuracy: float | None
    val_cost: float | None
    val_accuracy: float | None
    seconds: float
    learning_rate: float | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class _Progress:
    """Where the run is; every field is part of the exported state."""

    epoch: int = 0  # epochs finished
    batch: int = 0  # mini-batches finished in the current epoch
    cost_sum: float = 0.0  # summed cost of those mini-batches
    correct: int = 0  # samples they classified right (one-hot targets)
    seconds: float = 0.0  # time spent in the current epoch so far
    best_cost: float = math.inf
    stale_epochs: int = 0
    early_stopped: bool = False
    epoch_rng_state: tuple | None = field(default=None, repr=False)


EpochCallback = Callable[["Trainer", EpochMetrics], bool | None]
BatchCallback = Callable[["Trainer"], bool | None]


class Trainer:
    """Trains ``network`` (a ``core.Network``) on (inputs, targets) with the config's optimizer
    and schedule.

    inputs : (n_samples, structure[0]); targets : (n_samples, structure[-1]); rows are samples.
    batch_sizes : explicit mini-batches as consecutive runs of rows, in order (the seed's
        ``training_data``); when given, ``config.batch_size`` and ``config.shuffle`` are unused.
    validation : optional (inputs, targets) evaluated after every epoch.
    rng : the generator that shuffles each epoch (a ``RandomState`` or a seed); pass the one
        that initialised the network to make a whole run follow from one seed. None uses
        NumPy's global generator, as ``Network(rng=None)`` does: after ``np.random.seed``,
        the network and the shuffling both follow from that seed.
    """

    def __init__(
        self,
        network,
        inputs,
        targets,
        config: TrainingConfig,
        *,
        batch_sizes: Sequence[int] | None = None,
        validation: tuple | None = None,
        rng: np.random.RandomState | int | None = None,
    ):
        self.network = network
        self.config = config
        self.inputs, self.targets = network.check_batch(inputs, targets)
        n = len(self.inputs)
        if n == 0:
            raise ValueError("inputs: expected at least one sample, got none")
        if batch_sizes is None:
            # integers only: a batch size beyond the data is one batch of all of it
            self.bounds = np.array([*range(0, n, min(config.batch_size, n)), n])
            self.shuffle = config.shuffle
        else:
            sizes = np.asarray(batch_sizes, dtype=np.int64)
            if sizes.ndim != 1 or len(sizes) == 0 or (sizes < 1).any() or sizes.sum() != n:
                raise ValueError(
                    f"batch_sizes must be positive and add up to the {n} samples, got {list(sizes)}"
                )
            self.bounds = np.concatenate(([0], np.cumsum(sizes)))
            self.shuffle = False
        self.validation = None
        if validation is not None:
            val_inputs, val_targets = validation
            self.validation = network.check_batch(val_inputs, val_targets)
        self.rng = generator(rng)
        self.optimizer = config.optimizer.copy()  # the config's is a template without state
        self.optimizer.start(network)
        self.schedule = config.schedule.copy()
        self.schedule.start(config.learning_rate, self.n_batches, config.epochs)
        # the seed's step, when nothing else is asked for: Network.sgd_step, to the bit
        self._plain_sgd = isinstance(self.optimizer, SGD) and config.clip_norm is None
        self.labels = self.targets.argmax(axis=1) if is_one_hot(self.targets) else None
        self.progress = _Progress()
        self.history: list[EpochMetrics] = []
        self._in_flight: tuple | None = None  # the running epoch's counters (see _sync)
        self._buffers: tuple[np.ndarray, np.ndarray] | None = None  # shuffled blocks

    @property
    def epoch(self) -> int:
        """Epochs finished so far."""
        return self.progress.epoch

    @property
    def n_batches(self) -> int:
        return len(self.bounds) - 1

    def run(
        self, on_epoch: EpochCallback | None = None, on_batch: BatchCallback | None = None
    ) -> str:
        """Train until ``config.epochs`` are done; returns how the run ended.

        on_epoch(trainer, metrics) runs after every epoch and on_batch(trainer) after every
        mini-batch; either returns True to stop there (``STOPPED``), with the state ready to
        export and resume. Raises ``Diverged`` when the cost or the weights stop being finite.
        """
        p = self.progress
        # sigmoid's exp(-z) overflows to inf for z << 0 and 1/inf is the right answer, 0;
        # invalid values only arise once training diverges, which _finish_epoch reports
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            while not p.early_stopped and p.epoch < self.config.epochs:
                finished, stop = self._run_epoch(on_batch)
                if not finished:
                    return STOPPED
                metrics = self._finish_epoch()
                if on_epoch is not None and on_epoch(self, metrics):
                    stop = True
                if stop and not p.early_stopped and p.epoch < self.config.epochs:
                    return STOPPED
        return EARLY_STOPPED if p.early_stopped else COMPLETED

    def _run_epoch(self, on_batch: BatchCallback | None) -> tuple[bool, bool]:
        """The current epoch's remaining mini-batches: (epoch finished, stop requested)."""
        p, net, X, Y = self.progress, self.network, self.inputs, self.targets
        bounds, l2, n = self.bounds.tolist(), self.config.l2, len(X)
        # the schedule's counters at the start of the epoch; a per-step schedule is asked
        # again before every step, a per-epoch one only here
        steps, epoch, samples = p.epoch * self.n_batches, p.epoch, p.epoch * n
        rate_of_step = self.schedule.rate if self.schedule.per == "step" else None
        lr = self.schedule.rate(steps + p.batch, epoch, samples + bounds[p.batch])
        decay = 1.0 - lr * l2 / n
        order = None
        if self.shuffle:
            # A resumed epoch redraws the same permutation from the state the epoch began with.
            if p.batch == 0:
                p.epoch_rng_state = self.rng.get_state()
            else:
                self.rng.set_state(p.epoch_rng_state)
            order = self.rng.permutation(len(X))
        # predicted classes go into one array and are counted once, not batch by batch
        predicted = np.empty(len(X), dtype=np.intp) if self.labels is not None else None
        first, last = p.batch, len(bounds) - 1
        # Shuffled rows are gathered a block of mini-batches at a time (about 1 MiB), into
        # the same two buffers every time: one copy per block instead of two per mini-batch,
        # never a second copy of the data, and no fresh pages for the kernel to fault in.
        row_bytes = X.shape[1] * X.itemsize + Y.shape[1] * Y.itemsize  # whatever the order
        per_block = max(1, (1 << 20) // (row_bytes * max(1, bounds[1] - bounds[0])))
        block_start = block_end = 0
        if order is not None:
            X_buffer, Y_buffer = self._block_buffers(
                min(per_block * (bounds[1] - bounds[0]), len(X))
            )
        cost_sum = np.float64(p.cost_sum)  # float64 even when the network is float32
        started = time.perf_counter()
        self._in_flight = (predicted, order, bounds[first], started, p.correct, p.seconds)
        stop = False
        # the loop below is the hot path of small networks: locals only
        step = net.sgd_step if self._plain_sgd else self._optimizer_step
        for k in range(first, last):
            start, end = bounds[k], bounds[k + 1]
            if order is None:
                xb, yb = X[start:end], Y[start:end]
            else:
                if end > block_end:
                    block_start, block_end = start, bounds[min(k + per_block, last)]
                    rows = order[block_start:block_end]
                    # mode="clip" lets take write straight into out (rows are all valid)
                    X_block = X.take(rows, axis=0, out=X_buffer[: len(rows)], mode="clip")
                    Y_block = Y.take(rows, axis=0, out=Y_buffer[: len(rows)], mode="clip")
                xb = X_block[start - block_start : end - block_start]
                yb = Y_block[start - block_start : end - block_start]
            if rate_of_step is not None:
                lr = rate_of_step(steps + k, epoch, samples + start)
                decay = 1.0 - lr * l2 / n
            loss, outputs = step(xb, yb, lr, decay)
            cost_sum += loss
            if predicted is not None:
                outputs.argmax(1, predicted[start:end])  # axis, out
            if on_batch is not None:
                p.batch = k + 1
                p.cost_sum = float(cost_sum)  # current for a checkpoint taken in on_batch
                if on_batch(self):
                    stop = True
                    break
        else:
            p.batch = last
        p.cost_sum = float(cost_sum)
        self._sync()
        self._in_flight = None
        return p.batch == last, stop

    def _optimizer_step(self, inputs, targets, rate: float, decay: float) -> tuple:
        """One step through the optimizer: the gradient of the batch's mean cost, L2's term,
        clipping, then the update. ``decay`` is ``sgd_step``'s: here l2 is in the gradient."""
        net, optimizer, config = self.network, self.optimizer, self.config
        unit = optimizer.gradient_unit(rate)
        loss, outputs, gradient = net.batch_gradient(inputs, targets, unit / len(inputs))
        if config.l2:
            optimizer.add_l2(gradient, net.W_n, unit * (config.l2 / len(self.inputs)))
        if config.clip_norm is not None:
            clip_by_global_norm(gradient.flat, config.clip_norm, unit)
        optimizer.update(net.W_n, net.B_n, gradient, rate)
        return loss, outputs

    def _block_buffers(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        buffers = self._buffers
        if buffers is None or len(buffers[0]) < rows:
            X, Y = self.inputs, self.targets
            buffers = self._buffers = (
                np.empty((rows, X.shape[1]), X.dtype),
                np.empty((rows, Y.shape[1]), Y.dtype),
            )
        return buffers

    def _sync(self) -> None:
        """Bring the running epoch's correct count and seconds up to its last mini-batch.

        Predictions are counted in one go rather than batch by batch (fewer NumPy calls on the
        hot path), so a state exported inside the epoch counts them first.
        """
        predicted, order, first_row, started, correct, seconds = self._in_flight
        p = self.progress
        if predicted is not None:
            done = slice(first_row, self.bounds[p.batch])
            labels = self.labels[done] if order is None else self.labels[order[done]]
            correct += int(np.count_nonzero(predicted[done] == labels))
        p.correct = correct
        p.seconds = seconds + time.perf_counter() - started

    def _finish_epoch(self) -> EpochMetrics:
        p, net, n = self.progress, self.network, len(self.inputs)
        epoch = p.epoch + 1
        cost = p.cost_sum / n
        if self.config.l2:
            cost += 0.5 * self.config.l2 / n * sum(float(np.vdot(W, W)) for W in net.W_n)
        if not math.isfinite(cost) or not net.parameters_finite():
            raise Diverged(epoch, cost)
        accuracy = p.correct / n if self.labels is not None else None
        val_cost = val_accuracy = None
        started = time.perf_counter()
        if self.validation is not None:
            result = net.evaluate(*self.validation)
            val_cost, val_accuracy = result.cost, result.accuracy
        seconds = p.seconds + time.perf_counter() - started
        last = self.n_batches - 1  # the rate of the epoch's last step
        rate = self.schedule.rate(
            p.epoch * self.n_batches + last, p.epoch, p.epoch * n + int(self.bounds[last])
        )
        metrics = EpochMetrics(epoch, cost, accuracy, val_cost, val_accuracy, seconds, rate)
        self.history.append(metrics)

        monitored = val_cost if val_cost is not None else cost
        self.schedule.end_epoch(monitored)
        if monitored < p.best_cost - self.config.min_delta:
            p.best_cost, p.stale_epochs = monitored, 0
        else:
            p.stale_epochs += 1
        if self.config.patience is not None and p.stale_epochs >= self.config.patience:
            p.early_stopped = True
        p.epoch, p.batch, p.cost_sum, p.correct, p.seconds = epoch, 0, 0.0, 0, 0.0
        return metrics

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, np.ndarray]:
        """The model and the whole training position as plain arrays (``np.savez``-able)."""
        p = self.progress
        if self._in_flight is not None:  # called from on_batch, inside an epoch
            self._sync()
        # mid-epoch, resuming restarts the generator where the epoch began and redraws
        rng_state = p.epoch_rng_state if p.batch and self.shuffle else self.rng.get_state()
        _, keys, pos, has_gauss, cached_gaussian = rng_state
        # copies: training goes on changing the live arrays after this snapshot
        state = {k: np.array(v) for k, v in self.network.to_arrays().items()}
        state.update(
            epoch=np.asarray(p.epoch),
            batch=np.asarray(p.batch),
            cost_sum=np.asarray(p.cost_sum),
            correct=np.asarray(p.correct),
            seconds=np.asarray(p.seconds),
            best_cost=np.asarray(p.best_cost),
            stale_epochs=np.asarray(p.stale_epochs),
            early_stopped=np.asarray(p.early_stopped),
            rng_keys=np.asarray(keys, dtype=np.uint32),
            rng_pos=np.asarray(pos),
            rng_has_gauss=np.asarray(has_gauss),
            rng_cached_gaussian=np.asarray(cached_gaussian),
        )
        state.update(self.optimizer.state_dict())
        state.update(self.schedule.state_dict())
        return state

    def load_state_dict(self, state) -> None:
        """Continue from ``state_dict()`` output: weights, generator, optimizer, schedule and
        position. A state written before optimizers and schedules were options continues as
        plain sgd at a constant rate, which it was; any other mismatch is a ValueError."""
        structure = [int(n) for n in state["structure"]]
        if structure != self.network.structure:
            raise ValueError(
                f"state is for structure {structure}, the network has {self.network.structure}"
            )
        n_layers = len(structure) - 1
        # a state from another optimizer or schedule raises here, before the weights change
        self.optimizer.load_state_dict(state)
        self.schedule.load_state_dict(state)
        self.network.set_parameters(
            [state[f"W{l}"] for l in range(n_layers)], [state[f"b{l}"] for l in range(n_layers)]
        )
        rng_state = (
            "MT19937",
            np.array(state["rng_keys"], dtype=np.uint32),
            int(state["rng_pos"]),
            int(state["rng_has_gauss"]),
            float(state["rng_cached_gaussian"]),
        )
        self.rng.set_state(rng_state)
        batch = int(state["batch"])
        # batch == n_batches: saved after an epoch's last mini-batch, before its metrics
        if not 0 <= batch <= self.n_batches:
            raise ValueError(f"state is at mini-batch {batch}, the data has {self.n_batches}")
        self.progress = _Progress(
            epoch=int(state["epoch"]),
            batch=batch,
            cost_sum=float(state["cost_sum"]),
            correct=int(state["correct"]),
            seconds=float(state["seconds"]),
            best_cost=float(state["best_cost"]),
            stale_epochs=int(state["stale_epochs"]),
            early_stopped=bool(state["early_stopped"]),
            epoch_rng_state=rng_state if batch else None,
        )
