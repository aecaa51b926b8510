"""What a checkpoint costs: the time to write a trainer's state, as a share of its interval.

    python benchmarks/checkpoint_bench.py

A running job writes its full state (weights, generator, position) every CHECKPOINT_SECONDS,
so that a resumed job redoes at most that much work. This writes the state of networks from
the core benchmark's cases through ``store.progress.record_progress`` (the worker's own call),
on SQLite and on PostgreSQL (the machine's at 127.0.0.1:5432, else pgserver), best of 5,
and prints each write's time as a share of the default interval.
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

from backprop.settings import Settings  # noqa: E402
from cli.schema import migrate  # noqa: E402
from core import Network, Trainer, TrainingConfig  # noqa: E402
from store import jobs, leases, progress  # noqa: E402
from store.db import get_database  # noqa: E402
from tests.support import services  # noqa: E402
from tests.support.specs import inline_spec  # noqa: E402

STRUCTURES = ([64, 30, 10], [784, 100, 10], [784, 512, 512, 10])
SPEC = inline_spec(samples=2)


def held_job(db) -> str:
    with db.session() as s:
        job = jobs.create_job(
            s, db, tenant="bench", spec=SPEC, name=None, labels={}, chunk_bytes=2**20,
            arrays={"inputs": np.ones((2, 2)), "targets": np.ones((2, 2))},
        )  # fmt: skip
    with db.session() as s:
        leases.claim(s, db, job.id, "bench", lease_seconds=600, max_attempts=1, worker="bench")
    return job.id


def state_of(structure) -> dict:
    rng = np.random.RandomState(0)
    inputs = rng.rand(256, structure[0])
    targets = np.eye(structure[-1])[rng.randint(structure[-1], size=256)]
    config = TrainingConfig(epochs=1, learning_rate=0.1, batch_size=64)
    trainer = Trainer(Network(structure, rng=0), inputs, targets, config)
    trainer.run()
    return trainer.state_dict()


def main() -> None:
    interval = Settings().checkpoint_seconds
    admin, private = services.postgres_admin_url(Path(tempfile.mkdtemp()))
    urls = {
        "sqlite": f"sqlite:///{tempfile.mkdtemp()}/bench-{uuid.uuid4().hex[:6]}.sqlite3",
        "postgresql": services.sqlalchemy_url(services.create_database(admin, "bpj_bench")),
    }
    print(f"| database | network | state | write | share of {interval:g} s |")
    print("|---|---|---|---|---|")
    try:
        for kind, url in urls.items():
            migrate(url)
            db = get_database(url)
            job_id = held_job(db)
            for structure in STRUCTURES:
                state = state_of(structure)
                best = float("inf")
                for _ in range(5):
                    started = time.perf_counter()
                    with db.session() as s:
                        progress.record_progress(
                            s, db, job_id, "bench", metrics=[], runtime_seconds=1.0,
                            checkpoint=state, chunk_bytes=2**20, worker="bench",
                        )  # fmt: skip
                    best = min(best, time.perf_counter() - started)
                mib = sum(a.nbytes for a in state.values()) / 2**20
                print(
                    f"| {kind} | {'-'.join(map(str, structure))} | {mib:.1f} MiB | "
                    f"{best * 1e3:.0f} ms | {best / interval:.2%} |"
                )
            db.engine.dispose()
    finally:
        services.drop_database(admin, urls["postgresql"].replace("+psycopg", ""))
        if private is not None:
            private.cleanup()


if __name__ == "__main__":
    main()
