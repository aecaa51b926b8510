"""A sweep on digits: ASHA against running every trial to completion, and 2 worker processes
against 1.

    python benchmarks/sweep_bench.py [--stack postgresql|embedded] [--trials 27]
                                     [--seeds 1,2,...] [--quick] [--json PATH]

The real service as processes (``open_stack`` of ``benchmarks/service_bench.py``: gunicorn,
a Celery worker, Redis, a fresh database) and scikit-learn's 8x8 digits (1,797 samples,
inputs / 16, one-hot targets) stored as a data set. The sweep is the one of the README: a
64-30-10 base of 30 epochs at rate 3.0 on mini-batches of 10 with a validation split of 0.2,
searching learning_rate (log-uniform 0.05 to 10), structure[1] (16, 32, 64, 128), options.l2
(uniform 0 to 0.001) and data.batch_size (10, 32); random sampling with seed 7, 27 trials,
objective val_accuracy, at most 4 trials at once. Each run gets a fresh worker:

- ASHA (min_epochs 3, reduction_factor 3: rungs at epochs 3, 9 and 27) with 2 processes;
- the same trials without early stopping, 2 processes (the baseline of accuracy and epochs);
- ASHA with 1 process (the baseline of wall time), and the full run with 1 process.

Each of the four runs ``--repeats`` times (3), alternating; the run of median wall time is
the one reported. ASHA's decisions depend on the order in which trials reach a rung, so its
epochs vary a little from run to run with 2 processes.

The trials' values depend on the seed alone, so both runs train the same 27 configurations.
Printed: the best val_accuracy of each run and their difference (ASHA must be within 1
point), the epochs trained and their ratio (ASHA at most 0.40 of the full run's), and the
sweeps' wall times (first trial created to the sweep's end, from the database's clock) with
their ratio (2 processes at most 0.6 of 1). The core's own time for the full run's 27
trials, one after another in this process, is printed beside them.

One seed is one draw of 27 configurations: ``--seeds`` (1 to 10 but 7 by default) repeats
ASHA against the full run for other sweep seeds, on one 2-process worker, and prints how
often ASHA came within 1 point and the median gap and epoch ratio. ``--quick`` (6 trials,
no other seeds) only shows that the script works.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from service_bench import log, moment, npy, open_stack  # noqa: E402

SEARCH = {
    "learning_rate": {"log_uniform": [0.05, 10]},
    "structure[1]": {"choice": [16, 32, 64, 128]},
    "options.l2": {"uniform": [0, 0.001]},
    "data.batch_size": {"choice": [10, 32]},
}
ASHA = {"method": "asha", "min_epochs": 3, "reduction_factor": 3}


def sweep_body(dataset_id: str, trials: int, early_stopping: dict | None, seed: int = 7) -> dict:
    body = {
        "name": "digits-width-rate",
        "base": {
            "structure": [64, 30, 10],
            "epochs": 30,
            "learning_rate": 3.0,
            "data": {"dataset_id": dataset_id, "batch_size": 10},
            "options": {"validation_split": 0.2},
        },
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


def warm_up(client, dataset_id: str, processes: int) -> None:
    """One short job per training process first (connections, caches, BLAS): the sweeps are
    timed on warm processes, whatever their number."""
    job = {
        "structure": [64, 30, 10],
        "epochs": 20,
        "learning_rate": 3.0,
        "data": {"dataset_id": dataset_id, "batch_size": 10},
    }
    ids = [client.post("/v1/jobs", json=job).json()["id"] for _ in range(processes)]
    for job_id in ids:
        while client.get(f"/v1/jobs/{job_id}").json()["status"] not in ("succeeded", "failed"):
            time.sleep(0.05)


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
            f"best val_accuracy {sweep['best']['objective']:.4f}")  # fmt: skip
        return {"sweep": sweep, "wall": wall, "held": held, "trained": trained}
    finally:
        if worker is not None:
            worker.stop()


def _median(runs: list[dict]) -> dict:
    """The run of median wall time."""
    return sorted(runs, key=lambda run: run["wall"])[len(runs) // 2]


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", choices=("postgresql", "embedded"), default="postgresql")
    parser.add_argument("--trials", type=int, default=27)
    parser.add_argument("--seeds", default="1,2,3,4,5,6,8,9,10", help="other sweep seeds")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, the median kept")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.quick:
        args.trials, seeds, args.repeats = 6, [], 1
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
            runs = {"asha-2": [], "asha-1": [], "full-2": [], "full-1": []}
            for _ in range(args.repeats):  # alternating, so a slow moment hits both sides
                for label, stopping, processes in (
                    ("asha-2", ASHA, 2), ("asha-1", ASHA, 1),
                    ("full-2", None, 2), ("full-1", None, 1),
                ):  # fmt: skip
                    body = sweep_body(dataset_id, args.trials, stopping)
                    runs[label].append(run_sweep(stack, body, processes, label))
            asha, single = _median(runs["asha-2"]), _median(runs["asha-1"])
            full, full_single = _median(runs["full-2"]), _median(runs["full-1"])
            core = core_seconds(stack, full["sweep"])
            others = []
            if seeds:
                stack.start_worker("sweep-seeds", concurrency=2)
            for seed in seeds:
                pair = [
                    run_sweep(stack, sweep_body(dataset_id, args.trials, es, seed), None, label)
                    for es, label in ((ASHA, f"seed {seed} asha"), (None, f"seed {seed} full"))
                ]
                others.append((seed, *(run["sweep"] for run in pair)))
    a, f = asha["sweep"], full["sweep"]
    same = [r["params"] for r in sorted(a["leaderboard"], key=lambda r: r["trial"])] == [
        r["params"] for r in sorted(f["leaderboard"], key=lambda r: r["trial"])
    ]
    figures = {
        "stack": args.stack,
        "trials": args.trials,
        "same_configurations": same,
        "asha_best_val_accuracy": a["best"]["objective"],
        "full_best_val_accuracy": f["best"]["objective"],
        "accuracy_gap_points": 100 * (f["best"]["objective"] - a["best"]["objective"]),
        "asha_epochs": a["epochs"]["run"],
        "full_epochs": f["epochs"]["run"],
        "epochs_ratio": a["epochs"]["run"] / f["epochs"]["run"],
        "asha_stopped_early": sum(r["stopped_early"] for r in a["leaderboard"]),
        "wall_asha_2_processes": asha["wall"],
        "wall_asha_1_process": single["wall"],
        "wall_ratio_2_to_1": asha["wall"] / single["wall"],
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
    }
    gaps = [100 * (f2["best"]["objective"] - a2["best"]["objective"]) for _, a2, f2 in others]
    ratios = [a2["epochs"]["run"] / f2["epochs"]["run"] for _, a2, f2 in others]
    figures["other_seeds"] = [
        {"seed": seed, "gap_points": gap, "epochs_ratio": ratio}
        for (seed, *_), gap, ratio in zip(others, gaps, ratios)
    ]
    figures["meets_accuracy"] = figures["accuracy_gap_points"] <= 1.0
    figures["meets_epochs"] = figures["epochs_ratio"] <= 0.40
    figures["meets_wall"] = figures["wall_ratio_2_to_1"] <= 0.6
    print(
        f"""
