"""Exactness as a sweep feature, on the real stack: ASHA with promotions (a paused trial
promoted later continues from its pause, bitwise as if it had never stopped), a cancelled
sweep resumed, failed trials re-run, trials added in the seed's sequence, the best trials
extended, and seed replicates ranked by their mean."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.faults.conftest import model_weights, reference_weights
from tests.integration.test_continue import model, rows
from tests.integration.test_sweeps import base, store_classes, submit, trials, wait
from tuning.sampling import derived_seed, sample

TENANT = "bob"  # test_sweeps stores the same data set for alice: one tenant's would be one


@pytest.fixture(scope="module")
def classes(stack):
    return store_classes(stack, "three-classes", 150, 3, tenant=TENANT)


# learning rates whose validation cost after one epoch gets worse trial by trial: each later
# trial pauses at rung 0, until the sixth makes room for two (6 // 3) and the second is
# promoted
RATES = [3.0, 2.0, 1.2, 0.6, 0.3, 0.1]


def test_asha_with_promotions_pauses_and_promotes_exactly(stack, classes):
    client = stack.client(TENANT)
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


def _params_of(jobs: list[dict]) -> list[dict]:
    return [j["params"] for j in jobs]


def test_a_cancelled_sweep_resumes_with_the_same_configurations_exactly(stack, classes):
    client = stack.client(TENANT)
    body = {
        "base": base(classes, epochs=2000),
        "search": {"learning_rate": {"log_uniform": [0.5, 4]}, "structure[1]": {"choice": [4, 8]}},
        "method": "random",
        "trials": 4,
        "seed": 11,
        "objective": {"metric": "val_accuracy"},
        "max_parallel": 1,
    }
    sweep = submit(client, body)
    deadline = time.monotonic() + 60
    listed = {"sweep": sweep["id"], "status": "running"}
    while not client.get("/v1/jobs", params=listed).json()["jobs"]:  # one has started
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert client.post(f"/v1/sweeps/{sweep['id']}/cancel").status_code in (200, 202)
    stopped = wait(client, sweep["id"])
    while stopped["counts"]["running"]:
        stopped = client.get(f"/v1/sweeps/{sweep['id']}").json()
        time.sleep(0.1)
    before = trials(client, sweep["id"])
    assert stopped["status"] == "cancelled" and any(j["status"] == "cancelled" for j in before)
    started = [j for j in before if any(e["kind"] == "claimed" for e in j["history"])]
    cut = [j for j in started if j["status"] == "cancelled"]
    assert cut, "no trial was cut while it ran"

    resumed = client.post(f"/v1/sweeps/{sweep['id']}/continue", json={})
    assert resumed.status_code == 202, resumed.text
    assert resumed.json()["status"] == "running"
    assert resumed.json()["counts"]["running"] + resumed.json()["counts"]["queued"] <= 1
    done = wait(client, sweep["id"], timeout=240)
    after = trials(client, sweep["id"])
    assert done["status"] == "succeeded" and [j["status"] for j in after] == ["succeeded"] * 4
    # the same trials with the same values, each trained exactly once to the end
    # (the trials not released before the cancel are released now)
    assert [j["id"] for j in after[: len(before)]] == [j["id"] for j in before]
    expected = [sample("random", body["search"], n, 11) for n in range(1, 5)]
    assert _params_of(after) == expected
    for job in after:
        assert job["progress"]["epoch"] == 2000
        reference = reference_weights(stack.database_url, job["id"])
        assert all(
            np.array_equal(a, b) for a, b in zip(model_weights(client, job["id"]), reference)
        )
    kinds = [e["kind"] for e in next(j for j in after if j["id"] == cut[0]["id"])["history"]]
    assert "resumed" in kinds[kinds.index("paused") :]
    for job in after:  # trained once at a time: a second claim only after its hold
        kinds = [e["kind"] for e in job["history"]]
        assert 1 <= kinds.count("claimed") <= 1 + kinds.count("paused"), kinds

    nothing = client.post(f"/v1/sweeps/{sweep['id']}/continue", json={})
    assert nothing.status_code == 409 and "add_trials" in nothing.json()["detail"]


TANH = {"activation": "tanh", "output_activation": "identity", "validation_split": 0.2}


def test_a_sweep_re_runs_failed_trials_and_refuses_more_grid_points(stack, classes):
    client = stack.client(TENANT)
    sweep = submit(
        client,
        {
            "base": base(classes, epochs=3, options=TANH),
            "search": {"learning_rate": {"choice": [0.5, 1e300]}},  # the second diverges
            "method": "grid",
            "objective": {"metric": "val_accuracy"},
        },
    )
    first = wait(client, sweep["id"])
    assert first["status"] == "succeeded" and first["counts"]["failed"] == 1
    grid = client.post(f"/v1/sweeps/{sweep['id']}/continue", json={"add_trials": 1})
    assert grid.status_code == 422 and grid.json()["errors"][0]["field"] == "add_trials"

    again = client.post(f"/v1/sweeps/{sweep['id']}/continue", json={"rerun_failed": True})
    assert again.status_code == 202, again.text
    done = wait(client, sweep["id"])
    assert done["status"] == "succeeded" and done["counts"]["failed"] == 1
    failed = trials(client, sweep["id"])[1]
    assert failed["error"]["type"] == "diverged"  # exact: the same run fails the same way
    kinds = [e["kind"] for e in failed["history"]]
    assert kinds.count("failed") == 2 and kinds.count("claimed") == 2
    assert failed["attempts"] == 1


def test_a_sweep_adds_trials_in_its_seed_s_sequence_and_extends_its_best(stack, classes):
    client = stack.client(TENANT)
    body = {
        "base": base(classes, epochs=4),
        "search": {"learning_rate": {"log_uniform": [0.2, 5]}},
        "method": "random",
        "trials": 3,
        "seed": 5,
        "objective": {"metric": "val_cost"},
        "max_parallel": 2,
    }
    sweep = submit(client, body)
    assert wait(client, sweep["id"])["status"] == "succeeded"
    best = client.get(f"/v1/sweeps/{sweep['id']}").json()["best"]

    more = {"add_trials": 2, "extend": {"top": 1, "epochs": 3}}
    answer = client.post(f"/v1/sweeps/{sweep['id']}/continue", json=more)
    assert answer.status_code == 202, answer.text
    assert answer.json()["trials"] == 6
    done = wait(client, sweep["id"])
    assert done["status"] == "succeeded" and done["counts"]["succeeded"] == 6
    jobs = trials(client, sweep["id"])
    extension = jobs[3]
    assert extension["continued_from"] == best["job_id"]
    assert extension["params"] == best["params"] and extension["progress"]["epoch"] == 7
    # the added trials are draws 4 and 5: what a 5-trial sweep would have drawn
    assert _params_of(jobs[4:]) == [sample("random", body["search"], n, 5) for n in (4, 5)]
    # the extension is the best configuration trained 7 epochs in one go
    rate = best["params"]["learning_rate"]
    seed = client.job(best["job_id"])["seed"]
    alone = client.submit(base(classes, epochs=7, seed=seed, learning_rate=rate))["id"]
    assert client.wait(alone)["status"] == "succeeded"
    ours, theirs = model(client, extension["id"]), model(client, alone)
    assert all(ours[k].tobytes() == theirs[k].tobytes() for k in ours)
    assert rows(client, extension["id"]) == rows(client, alone)


def test_replicates_train_each_configuration_with_derived_seeds_ranked_by_mean(stack, classes):
    client = stack.client(TENANT)
    body = {
        "base": base(classes, epochs=3),
        "search": {"learning_rate": {"log_uniform": [0.3, 5]}},
        "method": "random",
        "trials": 3,
        "replicates": 3,
        "seed": 8,
        "objective": {"metric": "val_accuracy"},
    }
    sweep = submit(client, body)
    assert sweep["trials"] == 9 and sweep["replicates"] == 3
    done = wait(client, sweep["id"])
    assert done["status"] == "succeeded" and done["counts"]["succeeded"] == 9
    jobs = trials(client, sweep["id"])
    for c in range(3):
        group = jobs[3 * c : 3 * c + 3]
        assert all(j["params"] == sample("random", body["search"], c + 1, 8) for j in group)
        first = group[0]["seed"]
        assert [j["seed"] for j in group[1:]] == [derived_seed(first, r) for r in (1, 2)]
        assert len({j["seed"] for j in group}) == 3
    configurations = done["configurations"]
    assert [c["finished"] for c in configurations] == [3, 3, 3]
    for row in configurations:
        values = [j["metrics"]["val_accuracy"] for j in jobs if j["id"] in row["job_ids"]]
        assert row["mean"] == pytest.approx(np.mean(values))
        assert row["std"] == pytest.approx(np.std(values, ddof=1))
    means = [c["mean"] for c in configurations]
    assert means == sorted(means, reverse=True)
    best = done["best"]
    assert best["job_id"] in configurations[0]["job_ids"]
    assert best["objective"] == max(
        j["metrics"]["val_accuracy"] for j in jobs if j["id"] in configurations[0]["job_ids"]
    )
    # a replicate is its configuration with its seed: the same bits as that job alone
    replicate = jobs[4]
    alone = client.submit(base(classes, epochs=3, seed=replicate["seed"], **replicate["params"]))[
        "id"
    ]
    assert client.wait(alone)["status"] == "succeeded"
    ours, theirs = model(client, replicate["id"]), model(client, alone)
    assert all(ours[k].tobytes() == theirs[k].tobytes() for k in ours)

    refused = client.post(
        "/v1/sweeps", json={**body, "early_stopping": {"min_epochs": 1, "reduction_factor": 2}}
    )
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "replicates"
