"""A sweep on digits: ASHA with promotions against running every trial to completion, for
sweep seeds 1 to 10; 2 worker processes against 1; and a continued job against one long job.

    python benchmarks/sweep_bench.py [--stack postgresql|embedded] [--trials 27]
                                     [--seeds 1,2,...] [--repeats 3] [--stop-only]
                                     [--quick] [--json PATH]

The real service as processes (``open_stack`` of ``benchmarks/bench_stack.py``: gunicorn,
a Celery worker, Redis, a fresh database) and scikit-learn's 8x8 digits (1,797 samples,
inputs / 16, one-hot targets) stored as a data set. The sweep is the one of the README: a
64-30-10 base of 30 epochs at rate 3.0 on mini-batches of 10 with a validation split of 0.2,
searching learning_rate (log-uniform 0.05 to 10), structure[1] (16, 32, 64, 128), options.l2
(uniform 0 to 0.001) and data.batch_size (10, 32); random sampling, 27 trials, objective
val_accuracy, at most 4 trials at once. ASHA is min_epochs 3, reduction_factor 3 (rungs at
epochs 3, 9 and 27) with promotions: a trial outside the best third at a rung pauses there,
and is promoted (it continues from its pause) once it ranks among the best
max(1, n // 3) of the n trials that reached the rung; ``--stop-only`` runs the same ASHA
without promotions (a trial outside the best third stops), for comparison.

For the main seed (7), each run gets a fresh worker:

- ASHA with 2 processes;
- the same trials without early stopping, 2 processes (the baseline of accuracy and epochs);
- ASHA with 1 process (the baseline of wall time), and the full run with 1 process.

Each of the four runs ``--repeats`` times (3), alternating; the run of median wall time is
the one reported. ASHA's decisions depend on the order in which trials reach a rung, so its
epochs vary a little from run to run with 2 processes. The trials' values depend on the seed
alone, so both runs train the same configurations.

Then ASHA against the full run once for each other seed of ``--seeds`` (1 to 10 by default;
seed 7's figures are the main run's), on one 2-process worker. Printed for every seed: the
best val_accuracy of each run and the gap in points (ASHA must be within 1 point), the epochs
trained and their ratio (ASHA at most 0.40 of the full run's), how many trials were promoted
(a trial is promoted when one of its rung decisions carries ``promoted``), and where the full
run's best trial went in ASHA (the rung it paused or stopped at, its rank there, whether it
was promoted; for a seed that misses, the trials ranked ahead of it there and what they end
with in the full run); then how many seeds meet each bound, the worst gap and the median
ratio (``--json`` also keeps every trial's rung values and both runs' final accuracy).
Also for seed 7: the sweeps' wall times (first trial created to the sweep's end, from the
database's clock) with their ratio (2 processes at most 0.6 of 1), and the core's own time
for the full run's trials, one after another in this process.

The continued job (run first, on a worker of its own): the README's base on digits, its seed
fixed, for 4 epochs, continued by ``POST /v1/jobs/{id}/continue`` for 6 more, against one
job of 10 epochs from the start; once with plain SGD and once with Adam. Printed: whether
the two models' arrays (``model.npz`` without its ``lineage``) are the same bits, and
whether the metrics rows (epoch, cost, accuracy, val_cost, val_accuracy, learning_rate) are
equal.

``--quick`` (6 trials, seed 7 alone, one run of each) only shows that the script works; its
exit status then reflects the continued job alone. Otherwise the exit status is 0 when every
seed meets the accuracy and epochs bounds and the continued jobs equal the long ones.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_stack import log, moment, npy, open_stack  # noqa: E402

SEARCH = {
    "learning_rate": {"log_uniform": [0.05, 10]},
    "structure[1]": {"choice": [16, 32, 64, 128]},
    "options.l2": {"uniform": [0, 0.001]},
    "data.batch_size": {"choice": [10, 32]},
}
ASHA_STOP = {"method": "asha", "min_epochs": 3, "reduction_factor": 3}
ASHA_PROMOTE = {**ASHA_STOP, "promotions": True}
MAIN_SEED = 7
ACCURACY_POINTS = 1.0  # ASHA's best at most this many points below the full run's
EPOCHS_RATIO = 0.40  # ASHA's epochs at most this share of the full run's
WALL_RATIO = 0.6  # 2 processes' wall time at most this share of 1 process's
# the continued job: (what, the base's options added, learning rate); first + more epochs
CONTINUED = (
    ("plain SGD", {}, 3.0),
    ("Adam", {"optimizer": {"name": "adam"}}, 0.01),
)
CONTINUED_EPOCHS = (4, 6)
COMPARED = ("epoch", "cost", "accuracy", "val_cost", "val_accuracy", "learning_rate")


def base_spec(dataset_id: str, epochs: int = 30) -> dict:
    return {
        "structure": [64, 30, 10],
        "epochs": epochs,
        "learning_rate": 3.0,
        "data": {"dataset_id": dataset_id, "batch_size": 10},
        "options": {"validation_split": 0.2},
    }


def sweep_body(dataset_id: str, trials: int, early_stopping: dict | None, seed: int) -> dict:
    body = {
        "name": "digits-width-rate",
        "base": base_spec(dataset_id),
        "search": SEARCH,
        "method": "random",
        "trials": trials,
        "seed": seed,
        "objective": {"metric": "val_accuracy", "goal": "max"},
        "max_parallel": 4,
    }
    if early_stopping:
        body["early_stopping"] = early_stopping
    return body


def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.data / 16.0, np.eye(10)[data.target]


def wait_job(client, job_id: str, timeout: float = 300.0) -> dict:
    """The job once it ended (TimeoutError after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:.0f} s")
        time.sleep(0.05)


