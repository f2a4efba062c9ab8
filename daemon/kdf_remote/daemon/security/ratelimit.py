"""Rate limits (token buckets) and the failed-authentication lock-out, on an injectable clock.

Both are keyed by strings the middleware derives from the resolved client address (see
:func:`kdf_remote.daemon.security.ipaccess.rate_key`) or the credential's key id, never from
anything an untrusted peer can rotate. Memory is bounded: when a table is full, entries that carry
no state (a refilled bucket, an expired failure window) are dropped first, then the least
recently used.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

__all__ = ["FailureLockout", "TokenBucketLimiter", "retry_after_header"]

DEFAULT_MAX_KEYS = 100_000


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class TokenBucketLimiter:
    """Allows ``burst`` requests at once, refilled at ``rate`` requests a second, per key.

    Args:
        rate: tokens added per second.
        burst: bucket size.
        clock: monotonic seconds.
        max_keys: buckets kept at most.
    """

    def __init__(
        self,
        *,
        rate: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()

    def hit(self, key: Hashable, cost: float = 1.0) -> float:
        """Take ``cost`` tokens for ``key``.

        Returns:
            0.0 when allowed, else the seconds until ``cost`` tokens will be available.
        """
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            self._make_room(now)
            bucket = _Bucket(tokens=self.burst, updated=now)
            self._buckets[key] = bucket
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return 0.0
        return (cost - bucket.tokens) / self.rate

    def _make_room(self, now: float) -> None:
        if len(self._buckets) < self._max_keys:
            return
        full = [
            k
            for k, b in self._buckets.items()
            if b.tokens + max(0.0, now - b.updated) * self.rate >= self.burst
        ]
        for key in full:
            del self._buckets[key]
        while len(self._buckets) >= self._max_keys:
            self._buckets.popitem(last=False)

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass(slots=True)
class _Failures:
    count: int
    window_start: float
    locked_until: float


class FailureLockout:
    """Locks a key out for ``lockout`` seconds after ``max_failures`` failures within ``window``.

    Success does not clear the count: an attacker who also holds one valid key must not be able
    to reset the counter between guesses.

    Args:
        max_failures: failures that trigger the lock-out.
        lockout: seconds the key stays locked.
        window: seconds over which failures are counted.
        clock: monotonic seconds.
        max_keys: entries kept at most.
    """

    def __init__(
        self,
        *,
        max_failures: int,
        lockout: float,
        window: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        if max_failures < 1 or lockout <= 0 or window <= 0:
            raise ValueError("max_failures >= 1, lockout > 0 and window > 0 are required")
        self.max_failures = max_failures
        self.lockout = lockout
        self.window = window
        self._clock = clock
        self._max_keys = max_keys
        self._entries: OrderedDict[Hashable, _Failures] = OrderedDict()

    def retry_after(self, key: Hashable) -> float:
        """Seconds the key stays locked (0.0 when it is not)."""
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        return max(0.0, entry.locked_until - self._clock())

    def record_failure(self, key: Hashable) -> float:
        """Count one failure; returns the lock-out now in force (0.0 if none)."""
        now = self._clock()
        entry = self._entries.get(key)
        if entry is None:
            self._make_room(now)
            entry = _Failures(count=0, window_start=now, locked_until=0.0)
            self._entries[key] = entry
        else:
            self._entries.move_to_end(key)
        if now - entry.window_start > self.window:
            entry.count = 0
            entry.window_start = now
        entry.count += 1
        if entry.count >= self.max_failures:
            entry.locked_until = now + self.lockout
            entry.count = 0
            entry.window_start = now
        return max(0.0, entry.locked_until - now)

    def _make_room(self, now: float) -> None:
        if len(self._entries) < self._max_keys:
            return
        stale = [
            k
            for k, e in self._entries.items()
            if e.locked_until <= now and now - e.window_start > self.window
        ]
        for key in stale:
            del self._entries[key]
        # Keep lock-outs longest: flooding the table must not free a locked-out attacker.
        unlocked = (k for k, e in self._entries.items() if e.locked_until <= now)
        for key in list(unlocked)[: max(0, len(self._entries) - self._max_keys + 1)]:
            del self._entries[key]
        while len(self._entries) >= self._max_keys:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
