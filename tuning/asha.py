"""ASHA: the rungs at which a sweep's trials are judged, whether one that reached a rung
continues, and (with promotions) which paused trials are promoted as more results arrive.
The reason to change is the early-stopping rule.

Pure: no SQL. The decisions already recorded on the trial rows come in; the decision to
record goes out. Pruning is Optuna's SuccessiveHalvingPruner on a study rebuilt from them.
"""

from __future__ import annotations

import math

from . import space


def rungs(min_epochs: int, factor: int, epochs: int) -> list[int]:
    """The epochs at which a trial of ``epochs`` epochs is judged: min_epochs * factor**k,
    before its last epoch (a trial at its last epoch has finished, not reached a rung)."""
    found, epoch = [], min_epochs
    while epoch < epochs:
        found.append(epoch)
        epoch *= factor
    return found


def decision(
    *,
    epoch: int,
    value: float | None,
    own: list[dict],
    others: list[list[dict]],
    min_epochs: int,
    factor: int,
    goal: str,
    promotions: bool = False,
) -> dict:
    """Whether a trial that reached ``epoch`` (a rung) with objective ``value`` continues;
    with ``promotions`` one that does not is paused there ("pause"), to be promoted later
    (``promotable``), instead of stopped ("stop").

    Optuna's SuccessiveHalvingPruner decides, on a study rebuilt from the decisions already
    recorded: ``own`` (this trial's, earlier rungs) and ``others`` (every other trial's). The
    trial continues if its value is among the best ``max(1, n // factor)`` of the n trials
    that reached the rung so far, itself included. Returns the decision with the figures
    behind it, to be stored on the trial."""
    optuna = space.optuna()
    rung = len(own)
    key = f"completed_rung_{rung}"  # the pruner's record of a trial's value at a rung
    value = float("nan") if value is None else float(value)
    study = optuna.create_study(direction="maximize" if goal == "max" else "minimize")
    worst = -math.inf if goal == "max" else math.inf  # a recorded value that was not finite

    def recorded(decisions: list[dict]) -> dict:
        return {
            f"completed_rung_{d['rung']}": worst if d["value"] is None else d["value"]
            for d in decisions
        }

    competing = []
    running = optuna.trial.TrialState.RUNNING
    for decisions in others:
        attrs = recorded(decisions)
        if key in attrs:
            competing.append(attrs[key])
        study.add_trial(optuna.trial.create_trial(state=running, system_attrs=attrs))
    attrs = recorded(own)
    study.add_trial(
        optuna.trial.create_trial(
            state=running, system_attrs=attrs, intermediate_values={epoch: value}
        )
    )
    pruner = optuna.pruners.SuccessiveHalvingPruner(
        min_resource=min_epochs, reduction_factor=factor, min_early_stopping_rate=0
    )
    stop = pruner.prune(study, study.trials[-1])
    competing.append(value)
    finite = [v for v in competing if math.isfinite(v)]
    keep = max(1, len(competing) // factor)
    ranked = sorted(finite, reverse=goal == "max")
    better = sum(1 for v in finite if (v > value if goal == "max" else v < value))
    return {
        "rung": rung,
        "epoch": epoch,
        "value": value if math.isfinite(value) else None,
        "competitors": len(competing),
        "keep": keep,
        "cutoff": ranked[keep - 1] if len(ranked) >= keep else None,
        "better": better if math.isfinite(value) else None,
        "decision": ("pause" if promotions else "stop") if stop else "continue",
    }


def promotable(records: list[tuple[str, float | None, bool]], factor: int, goal: str) -> list:
    """ASHA's promotions at one rung: ``records`` holds (trial, value, paused) for every
    trial that reached the rung. A paused trial is promoted once its value ranks among the
    best ``max(1, n // factor)`` of the n values (the rule a trial continues by); as more
    trials report there, n grows and so does the number kept. Returns the trials to promote,
    best first, each with the figures behind it."""
    finite = [(v, t) for t, v, _ in records if v is not None and math.isfinite(v)]
    keep = max(1, len(records) // factor)
    ranked = sorted(finite, key=lambda pair: -pair[0] if goal == "max" else pair[0])
    cutoff = ranked[keep - 1][0] if len(ranked) >= keep else None
    paused = {t for t, _, is_paused in records if is_paused}
    chosen = []
    for better, (value, trial) in enumerate(ranked[:keep]):
        if trial in paused:
            figures = {"competitors": len(records), "keep": keep, "cutoff": cutoff}
            chosen.append((trial, figures | {"value": value, "better": better}))
    return chosen
