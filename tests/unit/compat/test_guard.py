"""The listener's userpass check and lock-out, on a fake clock."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from kdf_remote.daemon.compat.guard import UserpassGuard, userpass_matches

pytestmark = pytest.mark.unit


@dataclass
class Clock:
    """Monotonic seconds that move only when told."""

    now: float = 100.0

    def __call__(self) -> float:
        return self.now


def test_userpass_matches_exactly() -> None:
    """Equality only: case, length and a lone surrogate are all handled."""
    assert userpass_matches("Pa$$word-1", "Pa$$word-1")
    assert not userpass_matches("pa$$word-1", "Pa$$word-1")
    assert not userpass_matches("Pa$$word-1x", "Pa$$word-1")
    assert not userpass_matches("\ud800", "Pa$$word-1")


def test_attempts_left_count_down_then_lock_out() -> None:
    """Each wrong userpass reports the attempts left; the last one locks the client out."""
    clock = Clock()
    guard = UserpassGuard(max_failures=3, lockout=60.0, clock=clock)
    assert [guard.record_failure("10.0.0.1") for _ in range(3)] == [2, 1, 0]
    assert guard.retry_after("10.0.0.1") == pytest.approx(60.0)
    assert guard.retry_after("10.0.0.2") == 0.0
    clock.now += 61
    assert guard.retry_after("10.0.0.1") == 0.0
    assert guard.record_failure("10.0.0.1") == 2


def test_failures_outside_the_window_are_forgotten() -> None:
    """Failures older than the window do not add up to a lock-out."""
    clock = Clock()
    guard = UserpassGuard(max_failures=2, lockout=30.0, clock=clock)
    assert guard.record_failure("k") == 1
    clock.now += 31
    assert guard.record_failure("k") == 1
    assert guard.retry_after("k") == 0.0
