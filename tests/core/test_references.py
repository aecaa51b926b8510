"""core's optimizers, schedules and clipping against PyTorch, step for step.

From the same initial weights and the same mini-batches (in order, no shuffling), 100 steps
of core's ``Trainer`` and of ``torch.optim`` (with ``lr_scheduler`` and ``clip_grad_norm_``)
end with weights that agree to RTOL relative, in float64. PyTorch differentiates its own
forward pass with autograd, so the gradients are computed independently of core's backprop.
core's L2 term is a term of the cost, so PyTorch gets it in the loss.
"""

import numpy as np
import pytest
import torch

from core import Network, Trainer, TrainingConfig

STRUCTURE = [6, 9, 3]
N, BATCH, EPOCHS = 40, 10, 25  # 4 steps an epoch, 100 steps
RTOL = 1e-10
L2 = 0.5


def data():
    rng = np.random.RandomState(0)
    return rng.randn(N, STRUCTURE[0]), rng.rand(N, STRUCTURE[-1])


def initial_network():
    return Network(STRUCTURE, init="scaled", rng=1)


def parameters(net):
    """In torch's order: W0, b0, W1, b1."""
    return [p for W, b in zip(net.W_n, net.B_n) for p in (W, b[:, 0])]


def core_run(rate, **options):
    X, Y = data()
    net = initial_network()
    config = TrainingConfig(epochs=EPOCHS, learning_rate=rate, **options)
    trainer = Trainer(net, X, Y, config, batch_sizes=[BATCH] * (N // BATCH))
    trainer.run()
    return parameters(net), trainer.history


def torch_run(make_optimizer, *, l2=0.0, clip_norm=None, make_scheduler=None, per="epoch"):
    """The same run in PyTorch: (parameters, rate of every step, gradient norms)."""
    X, Y = (torch.from_numpy(a) for a in data())
    params = [torch.tensor(p, requires_grad=True) for p in parameters(initial_network())]
    optimizer = make_optimizer(params)
    scheduler = make_scheduler(optimizer) if make_scheduler else None
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    rates, norms = [], []
    for _ in range(EPOCHS):
        summed_cost = 0.0
        for start in range(0, N, BATCH):
            a, targets = X[start : start + BATCH], Y[start : start + BATCH]
            for W, b in zip(params[::2], params[1::2]):
                a = torch.sigmoid(a @ W + b)
            cost = 0.5 * ((a - targets) ** 2).sum()
            loss = cost / BATCH + l2 / (2 * N) * sum((W**2).sum() for W in params[::2])
            optimizer.zero_grad()
            loss.backward()
            if clip_norm is not None:
                norms.append(float(torch.nn.utils.clip_grad_norm_(params, clip_norm)))
            rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            summed_cost += float(cost.detach())
            if scheduler is not None and per == "step":
                scheduler.step()
        if plateau:  # the epoch's cost as core reports it: mean over batches, plus L2
            with torch.no_grad():
                penalty = l2 / (2 * N) * sum(float((W**2).sum()) for W in params[::2])
            scheduler.step(summed_cost / N + penalty)
        elif scheduler is not None and per == "epoch":
            scheduler.step()
    return [p.detach().numpy() for p in params], rates, norms


def relative_error(ours, theirs) -> float:
    """The largest difference over the largest magnitude, the worst over all arrays."""
    return max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(ours, theirs))


def assert_same_run(ours, theirs):
    assert (
        relative_error(theirs, parameters(initial_network())) > 1e-2
    )  # it trained: an update left out would show
    error = relative_error(ours, theirs)
    assert error < RTOL, f"relative error {error:.1e}"


OPTIMIZERS = {
    "sgd": (0.5, {"name": "sgd"}, lambda p: torch.optim.SGD(p, lr=0.5)),
    "momentum": (
        0.1,
        {"name": "momentum", "momentum": 0.9},
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    ),
    "nesterov": (
        0.1,
        {"name": "momentum", "momentum": 0.9, "nesterov": True},
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    ),
    "dampening": (
        0.2,
        {"name": "momentum", "momentum": 0.8, "dampening": 0.3},
        lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.8, dampening=0.3),
    ),
    "adam": (
        0.02,
        {"name": "adam", "weight_decay": 1e-2},
        lambda p: torch.optim.Adam(p, lr=0.02, weight_decay=1e-2),
    ),
    "adamw": (
        0.02,
        {"name": "adamw", "beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "weight_decay": 0.1},
        lambda p: torch.optim.AdamW(p, lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
    ),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_100_steps_of_each_optimizer_agree_with_torch_optim(name):
    rate, optimizer, make_optimizer = OPTIMIZERS[name]
    ours, _ = core_run(rate, optimizer=optimizer, l2=L2)
    theirs, _, _ = torch_run(make_optimizer, l2=L2)
    assert_same_run(ours, theirs)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_clipping_by_global_norm_agrees_with_clip_grad_norm(name):
    rate, optimizer, make_optimizer = OPTIMIZERS[name]
    ours, _ = core_run(rate, optimizer=optimizer, l2=L2, clip_norm=0.05)
    theirs, _, norms = torch_run(make_optimizer, l2=L2, clip_norm=0.05)
    assert sum(norm > 0.05 for norm in norms) > 50  # it clipped most steps
    assert_same_run(ours, theirs)


lr_scheduler = torch.optim.lr_scheduler
SCHEDULES = {
    "step": (
        "sgd",
        {"name": "step", "step_size": 30, "gamma": 0.5, "per": "step"},
        lambda o: lr_scheduler.StepLR(o, step_size=30, gamma=0.5),
    ),
    "exponential": (
        "momentum",
        {"name": "exponential", "gamma": 0.9, "per": "epoch"},
        lambda o: lr_scheduler.ExponentialLR(o, gamma=0.9),
    ),
    "cosine": (  # 20 steps of warm-up, then 80 of cosine
        "adam",
        {"name": "cosine", "warmup": 20, "min_lr": 1e-3, "per": "step"},
        lambda o: lr_scheduler.SequentialLR(
            o,
            [
                lr_scheduler.LinearLR(o, start_factor=1 / 21, total_iters=20),
                lr_scheduler.CosineAnnealingLR(o, T_max=80, eta_min=1e-3),
            ],
            milestones=[20],
        ),
    ),
    "plateau": (
        "sgd",
        {"name": "plateau", "factor": 0.5, "patience": 1, "threshold": 0.02},
        lambda o: lr_scheduler.ReduceLROnPlateau(o, factor=0.5, patience=1, threshold=0.02),
    ),
}


@pytest.mark.parametrize("name", SCHEDULES)
def test_100_steps_of_each_schedule_agree_with_lr_scheduler(name):
    optimizer_name, schedule, make_scheduler = SCHEDULES[name]
    rate, optimizer, make_optimizer = OPTIMIZERS[optimizer_name]
    per = schedule.get("per", "epoch")
    ours, history = core_run(rate, optimizer=optimizer, schedule=schedule, l2=L2)
    theirs, rates, _ = torch_run(make_optimizer, l2=L2, make_scheduler=make_scheduler, per=per)
    # the rate of each epoch's last step, as the metrics report it
    last_rates = rates[N // BATCH - 1 :: N // BATCH]
    np.testing.assert_allclose([m.learning_rate for m in history], last_rates, rtol=1e-12)
    assert len(set(np.round(last_rates, 12))) >= 3  # the rate did change, more than once
    assert_same_run(ours, theirs)
