"""The reconciler on a real database and a real Redis: it re-sends only what is missing."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import numpy as np
import pytest
import redis
from sqlalchemy import update

from backprop.settings import Settings
from messaging.celery_app import DELIVER_SWEEP_TASK, DELIVER_TASK
from messaging.dispatch import MARKER, Dispatcher
from service.callbacks import queue_job_callbacks
from store import callbacks, jobs
from store.db import get_database
from store.models import Job, Sweep, utcnow
from tests.support.specs import inline_spec
from worker import webhooks
from worker.reconciler import reconcile

SPEC = inline_spec([2, 1])


@pytest.fixture
def setup(database_url, redis_url):
    queue = f"reconcile-test-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        database_url=database_url, redis_url=redis_url, training_queue=queue,
        control_queue=f"{queue}-control", requeue_after_seconds=1,
    )  # fmt: skip
    dispatcher = Dispatcher(settings)
    yield get_database(database_url), settings, dispatcher
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{queue}*"):
        client.delete(key)


def submit_and_send(db, dispatcher, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        with db.session() as s:
            job = jobs.create_job(
                s, db, tenant=f"r-{uuid.uuid4().hex[:6]}", spec=SPEC, name=None, labels={},
                arrays={"inputs": np.zeros((1, 2)), "targets": np.ones((1, 1))},
                chunk_bytes=1024, dispatching=True,
            )  # fmt: skip
        dispatcher.send(job.id)
        ids.append(job.id)
    with db.session() as s:  # sent an hour ago: long past REQUEUE_AFTER_SECONDS
        s.execute(
            update(Job).where(Job.id.in_(ids)).values(dispatched_at=utcnow() - timedelta(hours=1))
        )
    return ids


def dispatch_counts(db, ids) -> list[int]:
    with db.session() as s:
        return [s.get(Job, job_id).dispatch_count for job_id in ids]


def test_jobs_that_merely_wait_are_not_sent_again(setup):
    db, settings, dispatcher = setup
    ids = submit_and_send(db, dispatcher, 5)
    for _ in range(3):  # (other tests' jobs in this database may be sent: ours are not)
        report = reconcile(db, settings, dispatcher)
        assert report.waiting >= 5
    assert dispatch_counts(db, ids) == [1] * 5
    assert set(dispatcher.waiting(ids)) == set(ids)


def test_jobs_whose_messages_are_gone_are_sent_again(setup):
    db, settings, dispatcher = setup
    ids = submit_and_send(db, dispatcher, 4)
    client = redis.Redis.from_url(settings.redis_url)
    for job_id in ids:  # what a Redis restarted empty, or a FLUSHALL, leaves: neither
        client.delete(MARKER + job_id)
    for key in client.scan_iter(f"{settings.training_queue}*"):
        client.delete(key)
    report = reconcile(db, settings, dispatcher)
    assert report.sent >= 4
    assert dispatch_counts(db, ids) == [2] * 4
    assert set(dispatcher.waiting(ids)) == set(ids)  # and they are marked as waiting again


def test_a_taken_message_clears_its_marker(setup):
    _, _, dispatcher = setup
    job_id = str(uuid.uuid4())
    dispatcher.send(job_id)
    assert set(dispatcher.waiting([job_id])) == {job_id}
    dispatcher.taken(job_id)
    assert dispatcher.waiting([job_id]) == {}


def test_jobs_whose_message_went_with_a_dead_worker_are_sent_again(setup):
    # a worker killed between taking a message off the queue and recording it as fetched
    # leaves the marker and no message anywhere: nobody would ever deliver it
    db, settings, dispatcher = setup
    ids = submit_and_send(db, dispatcher, 3)
    client = redis.Redis.from_url(settings.redis_url)
    for key in client.scan_iter(f"{settings.training_queue}*"):
        client.delete(key)
    assert set(dispatcher.waiting(ids)) == set(ids)
    report = reconcile(db, settings, dispatcher)
    assert report.stranded >= 3
    assert dispatch_counts(db, ids) == [2] * 3
    assert set(dispatcher.waiting(ids)) == set(ids)  # the new messages wait in the queue
    reconcile(db, settings, dispatcher)
    assert dispatch_counts(db, ids) == [2] * 3  # and are found there: not sent a third time


def test_the_queue_is_read_from_its_oldest_message_until_every_one_asked_about_is_found(
    setup, monkeypatch
):
    db, settings, dispatcher = setup
    monkeypatch.setattr("messaging.dispatch.SCAN_CHUNK", 2)
    ids = submit_and_send(db, dispatcher, 7)  # four chunks of two
    marked = dispatcher.waiting(ids)
    assert dispatcher._queued(set(marked.values())) == set(marked.values())
    assert dispatcher.stranded(marked, settings.requeue_after_seconds) == set()
    assert dispatcher._queued({"not-a-message-id"}) == set()


def ended_sweep(db, status: str, *, running_trial: bool = False) -> str:
    """A sweep row that ended with its callback waiting (the broker was away when it ended),
    and a trial still running if asked (a cancelled sweep's trial not stopped yet)."""
    now = utcnow()
    sweep_id = str(uuid.uuid4())
    with db.session() as s:
        s.add(
            Sweep(
                id=sweep_id, tenant=f"r-{uuid.uuid4().hex[:6]}", name=None, labels={},
                spec={"callback_url": "http://127.0.0.1:9/hook"}, status=status, trials=1,
                max_parallel=1, released=1, created_at=now, updated_at=now, finished_at=now,
                callback_state=callbacks.WAITING, callbacks=[],
            )
        )  # fmt: skip
        if running_trial:
            job = jobs.create_job(
                s, db, tenant="r-trial", spec=SPEC, name=None, labels={},
                arrays={"inputs": np.zeros((1, 2)), "targets": np.ones((1, 1))},
                chunk_bytes=1024,
            )  # fmt: skip
            s.execute(
                update(Job).where(Job.id == job.id).values(sweep_id=sweep_id, status="running")
            )
    return sweep_id


def callback_state(db, sweep_id: str) -> str:
    with db.session() as s:
        return s.get(Sweep, sweep_id).callback_state


def test_an_ended_sweep_s_waiting_callback_is_queued_once_and_not_before_its_trials_stop(setup):
    db, settings, dispatcher = setup
    ended = ended_sweep(db, "succeeded")
    stopping = ended_sweep(db, "cancelled", running_trial=True)
    report = reconcile(db, settings, dispatcher)
    assert report.sweep_callbacks >= 1
    assert callback_state(db, ended) == callbacks.QUEUED
    assert callback_state(db, stopping) == callbacks.WAITING  # its trial still runs
    client = redis.Redis.from_url(settings.redis_url)
    queued = [json.loads(m) for m in client.lrange(settings.callbacks_queue, 0, -1)]
    ours = [m["headers"] for m in queued if ended in m["headers"]["argsrepr"]]
    assert len(ours) == 1 and ours[0]["task"] == DELIVER_SWEEP_TASK
    reconcile(db, settings, dispatcher)  # taken once: not queued again
    queued = client.lrange(settings.callbacks_queue, 0, -1)
    assert sum(ended.encode() in m for m in queued) == 1
    with db.session() as s:  # once its trial stopped, the cancelled sweep's turn comes
        s.execute(update(Job).where(Job.sweep_id == stopping).values(status="cancelled"))
    reconcile(db, settings, dispatcher)
    assert callback_state(db, stopping) == callbacks.QUEUED


def test_a_sweep_callback_queued_long_ago_with_no_attempt_is_queued_again(setup):
    db, settings, dispatcher = setup
    lost = ended_sweep(db, "succeeded")
    fresh = ended_sweep(db, "succeeded")
    reconcile(db, settings, dispatcher)
    assert callback_state(db, lost) == callback_state(db, fresh) == callbacks.QUEUED
    client = redis.Redis.from_url(settings.redis_url)
    client.delete(settings.callbacks_queue)  # both tasks lost, as with a broker restarted empty
    with db.session() as s:  # one was queued long ago and never attempted
        s.execute(
            update(Sweep).where(Sweep.id == lost).values(callback_at=utcnow() - timedelta(hours=1))
        )
    reconcile(db, settings, dispatcher)
    queued = client.lrange(settings.callbacks_queue, 0, -1)
    assert [sum(i.encode() in m for m in queued) for i in (lost, fresh)] == [1, 0]


def job_with_callback(db, status: str) -> str:
    """A job with a callback_url, moved to ``status`` as a worker would, its callback not
    queued (the broker was away, or the worker died, when it ended)."""
    spec = inline_spec([2, 1], callback_url="http://127.0.0.1:9/hook")
    with db.session() as s:
        job = jobs.create_job(
            s, db, tenant=f"r-{uuid.uuid4().hex[:6]}", spec=spec, name=None, labels={},
            arrays={"inputs": np.zeros((1, 2)), "targets": np.ones((1, 1))}, chunk_bytes=1024,
        )  # fmt: skip
        job_id = job.id
        s.execute(update(Job).where(Job.id == job_id).values(status=status))
    return job_id


def job_callback_state(db, job_id: str) -> str | None:
    with db.session() as s:
        return s.get(Job, job_id).callback_state


def test_an_ended_job_s_waiting_callback_is_queued_once_and_not_before_it_ends(setup):
    db, settings, dispatcher = setup
    ended = job_with_callback(db, "failed")
    running = job_with_callback(db, "running")
    assert job_callback_state(db, ended) == callbacks.WAITING
    report = reconcile(db, settings, dispatcher)
    assert report.job_callbacks >= 1
    assert job_callback_state(db, ended) == callbacks.QUEUED
    assert job_callback_state(db, running) == callbacks.WAITING
    client = redis.Redis.from_url(settings.redis_url)
    queued = [json.loads(m) for m in client.lrange(settings.callbacks_queue, 0, -1)]
    ours = [m["headers"] for m in queued if ended in m["headers"]["argsrepr"]]
    assert len(ours) == 1 and ours[0]["task"] == DELIVER_TASK
    reconcile(db, settings, dispatcher)  # taken once: not queued again
    queued = client.lrange(settings.callbacks_queue, 0, -1)
    assert sum(ended.encode() in m for m in queued) == 1
    assert not any(running.encode() in m for m in queued)
    with db.session() as s:
        s.execute(update(Job).where(Job.id == running).values(status="succeeded"))
    reconcile(db, settings, dispatcher)
    assert job_callback_state(db, running) == callbacks.QUEUED


def test_a_job_callback_queued_long_ago_with_no_attempt_is_queued_again(setup):
    db, settings, dispatcher = setup
    lost, fresh = job_with_callback(db, "succeeded"), job_with_callback(db, "cancelled")
    reconcile(db, settings, dispatcher)
    client = redis.Redis.from_url(settings.redis_url)
    client.delete(settings.callbacks_queue)  # both tasks lost, as with a broker restarted empty
    with db.session() as s:
        s.execute(
            update(Job).where(Job.id == lost).values(callback_at=utcnow() - timedelta(hours=1))
        )
    reconcile(db, settings, dispatcher)
    queued = client.lrange(settings.callbacks_queue, 0, -1)
    assert [sum(i.encode() in m for m in queued) for i in (lost, fresh)] == [1, 0]


def test_a_job_callback_the_broker_did_not_take_waits_for_the_next_round(setup):
    db, settings, dispatcher = setup
    ended = job_with_callback(db, "succeeded")
    away = Dispatcher(settings.model_copy(update={"redis_url": "redis://127.0.0.1:9/0"}))
    assert queue_job_callbacks(db, away, [ended]) == 0
    assert job_callback_state(db, ended) == callbacks.WAITING
    assert queue_job_callbacks(db, dispatcher, [ended]) == 1
    assert job_callback_state(db, ended) == callbacks.QUEUED


def test_a_delivery_queued_before_callbacks_were_kept_on_the_job_still_goes(setup):
    db, settings, _ = setup
    legacy = job_with_callback(db, "succeeded")
    with db.session() as s:  # as migration 0010 left an ended job
        s.execute(update(Job).where(Job.id == legacy).values(callback_state=None))
    once = settings.model_copy(
        update={"webhook_attempts": 1, "callback_allow_private_networks": True}
    )
    assert webhooks.deliver(db, once, legacy, 1)  # port 9 refuses: the one attempt fails
    assert job_callback_state(db, legacy) == callbacks.FAILED
    with db.session() as s:
        kinds = [e.kind for e in jobs.events(s, legacy)]
    assert kinds.count("callback") == 1


def test_a_late_failed_attempt_does_not_undo_a_delivery(setup):
    db, _, _ = setup
    job_id = job_with_callback(db, "succeeded")
    with db.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(callback_state=callbacks.DELIVERED))
    with db.session() as s:  # a second chain's last attempt, sent before the first delivered
        jobs.record_callback(s, db, job_id, "attempt 6: no answer", delivered=False, last=True)
    assert job_callback_state(db, job_id) == callbacks.DELIVERED
