"""The rate limiter's sliding-window counter in one Redis round trip per request.

flask-limiter counts a request (``hit``) before the view and reads the window for the
X-RateLimit-* headers (``get_window_stats``) after it: two Lua scripts, two round trips.
``OneTripSlidingWindow`` counts with a script that also returns the window as it left it,
and keeps that window for the same thread's next ``get_window_stats`` of the same key, so
the headers cost no second trip. Any other read (``test``, a window nobody hit in this
thread just now, the in-memory fallback storage) goes to the storage as before.
The reason to change is how the limiter talks to its storage.
"""

from __future__ import annotations

import threading
import time
from math import floor, inf

from limits import RateLimitItem
from limits.storage import RedisStorage
from limits.strategies import STRATEGIES, SlidingWindowCounterRateLimiter
from limits.util import WindowStats

NAME = "sliding-window-counter-one-trip"

#: the window a hit saw is used for headers within this many seconds, in the same thread
FRESH_SECONDS = 1.0

# limits' acquire script, returning the counts and TTLs it leaves (milliseconds) besides
# whether the hit was counted
ACQUIRE_AND_READ = """
local limit = tonumber(ARGV[1])
local expiry = tonumber(ARGV[2]) * 1000
local amount = tonumber(ARGV[3])
local current_ttl = tonumber(redis.call('pttl', KEYS[2]))
if current_ttl > 0 and current_ttl < expiry then
    redis.call('rename', KEYS[2], KEYS[1])
    redis.call('set', KEYS[2], 0, 'PX', current_ttl + expiry)
end
local previous_count = tonumber(redis.call('get', KEYS[1])) or 0
local previous_ttl = tonumber(redis.call('pttl', KEYS[1])) or 0
local current_count = tonumber(redis.call('get', KEYS[2])) or 0
current_ttl = tonumber(redis.call('pttl', KEYS[2])) or 0
if previous_ttl < 0 then previous_ttl = 0 end
if current_ttl < 0 then current_ttl = 0 end
local weighted = math.floor(previous_count * previous_ttl / expiry) + current_count
if amount > limit or weighted + amount > limit then
    return {0, previous_count, previous_ttl, current_count, current_ttl}
end
if redis.call('exists', KEYS[2]) == 1 then
    current_count = redis.call('incrby', KEYS[2], amount)
else
    redis.call('set', KEYS[2], amount, 'PX', expiry * 2)
    current_count = amount
end
current_ttl = tonumber(redis.call('pttl', KEYS[2]))
return {1, previous_count, previous_ttl, current_count, current_ttl}
"""


class OneTripSlidingWindow(SlidingWindowCounterRateLimiter):
    def __init__(self, storage):
        super().__init__(storage)
        self._script = None
        self._seen = threading.local()

    def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        if not isinstance(self.storage, RedisStorage):
            return super().hit(item, *identifiers, cost=cost)
        key = item.key_for(*identifiers)
        storage = self.storage
        if self._script is None:
            self._script = storage.get_connection().register_script(ACQUIRE_AND_READ)
        keys = [
            storage.prefixed_key(storage._previous_window_key(key)),
            storage.prefixed_key(storage._current_window_key(key)),
        ]
        counted, previous, previous_ttl, current, current_ttl = self._script(
            keys, [item.amount, item.get_expiry(), cost]
        )
        window = (int(previous), int(previous_ttl) / 1000, int(current), int(current_ttl) / 1000)
        self._seen.window = (key, time.monotonic(), window)
        return bool(counted)

    def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        seen = getattr(self._seen, "window", None)
        key = item.key_for(*identifiers)
        if seen is None or seen[0] != key or time.monotonic() - seen[1] > FRESH_SECONDS:
            return super().get_window_stats(item, *identifiers)
        self._seen.window = None  # used once: a later read asks the storage again
        return window_stats(item, *seen[2])


def window_stats(
    item: RateLimitItem,
    previous: int,
    previous_expires_in: float,
    current: int,
    current_expires_in: float,
) -> WindowStats:
    """limits' SlidingWindowCounterRateLimiter.get_window_stats, from a window already read."""
    expiry = item.get_expiry()
    weighted = previous * previous_expires_in / expiry + current
    remaining = max(0, item.amount - floor(weighted))
    now = time.time()
    if not (previous or current):
        return WindowStats(now, remaining)
    # a TTL of exactly a whole number of windows (read in the millisecond it was set) resets
    # a whole window from now, not now
    previous_reset_in = (
        (previous_expires_in % (expiry / previous) or expiry / previous) if previous else inf
    )
    current_reset_in = (current_expires_in % expiry or expiry) if current else inf
    return WindowStats(now + min(previous_reset_in, current_reset_in), remaining)


STRATEGIES.setdefault(NAME, OneTripSlidingWindow)
