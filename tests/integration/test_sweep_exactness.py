"""Exactness as a sweep feature, on the real stack: ASHA with promotions (a paused trial
promoted later continues from its pause, bitwise as if it had never stopped)."""

from __future__ import annotations

from tests.integration.test_continue import model, rows

# ``classes``: test_sweeps' module fixture (its stored data set), used here too
from tests.integration.test_sweeps import base, classes, submit, trials, wait  # noqa: F401

# learning rates whose validation cost after one epoch gets worse trial by trial: each later
# trial pauses at rung 0, until the sixth makes room for two (6 // 3) and the second is
# promoted
RATES = [3.0, 2.0, 1.2, 0.6, 0.3, 0.1]


def test_asha_with_promotions_pauses_and_promotes_exactly(stack, classes):  # noqa: F811
    client = stack.client()
    sweep = submit(
        client,
        {
            "base": base(classes, epochs=9, seed=4),
            "search": {"learning_rate": {"choice": RATES}},
            "method": "grid",
            "objective": {"metric": "val_cost"},
            "early_stopping": {"min_epochs": 1, "reduction_factor": 3, "promotions": True},
            "max_parallel": 1,
        },
    )
    assert sweep["early_stopping"]["promotions"] is True
    done = wait(client, sweep["id"])
    assert done["status"] == "succeeded" and done["counts"]["paused"] == 0
    jobs = trials(client, sweep["id"])
    values = [j["rungs"][0]["value"] for j in jobs]
    assert values == sorted(values), "the rates' order at rung 0 is the test's premise"

    promoted = [j for j in jobs if any(d["promoted"] for d in j["rungs"])]
    assert [j["trial"] for j in promoted] == [2]
    second = promoted[0]
    first_rung = second["rungs"][0]
    assert first_rung["decision"] == "pause" and first_rung["competitors"] == 2
    figures = first_rung["promoted"]
    assert figures["competitors"] == 6 and figures["keep"] == 2 and figures["better"] == 1
    kinds = [e["kind"] for e in second["history"]]
    assert kinds.index("paused") < kinds.index("promoted") < kinds.index("resumed")

    # trials 3 to 6 stayed paused at rung 0 and ended with the sweep, stopped early
    for job in jobs[2:]:
        assert job["status"] == "succeeded" and job["stopped_early"]
        assert job["progress"]["epoch"] == 1 and job["rungs"][-1]["decision"] == "pause"

    # the promoted trial, paused after epoch 1 and continued, is bitwise the same
    # configuration trained without a pause to the epoch it reached
    reached = second["progress"]["epoch"]
    assert reached >= 3
    alone = client.submit(
        base(classes, epochs=reached, seed=second["seed"], learning_rate=RATES[1])
    )["id"]
    assert client.wait(alone)["status"] == "succeeded"
    ours, theirs = model(client, second["id"]), model(client, alone)
    assert all(ours[k].tobytes() == theirs[k].tobytes() for k in ours)
    assert rows(client, second["id"]) == rows(client, alone)
