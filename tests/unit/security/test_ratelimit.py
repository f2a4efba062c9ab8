"""Token buckets and the failed-authentication lock-out, on a fake clock."""

from __future__ import annotations

import pytest

from kdf_remote.daemon.security.ratelimit import (
    FailureLockout,
    TokenBucketLimiter,
    retry_after_header,
)

from .conftest import FakeClock

pytestmark = [pytest.mark.unit, pytest.mark.security]


def test_bucket_allows_the_burst_then_refuses_with_the_wait(clock: FakeClock) -> None:
    """``burst`` hits pass, the next waits 1/rate seconds, and refills with time."""
    limiter = TokenBucketLimiter(rate=2.0, burst=3, clock=clock.monotonic)
    assert [limiter.hit("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.hit("a") == pytest.approx(0.5)
    assert limiter.hit("b") == 0.0
    clock.advance(0.5)
    assert limiter.hit("a") == 0.0
    assert limiter.hit("a") > 0


def test_bucket_table_is_bounded_and_keeps_busy_keys(clock: FakeClock) -> None:
    """A flood of new keys cannot evict a drained bucket while refilled ones can go."""
    limiter = TokenBucketLimiter(rate=1.0, burst=2, clock=clock.monotonic, max_keys=10)
    limiter.hit("attacker")
    limiter.hit("attacker")
    for i in range(9):
        limiter.hit(f"idle-{i}")
    clock.advance(5)  # the idle buckets refill completely; the attacker's too, so drain again
    limiter.hit("attacker")
    limiter.hit("attacker")
    for i in range(50):
        limiter.hit(f"new-{i}")
    assert len(limiter) <= 10
    assert retry_after_header(limiter.hit("attacker")) == "1"


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    """``Retry-After`` is at least 1 and never rounds a wait down."""
    assert retry_after_header(0.01) == "1"
    assert retry_after_header(1.2) == "2"
    assert retry_after_header(30.0) == "30"


def test_lockout_after_max_failures_for_the_lockout_period(clock: FakeClock) -> None:
    """The Nth failure within the window locks the key out for ``lockout`` seconds."""
    lockout = FailureLockout(max_failures=3, lockout=60, window=60, clock=clock.monotonic)
    assert lockout.record_failure("ip") == 0.0
    assert lockout.record_failure("ip") == 0.0
    assert lockout.record_failure("ip") == 60
    assert lockout.retry_after("ip") == 60
    assert lockout.retry_after("other") == 0.0
    clock.advance(59)
    assert lockout.retry_after("ip") == pytest.approx(1)
    clock.advance(1)
    assert lockout.retry_after("ip") == 0.0


def test_failures_outside_the_window_do_not_add_up(clock: FakeClock) -> None:
    """Failures spread over more than the window never trigger a lock-out."""
    lockout = FailureLockout(max_failures=3, lockout=60, window=10, clock=clock.monotonic)
    for _ in range(6):
        assert lockout.record_failure("ip") == 0.0
        clock.advance(6)


def test_flooding_the_lockout_table_keeps_locked_keys(clock: FakeClock) -> None:
    """Filling the table with new keys evicts unlocked entries before a locked-out one."""
    lockout = FailureLockout(
        max_failures=2, lockout=600, window=60, clock=clock.monotonic, max_keys=5
    )
    lockout.record_failure("attacker")
    lockout.record_failure("attacker")
    for i in range(100):
        lockout.record_failure(f"ip-{i}")
        clock.advance(0.01)
    assert len(lockout) <= 5
    assert lockout.retry_after("attacker") > 0