sweep on digits ({args.stack}): {args.trials} random trials (seed 7), max_parallel 4
  same configurations in both runs: {same}
  best val_accuracy  ASHA {figures["asha_best_val_accuracy"]:.4f}   full {figures["full_best_val_accuracy"]:.4f}   gap {figures["accuracy_gap_points"]:.2f} points (at most 1)
  epochs trained     ASHA {figures["asha_epochs"]}   full {figures["full_epochs"]}   ratio {figures["epochs_ratio"]:.3f} (at most 0.40); {figures["asha_stopped_early"]} trials stopped early
  wall time          ASHA 2 processes {figures["wall_asha_2_processes"]:.1f} s   1 process {figures["wall_asha_1_process"]:.1f} s   ratio {figures["wall_ratio_2_to_1"]:.2f} (at most 0.6)
  full run           2 processes {figures["wall_full_2_processes"]:.1f} s   1 process {figures["wall_full_1_process"]:.1f} s   ratio {figures["wall_ratio_full_2_to_1"]:.2f}
  training alone     (the trials' runtime_seconds) ASHA {single["trained"]:.2f} s in 1 process, {asha["trained"]:.2f} s in 2; full {full_single["trained"]:.2f} s in 1, {full["trained"]:.2f} s in 2
  core alone         the full run's {args.trials} trials one after another in this process: {core:.1f} s
"""  # noqa: E501
    )
    if others:
        within = sum(gap <= 1.0 for gap in gaps)
        print(
            f"  other seeds ({', '.join(str(s) for s, *_ in others)}): ASHA within 1 point in "
            f"{within} of {len(others)}; gap median {np.median(gaps):.2f}, worst {max(gaps):.2f} "
            f"points; epochs ratio median {np.median(ratios):.3f}, worst {max(ratios):.3f}"
        )
        for (seed, *_), gap, ratio in zip(others, gaps, ratios):
            print(f"    seed {seed:>2}: gap {gap:5.2f} points, epochs ratio {ratio:.3f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if figures["meets_accuracy"] and figures["meets_epochs"] else 1


if __name__ == "__main__":
    sys.exit(main())
