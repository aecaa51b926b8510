"""A chaos soak, bounded in time: jobs keep running while their processes are SIGKILLed.

One worker with two training processes trains 60 jobs (tiny, XOR and longer ones) while
training processes (their parent sees them die) and whole workers (nobody is left to tell;
the lease expires) are SIGKILLed again and again. Every job must end succeeded with exactly
the weights of an uninterrupted run in this process, no job may be trained twice at once,
and the figures of the run are printed at the end of the test session: the worst and the
mean time from a training process's death to its job's next claim, task messages sent per
job, and how long the worker was down.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime

import numpy as np
import psutil

from store.db import get_database
from store.models import Job, JobEvent

from .conftest import REPORT, audit, injected, long_job, model_weights, reference_weights

TINY = {
    "structure": [3, 2, 2],
    "epochs": 1,
    "learning_rate": 1.0,
    "data": {"inputs": [[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]], "targets": [[1, 0], [0, 1]]},
}
XOR = {
    "structure": [2, 4, 1],
    "epochs": 300,
    "learning_rate": 3.0,
    "data": {
        "inputs": [[0, 0], [0, 1], [1, 0], [1, 1]],
        "targets": [[0], [1], [1], [0]],
        "batch_size": 2,
    },
}
FAULT_SECONDS, MOST_SECONDS = 30, 240
WANT_A_MESSAGE = ("queued", "lease_expired", "worker_lost", "dispatch_failed", "deferred")


def held_by(database_url: str, pid: int) -> str | None:
    """The job whose lease the training process ``pid`` holds, if any."""
    with get_database(database_url).session() as session:
        for job in session.query(Job).filter(Job.status == "running"):
            if job.lease_owner and job.lease_owner.split("#")[0].endswith(f":{pid}"):
                return job.id
    return None


def next_claim_after(database_url: str, job_id: str, moment: datetime) -> datetime | None:
    with get_database(database_url).session() as session:
        claims = session.query(JobEvent).filter(
            JobEvent.job_id == job_id, JobEvent.kind == "claimed", JobEvent.at > moment
        )
        first = claims.order_by(JobEvent.at).first()
        return first.at if first else None


def ended_before(database_url: str, job_id: str, moment: datetime) -> bool:
    with get_database(database_url).session() as session:
        ends = session.query(JobEvent).filter(
            JobEvent.job_id == job_id, JobEvent.kind == "succeeded", JobEvent.at <= moment
        )
        return ends.first() is not None


def test_sixty_jobs_survive_repeated_sigkills_bit_for_bit(make_stack, fault_db):
    # a lease of 4 s: a killed worker (nobody left to tell) costs at most that plus a beat
    stack = make_stack(fault_db, lease_seconds=4, heartbeat_seconds=0.3, worker_concurrency=2)
    client = stack.api()
    stack.beat()
    stack.control()
    worker = stack.worker("soak-0")
    rng = random.Random(7)
    kinds = [TINY, XOR, None, None]  # half of them long enough to be caught by a kill
    specs = [
        dict(kinds[i % 4], seed=i) if kinds[i % 4] else long_job(epochs=6, samples=2500, seed=i)
        for i in range(60)
    ]
    ids = [client.submit(spec)["id"] for spec in specs]

    child_kills, worker_kills, down, worker_killed_at = [], 0, 0.0, []
    started = time.monotonic()
    while time.monotonic() - started < FAULT_SECONDS:
        time.sleep(rng.uniform(0.8, 2.0))
        if all(client.job(i)["status"] == "succeeded" for i in ids[-5:]):
            break  # the work ran out before the faults did
        if rng.random() < 0.8:  # a training process dies; its parent lives and tells
            children = psutil.Process(worker.process.pid).children()
            if not children:
                continue
            child = rng.choice(children)
            job_id = held_by(fault_db, child.pid)
            moment = datetime.now(UTC)
            child.kill()
            injected()
            if job_id:
                child_kills.append((job_id, moment))
        else:  # the whole worker dies with its processes: the lease has to expire
            worker_killed_at.append(datetime.now(UTC))
            worker.kill()
            injected()
            killed = time.monotonic()
            worker = stack.worker(f"soak-{worker_kills + 1}")
            down += time.monotonic() - killed
            worker_kills += 1

    deadline = time.monotonic() + MOST_SECONDS
    for job_id in ids:
        done = client.wait(job_id, timeout=max(1.0, deadline - time.monotonic()))
        assert done["status"] == "succeeded", done
    for job_id in ids:
        for got, want in zip(model_weights(client, job_id), reference_weights(fault_db, job_id)):
            assert np.array_equal(got, want), f"{job_id} differs from an uninterrupted run"

    waits, waits_past_a_worker_kill = [], []
    for job_id, moment in child_kills:
        claimed = next_claim_after(fault_db, job_id, moment)
        if claimed is None and ended_before(fault_db, job_id, moment):
            continue  # it ended between the look-up and the kill: its process had moved on
        assert claimed is not None, f"{job_id} was never claimed again after its kill"
        wait = (claimed - moment).total_seconds()
        # the whole worker killed before it sent the job again: nobody is left to tell, so
        # the lease has to expire (and the next worker to start) as after a worker's kill
        if any(moment < killed < claimed for killed in worker_killed_at):
            waits_past_a_worker_kill.append(wait)
        else:
            waits.append(wait)
    dispatches = needless = 0
    example = None
    with get_database(fault_db).session() as session:
        for job_id in ids:
            events = session.query(JobEvent).filter(JobEvent.job_id == job_id)
            # a message is needed at submit, after a lease expired or a worker was lost, after
            # a failed send, or after a claim deferred the job for the tenant's running limit
            # (which counts the leases of killed workers until they expire);
            # a re-send with none of those before it went to a job whose message waited, or
            # whose message a killed worker took with it
            needed = False
            for e in events.order_by(JobEvent.id):
                if e.kind in WANT_A_MESSAGE:
                    needed = True
                elif e.kind == "dispatched":
                    dispatches += 1
                    if not needed:
                        needless += 1
                        example = example or [x.kind for x in events.order_by(JobEvent.id)]
                    needed = False
    REPORT["soak"] = {
        "jobs": len(ids),
        "training_processes_killed": len(child_kills),
        "workers_killed": worker_kills,
        "worst_kill_to_claim_s": round(max(waits), 2) if waits else None,
        "worst_past_a_worker_kill_s": (
            round(max(waits_past_a_worker_kill), 2) if waits_past_a_worker_kill else None
        ),
        "mean_kill_to_claim_s": round(sum(waits) / len(waits), 2) if waits else None,
        "dispatches_per_job": round(dispatches / len(ids), 2),
        "needless_resends": needless,
        "worker_down_s": round(down, 2),
    }
    assert waits, "no training process was killed while holding a job"
    assert max(waits) < 10, REPORT["soak"]  # LEASE_SECONDS (4) is not what brought them back
    # past a worker's kill: its lease's expiry, the reconciler's round and a worker's start
    assert max(waits_past_a_worker_kill, default=0) < 60, REPORT["soak"]
    # a worker killed between taking a message and claiming its job takes the message with
    # it (Redis gives it back only after VISIBILITY_TIMEOUT), so that job needs a new one;
    # each killed worker holds at most one message per training process
    assert needless <= 2 * worker_kills, (REPORT["soak"], example)
    audit(fault_db, ids)
