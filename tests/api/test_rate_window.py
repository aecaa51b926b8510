"""The rate limiter's one-trip sliding window (api.rate_window) against limits' own, on a real
Redis: the same decisions and the same headers' figures, with one round trip per request."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from limits import parse
from limits.storage import storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from api.rate_window import OneTripSlidingWindow


@pytest.fixture
def storage(redis_url):
    return storage_from_string(redis_url)


def test_one_trip_decides_and_counts_as_the_stock_strategy(storage):
    item = parse("5/minute")
    ours, stock = OneTripSlidingWindow(storage), SlidingWindowCounterRateLimiter(storage)
    mine, theirs = uuid.uuid4().hex, uuid.uuid4().hex
    for _ in range(8):  # past the limit: refused hits are not counted by either
        assert ours.hit(item, mine) == stock.hit(item, theirs)
        seen, fresh = ours.get_window_stats(item, mine), stock.get_window_stats(item, theirs)
        assert seen.remaining == fresh.remaining
        # a window resets within the minute (limits' own figure says "now" when its TTL is
        # read in the millisecond it was set: compared modulo the window)
        assert time.time() < seen.reset_time <= time.time() + 60
        apart = abs(seen.reset_time - fresh.reset_time) % 60
        assert min(apart, 60 - apart) < 1.0
    assert ours.test(item, mine) is False
    assert [ours.hit(item, mine, cost=0)] == [stock.hit(item, theirs, cost=0)]


def test_the_window_a_hit_saw_serves_the_headers_without_a_second_trip(storage, monkeypatch):
    item = parse("100/minute")
    ours = OneTripSlidingWindow(storage)
    reads = []
    real = storage.get_sliding_window
    monkeypatch.setattr(
        storage, "get_sliding_window", lambda *a: reads.append(a) or real(*a), raising=True
    )
    key = uuid.uuid4().hex
    for remaining in (99, 98, 97):
        assert ours.hit(item, key)
        assert ours.get_window_stats(item, key).remaining == remaining
    assert reads == []  # every window came with its hit
    # read a second time, or from a thread that did not hit: the storage is asked
    assert ours.get_window_stats(item, key).remaining == 97
    other = []
    thread = threading.Thread(target=lambda: other.append(ours.get_window_stats(item, key)))
    thread.start()
    thread.join()
    assert other[0].remaining == 97 and len(reads) == 2
    # another key's window is never served from this one's hit
    assert ours.hit(item, key)
    assert ours.get_window_stats(item, uuid.uuid4().hex).remaining == 100