def warm_up(client, dataset_id: str, processes: int) -> None:
    """One short job per training process first (connections, caches, BLAS): the sweeps are
    timed on warm processes, whatever their number."""
    job = base_spec(dataset_id, epochs=20)
    del job["options"]
    ids = [client.post("/v1/jobs", json=job).json()["id"] for _ in range(processes)]
    for job_id in ids:
        wait_job(client, job_id)


def run_sweep(stack, body: dict, processes: int | None, label: str) -> dict:
    """The sweep on a fresh worker of ``processes`` processes (None: the one running)."""
    worker = stack.start_worker(f"sweep-{label}", concurrency=processes) if processes else None
    try:
        client = stack.client()
        if processes:
            warm_up(client, body["base"]["data"]["dataset_id"], processes)
        response = client.post("/v1/sweeps", json=body)
        assert response.status_code == 202, response.text
        sweep_id = response.json()["id"]
        while True:
            sweep = client.get(f"/v1/sweeps/{sweep_id}", params={"limit": 200}).json()
            if sweep["status"] != "running":
                break
            time.sleep(0.25)
        assert sweep["status"] == "succeeded", sweep["counts"]
        wall = moment(sweep["finished_at"]) - moment(sweep["created_at"])
        trials = client.get("/v1/jobs", params={"sweep": sweep_id, "limit": 200}).json()["jobs"]
        held = sum(moment(t["finished_at"]) - moment(t["started_at"]) for t in trials)
        trained = sum(t["runtime_seconds"] for t in trials)
        ends = sorted(moment(t["finished_at"]) for t in trials)
        tail = ends[-1] - max(
            [moment(t["started_at"]) for t in trials if moment(t["finished_at"]) == ends[-1]]
            + [ends[-2]]
        )
        log(f"{label}: the last {tail:.2f} s trained one trial alone")
        log(f"{label}: trials held by a process {held:.2f} s in all, training {trained:.2f} s; "
            f"queued-to-claimed waits {sum(moment(t['started_at']) - moment(t['created_at']) for t in trials):.2f} s")  # noqa: E501  # fmt: skip
        log(f"{label}: {sweep['counts']['succeeded']} trials in {wall:.1f} s, "
            f"epochs {sweep['epochs']['run']}/{sweep['epochs']['full']}, "
            f"{promoted(sweep['leaderboard'])} promoted, "
            f"best val_accuracy {sweep['best']['objective']:.4f}")  # fmt: skip
        return {"sweep": sweep, "trials": trials, "wall": wall, "held": held, "trained": trained}
    finally:
        if worker is not None:
            worker.stop()


def promoted(trials: list[dict]) -> int:
    """Trials (a sweep's leaderboard rows, which carry their rung decisions) promoted at
    least once: one of their rung decisions carries ``promoted``."""
    return sum(any(d.get("promoted") for d in t.get("rungs") or []) for t in trials)


def _median(runs: list[dict]) -> dict:
    """The run of median wall time."""
    return sorted(runs, key=lambda run: run["wall"])[len(runs) // 2]


def where_it_went(asha_trials: list[dict], number: int, full_final: dict[int, float]) -> dict:
    """What ASHA did with trial ``number`` (the full run's best): each rung decision with its
    rank then (better + 1 of competitors), its promotion if any, the epoch it reached, its
    final val_accuracy, and its rank at its last rung among every trial that reached that rung
    by the sweep's end (with the number a promotion needed to be in, and the trials ahead of
    it there with their value and what they ended with in the full run: ``full_final``)."""
    trial = next(t for t in asha_trials if t["trial"] == number)
    decisions = []
    for d in trial.get("rungs") or []:
        seen = {
            "rung": d["rung"], "epoch": d["epoch"], "value": d["value"],
            "decision": d["decision"],
            "rank": None if d["better"] is None else d["better"] + 1,
            "competitors": d["competitors"], "keep": d["keep"], "cutoff": d["cutoff"],
        }  # fmt: skip
        if d.get("promoted"):
            p = d["promoted"]
            seen["promoted"] = {
                "rank": p["better"] + 1, "competitors": p["competitors"], "keep": p["keep"],
            }  # fmt: skip
        decisions.append(seen)
    final_rank = None
    if decisions:
        last = decisions[-1]
        there = [
            (t["trial"], d["value"])
            for t in asha_trials
            for d in t.get("rungs") or []
            if d["rung"] == last["rung"] and d["value"] is not None
        ]
        values = [v for _, v in there]
        reached = sum(
            any(d["rung"] == last["rung"] for d in t.get("rungs") or []) for t in asha_trials
        )
        if last["value"] is not None:
            final_rank = {
                "rung": last["rung"],
                "rank": 1 + sum(v > last["value"] for v in values),
                "reached": reached,
                "keep": max(1, reached // ASHA_STOP["reduction_factor"]),
                "ahead": [
                    {"trial": t, "value": v, "full_val_accuracy": full_final.get(t)}
                    for t, v in sorted(there, key=lambda pair: -pair[1])
                    if v > last["value"]
                ],
            }
    return {
        "trial": number,
        "params": trial.get("params"),
        "epochs_reached": trial["progress"]["epoch"],
        "val_accuracy": trial["objective"],
        "stopped_early": trial.get("stopped_early"),
        "rungs": decisions,
        "at_the_end": final_rank,
    }


def compare(seed: int, asha: dict, full: dict) -> dict:
    """One seed's figures: ASHA's run against the full run."""
    a, f = asha["sweep"], full["sweep"]
    gap = 100 * (f["best"]["objective"] - a["best"]["objective"])
    ratio = a["epochs"]["run"] / f["epochs"]["run"]
    same = [r["params"] for r in sorted(a["leaderboard"], key=lambda r: r["trial"])] == [
        r["params"] for r in sorted(f["leaderboard"], key=lambda r: r["trial"])
    ]
    full_best = f["best"]["trial"]
    full_final = {r["trial"]: r["objective"] for r in f["leaderboard"]}
    return {
        "seed": seed,
        "same_configurations": same,
        "asha_best_val_accuracy": a["best"]["objective"],
        "full_best_val_accuracy": f["best"]["objective"],
        "gap_points": gap,
        "asha_epochs": a["epochs"]["run"],
        "full_epochs": f["epochs"]["run"],
        "epochs_ratio": ratio,
        "promoted": promoted(a["leaderboard"]),
        "paused": sum(any(d["decision"] == "pause" for d in t["rungs"]) for t in a["leaderboard"]),
        "stopped_early": sum(r["stopped_early"] for r in a["leaderboard"]),
        "asha_best_trial": a["best"]["trial"],
        "full_best_trial": full_best,
        "full_best_in_asha": where_it_went(a["leaderboard"], full_best, full_final),
        "trial_records": [
            {
                "trial": r["trial"],
                "asha_epochs": r["progress"]["epoch"],
                "asha_val_accuracy": r["objective"],
                "full_val_accuracy": full_final.get(r["trial"]),
                "rungs": [
                    [d["epoch"], d["value"], d["decision"], bool(d.get("promoted"))]
                    for d in r["rungs"]
                ],
            }
            for r in sorted(a["leaderboard"], key=lambda r: r["trial"])
        ],
        "meets_accuracy": gap <= ACCURACY_POINTS + 1e-9,
        "meets_epochs": ratio <= EPOCHS_RATIO,
    }


def describe(went: dict) -> str:
    """One line: where the full run's best trial went in ASHA."""
    parts = []
    for d in went["rungs"]:
        rank = "-" if d["rank"] is None else f"{d['rank']} of {d['competitors']}"
        text = f"rung {d['rung']} (epoch {d['epoch']}) {d['decision']} at {rank}, keep {d['keep']}"
        if "promoted" in d:
            p = d["promoted"]
            text += f", promoted at {p['rank']} of {p['competitors']} (keep {p['keep']})"
        parts.append(text)
    end = went["at_the_end"]
    if end and went["rungs"] and went["rungs"][-1]["decision"] != "continue":
        parts.append(
            f"at the end {end['rank']} of {end['reached']} at rung {end['rung']} (keep "
            f"{end['keep']})"
        )
    accuracy = went["val_accuracy"]
    shown = "-" if accuracy is None else f"{accuracy:.4f}"
    return (
        f"full's best, trial {went['trial']}, in ASHA: {went['epochs_reached']} epochs, "
        f"val_accuracy {shown}; " + ("; ".join(parts) or "no rung")
    )


def core_seconds(stack, sweep: dict) -> float:
    """The trials of a finished sweep trained one after another in this process, as their
    stored specs say (``worker.setup.build_trainer``)."""
    from store import job_data
    from store.db import get_database
    from store.models import Job
    from worker.setup import build_trainer

    total = 0.0
    with get_database(stack.database_url).session() as session:
        trials = session.query(Job).filter_by(sweep_id=sweep["id"]).order_by(Job.trial).all()
        for job in trials:
            arrays = job_data.load_dataset_arrays(session, job.spec)
            trainer = build_trainer(job.spec, arrays)
            start = time.perf_counter()
            trainer.run()
            total += time.perf_counter() - start
    return total


# ------------------------------------------------------------------------------ continued job


def model_arrays(client, job_id: str) -> dict[str, np.ndarray]:
    response = client.get(f"/v1/jobs/{job_id}/model.npz")
    assert response.status_code == 200, response.text
    with np.load(io.BytesIO(response.content)) as npz:
        return {key: npz[key] for key in npz.files if key != "lineage"}  # ids and times


def metrics_rows(client, job_id: str) -> list[tuple]:
    response = client.get(f"/v1/jobs/{job_id}/metrics")
    assert response.status_code == 200, response.text
    return [tuple(m[k] for k in COMPARED) for m in response.json()["metrics"]]


def continued_jobs(stack, dataset_id: str) -> list[dict]:
    """For each of CONTINUED: a job of ``first`` epochs continued for ``more``, against one
    job of ``first + more`` epochs from the start (same seed); their models and metrics. A
    case that does not get that far is reported unequal, with why."""
    first, more = CONTINUED_EPOCHS
    worker = stack.start_worker("continue", concurrency=2)
    try:
        client = stack.client()
        found = []
        for what, options, rate in CONTINUED:
            spec = base_spec(dataset_id, epochs=first)
            spec["learning_rate"], spec["seed"] = rate, 2023
            spec["options"] = {**spec["options"], **options}
            case = {
                "what": what, "learning_rate": rate, "options": options,
                "first_epochs": first, "more_epochs": more,
                "weights_bitwise_equal": False, "metrics_rows_equal": False, "error": None,
            }  # fmt: skip
            try:
                case.update(continue_one(client, spec, first, more))
            except (AssertionError, TimeoutError) as error:
                case["error"] = str(error)[:500]
                log(f"continued job ({what}): {case['error']}")
            log(f"continued job ({what}): weights {case['weights_bitwise_equal']}, "
                f"metrics rows {case['metrics_rows_equal']}")  # fmt: skip
            found.append(case)
        return found
    finally:
        worker.stop()


def continue_one(client, spec: dict, first: int, more: int) -> dict:
    short = client.post("/v1/jobs", json=spec)
    whole = client.post("/v1/jobs", json={**spec, "epochs": first + more})
    assert short.status_code == whole.status_code == 202, short.text + whole.text
    short_id, whole_id = short.json()["id"], whole.json()["id"]
    done = wait_job(client, short_id, timeout=60)
    assert done["status"] == "succeeded", f"the first job ended {done['status']}"
    answer = client.post(f"/v1/jobs/{short_id}/continue", json={"epochs": more})
    assert answer.status_code == 202, answer.text
    child_id = answer.json()["id"]
    log(f"continued job {child_id} answered as {answer.json()['status']}")
    for job_id in (child_id, whole_id):
        done = wait_job(client, job_id, timeout=60)
        assert done["status"] == "succeeded", f"job {job_id} ended {done['status']}"
    ours, theirs = model_arrays(client, child_id), model_arrays(client, whole_id)
    weights = ours.keys() == theirs.keys() and all(
        ours[k].dtype == theirs[k].dtype and ours[k].tobytes() == theirs[k].tobytes() for k in ours
    )
    rows, long_rows = metrics_rows(client, child_id), metrics_rows(client, whole_id)
    return {
        "job": short_id, "continued": child_id, "long": whole_id,
        "weights_bitwise_equal": weights,
        "metrics_rows_equal": len(rows) == first + more and rows == long_rows,
        "rows": len(rows), "final_val_accuracy": rows[-1][4] if rows else None,
    }  # fmt: skip


# ------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", choices=("postgresql", "embedded"), default="postgresql")
    parser.add_argument("--trials", type=int, default=27)
    parser.add_argument(
        "--seeds", default="1,2,3,4,5,6,7,8,9,10",
        help=f"sweep seeds compared (seed {MAIN_SEED}'s figures come from the main run)",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, the median kept")
    parser.add_argument(
        "--stop-only", action="store_true", help="ASHA without promotions (trials stop)"
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.quick:
        args.trials, seeds, args.repeats = 6, [MAIN_SEED], 1
    others = [s for s in seeds if s != MAIN_SEED]
    asha_config = ASHA_STOP if args.stop_only else ASHA_PROMOTE
    kind = "stop-only" if args.stop_only else "with promotions"
    with tempfile.TemporaryDirectory(prefix="bpj-sweep-bench-") as root:
        stack = open_stack(args.stack, Path(root))
        with stack.cleanups:
            stack.worker.stop()  # each run starts its own
            inputs, targets = digits()
            client = stack.client()
            data = {"name": "digits", "inputs": npy(inputs), "targets": npy(targets)}
            stored = client.post("/v1/datasets", json=data)
            assert stored.status_code == 201, stored.text
            dataset_id = stored.json()["id"]
            continued = continued_jobs(stack, dataset_id)
            runs = {"asha-2": [], "asha-1": [], "full-2": [], "full-1": []}
            for _ in range(args.repeats):  # alternating, so a slow moment hits both sides
                for label, stopping, processes in (
                    ("asha-2", asha_config, 2), ("asha-1", asha_config, 1),
                    ("full-2", None, 2), ("full-1", None, 1),
                ):  # fmt: skip
                    body = sweep_body(dataset_id, args.trials, stopping, MAIN_SEED)
                    runs[label].append(run_sweep(stack, body, processes, label))
            asha, single = _median(runs["asha-2"]), _median(runs["asha-1"])
            full, full_single = _median(runs["full-2"]), _median(runs["full-1"])
            core = core_seconds(stack, full["sweep"])
            per_seed = {MAIN_SEED: compare(MAIN_SEED, asha, full)}
            if others:
                worker = stack.start_worker("sweep-seeds", concurrency=2)
                try:
                    for seed in others:
                        pair = [
                            run_sweep(
                                stack, sweep_body(dataset_id, args.trials, es, seed), None, label
                            )
                            for es, label in (
                                (asha_config, f"seed {seed} asha"), (None, f"seed {seed} full")
                            )
                        ]  # fmt: skip
                        per_seed[seed] = compare(seed, *pair)
                finally:
                    worker.stop()
    # every ASHA run of the main seed against the full run (its figures do not vary)
    main_runs = [
        {"processes": p, **{k: v for k, v in compare(MAIN_SEED, run, full).items()
                            if k in ("gap_points", "epochs_ratio", "promoted")}}
        for p, label in ((2, "asha-2"), (1, "asha-1")) for run in runs[label]
    ]  # fmt: skip
    rows = [per_seed[s] for s in sorted(per_seed)]
    gaps = [r["gap_points"] for r in rows]
    ratios = [r["epochs_ratio"] for r in rows]
    main = per_seed[MAIN_SEED]
    summary = {
        "seeds": [r["seed"] for r in rows],
        "within_accuracy": sum(r["meets_accuracy"] for r in rows),
        "within_epochs": sum(r["meets_epochs"] for r in rows),
        "worst_gap_points": max(gaps),
        "worst_gap_seed": rows[gaps.index(max(gaps))]["seed"],
        "median_gap_points": float(np.median(gaps)),
        "median_epochs_ratio": float(np.median(ratios)),
        "worst_epochs_ratio": max(ratios),
        "worst_ratio_seed": rows[ratios.index(max(ratios))]["seed"],
    }
    figures = {
        "stack": args.stack,
        "trials": args.trials,
        "asha": asha_config,
        "promotions": not args.stop_only,
        "same_configurations": main["same_configurations"],
        "asha_best_val_accuracy": main["asha_best_val_accuracy"],
        "full_best_val_accuracy": main["full_best_val_accuracy"],
        "accuracy_gap_points": main["gap_points"],
        "asha_epochs": main["asha_epochs"],
        "full_epochs": main["full_epochs"],
        "epochs_ratio": main["epochs_ratio"],
        "asha_stopped_early": main["stopped_early"],
        "asha_promoted": main["promoted"],
        "main_seed_runs": main_runs,
        "wall_asha_2_processes": asha["wall"],
        "wall_asha_1_process": single["wall"],
        "wall_ratio_2_to_1": asha["wall"] / single["wall"],
        "wall_runs": {label: [run["wall"] for run in found] for label, found in runs.items()},
        "wall_full_2_processes": full["wall"],
        "wall_full_1_process": full_single["wall"],
        "wall_ratio_full_2_to_1": full["wall"] / full_single["wall"],
        "training_seconds": {
            "asha_2": asha["trained"],
            "asha_1": single["trained"],
            "full_2": full["trained"],
            "full_1": full_single["trained"],
        },
        "core_seconds_full_trials_serial": core,
        "seeds": rows,
        "summary": summary,
        "continued": continued,
    }
    figures["meets_accuracy"] = all(r["meets_accuracy"] for r in rows)
    figures["meets_epochs"] = all(r["meets_epochs"] for r in rows)
    figures["meets_wall"] = figures["wall_ratio_2_to_1"] <= WALL_RATIO
    figures["continued_equal"] = all(
        c["weights_bitwise_equal"] and c["metrics_rows_equal"] for c in continued
    )
    verdict = {True: "pass", False: "FAIL"}
    print(
        f"""
sweep on digits ({args.stack}): {args.trials} random trials, max_parallel 4, ASHA {kind} (min_epochs 3, reduction_factor 3)
seed {MAIN_SEED} ({args.repeats} run{"s" if args.repeats != 1 else ""} of each, the median wall time kept):
  same configurations in both runs: {main["same_configurations"]}
  best val_accuracy  ASHA {main["asha_best_val_accuracy"]:.4f}   full {main["full_best_val_accuracy"]:.4f}   gap {main["gap_points"]:.2f} points (at most {ACCURACY_POINTS:g})
  epochs trained     ASHA {main["asha_epochs"]}   full {main["full_epochs"]}   ratio {main["epochs_ratio"]:.3f} (at most {EPOCHS_RATIO:.2f}); {main["promoted"]} trials promoted, {main["stopped_early"]} ended early
  every ASHA run     {", ".join(f"{r['processes']}p: gap {r['gap_points']:.2f} ratio {r['epochs_ratio']:.3f} promoted {r['promoted']}" for r in main_runs)}
  wall time          ASHA 2 processes {asha["wall"]:.1f} s   1 process {single["wall"]:.1f} s   ratio {figures["wall_ratio_2_to_1"]:.3f} (at most {WALL_RATIO}) {verdict[figures["meets_wall"]]}; run by run {", ".join(f"{two['wall'] / one['wall']:.2f}" for two, one in zip(runs["asha-2"], runs["asha-1"]))}
  full run           2 processes {full["wall"]:.1f} s   1 process {full_single["wall"]:.1f} s   ratio {figures["wall_ratio_full_2_to_1"]:.3f}
  training alone     (the trials' runtime_seconds) ASHA {single["trained"]:.2f} s in 1 process, {asha["trained"]:.2f} s in 2; full {full_single["trained"]:.2f} s in 1, {full["trained"]:.2f} s in 2
  core alone         the full run's {args.trials} trials one after another in this process: {core:.1f} s

ASHA {kind} against the full run, by sweep seed (2 processes; seed {MAIN_SEED}: the run above, others: one run each):
  seed   ASHA     full     gap (points)  epochs  ratio   promoted  accuracy  epochs"""  # noqa: E501
    )
    for r in rows:
        print(
            f"  {r['seed']:>4}   {r['asha_best_val_accuracy']:.4f}   {r['full_best_val_accuracy']:.4f}"  # noqa: E501
            f"   {r['gap_points']:6.2f}        {r['asha_epochs']:>3}/{r['full_epochs']:<3}"
            f" {r['epochs_ratio']:.3f}   {r['promoted']:>4}      {verdict[r['meets_accuracy']]:<8}"  # noqa: E501
            f"  {verdict[r['meets_epochs']]}"
        )
    print(
        f"  within {ACCURACY_POINTS:g} point: {summary['within_accuracy']} of {len(rows)} seeds; "
        f"at most {EPOCHS_RATIO:.2f} of the epochs: {summary['within_epochs']} of {len(rows)}; "
        f"worst gap {summary['worst_gap_points']:.2f} points (seed {summary['worst_gap_seed']}); "
        f"median ratio {summary['median_epochs_ratio']:.3f} "
        f"(worst {summary['worst_epochs_ratio']:.3f}, seed {summary['worst_ratio_seed']})"
    )
    for r in rows:
        mark = "" if r["meets_accuracy"] else "  <- misses the accuracy bound"
        print(f"    seed {r['seed']:>2}: {describe(r['full_best_in_asha'])}{mark}")
        end = r["full_best_in_asha"]["at_the_end"]
        if not r["meets_accuracy"] and end and end["ahead"]:
            print(
                f"             ahead of it at rung {end['rung']}: "
                + ", ".join(
                    f"trial {t['trial']} {t['value']:.4f} (full {_shown(t['full_val_accuracy'])})"
                    for t in end["ahead"]
                )
            )
    first, more = CONTINUED_EPOCHS
    print()
    for c in continued:
        print(
            f"  continued job == one long job: weights bitwise equal: "
            f"{c['weights_bitwise_equal']}, metrics rows equal: {c['metrics_rows_equal']}   "
            f"({c['what']} at rate {c['learning_rate']:g}: {first} epochs continued for {more}, "
            f"against {first + more} from the start"
            + (f"; {c['rows']} rows)" if c["error"] is None else f"; not compared: {c['error']})")
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=_plain))
    if args.quick:
        return 0 if figures["continued_equal"] else 1
    ok = figures["meets_accuracy"] and figures["meets_epochs"] and figures["continued_equal"]
    return 0 if ok else 1


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _plain(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"not JSON: {type(value)}")


if __name__ == "__main__":
    sys.exit(main())
