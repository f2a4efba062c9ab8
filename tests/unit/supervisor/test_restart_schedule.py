"""The restart schedule and the state machine, driven by a fake monotonic clock (no processes).

Style and security test list item 15: increasing delays up to a cap, failed after N crashes
inside the window, crashes shortly after start still counted, reset after a stable period, a
manual start clears failed, and exit code 1 does not tight-loop.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdf_remote.supervisor import (
    Action,
    InstanceMachine,
    InstanceState,
    InvalidState,
    RestartHistory,
    RestartPolicy,
    backoff_delay,
    decide_restart,
)

pytestmark = pytest.mark.unit

NO_JITTER = RestartPolicy(jitter=0.0)


def middle() -> float:
    """A jitter draw of 0.5: exactly the nominal delay."""
    return 0.5


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def advance(self, seconds: float) -> float:
        """Move forward and return the new time."""
        self.now += seconds
        return self.now


def machine(policy: RestartPolicy = NO_JITTER, start_timeout_s: float = 30.0) -> InstanceMachine:
    """A stopped machine with the given policy."""
    return InstanceMachine(policy=policy, start_timeout_s=start_timeout_s)


def crash_after(
    m: InstanceMachine, clock: FakeClock, uptime: float, code: int | None = 139
) -> None:
    """Spawn now, live ``uptime`` seconds, then crash."""
    m.spawned(clock.now)
    m.ready(clock.now)
    clock.advance(uptime)
    m.crashed(clock.now, code, middle)


def spawn_when_due(m: InstanceMachine, clock: FakeClock) -> float:
    """Advance the clock to the restart time, check tick() fires exactly then; return the delay."""
    assert m.state is InstanceState.BACKOFF
    due = m.next_deadline()
    assert due is not None
    delay = due - clock.now
    if delay > 0:
        assert m.tick(clock.now + delay * 0.999) is None
    clock.advance(delay)
    assert m.tick(clock.now) is Action.SPAWN
    assert m.tick(clock.now) is None  # each due action fires once
    return delay


def test_backoff_grows_exponentially_to_the_cap() -> None:
    """Restart n of a streak waits 0, 1, 2, 4, ... seconds, never above backoff_max_s."""
    policy = RestartPolicy(jitter=0.0, backoff_max_s=10.0)
    delays = [backoff_delay(policy, n, 0.5) for n in range(1, 9)]
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


@given(st.integers(1, 60), st.floats(0.0, 0.999999))
def test_jitter_stays_within_bounds_and_cap(attempt: int, draw: float) -> None:
    """Jitter spreads each delay by at most +/- jitter and never exceeds the cap."""
    policy = RestartPolicy(jitter=0.2, backoff_max_s=60.0)
    nominal = backoff_delay(RestartPolicy(jitter=0.0, backoff_max_s=60.0), attempt, 0.5)
    delay = backoff_delay(policy, attempt, draw)
    assert nominal * 0.8 - 1e-9 <= delay <= min(60.0, nominal * 1.2) + 1e-9


def test_first_crash_of_a_stable_process_restarts_at_once() -> None:
    """A KDF that ran fine and then crashed is restarted with no delay."""
    clock, m = FakeClock(), machine()
    crash_after(m, clock, uptime=3600)
    assert m.state is InstanceState.BACKOFF
    assert spawn_when_due(m, clock) == 0.0
    assert m.restarts == 1


def test_crash_loop_backs_off_then_fails() -> None:
    """Crashes at start give delays 0, 1, 2 s, then failed on the 4th crash (3 attempts)."""
    clock, m = FakeClock(), machine(RestartPolicy(jitter=0.0, max_restart_attempts=3))
    delays = []
    for _ in range(3):
        crash_after(m, clock, uptime=0.1)
        delays.append(spawn_when_due(m, clock))
    assert delays == [0.0, 1.0, 2.0]
    crash_after(m, clock, uptime=0.1)
    assert m.state is InstanceState.FAILED
    assert m.next_deadline() is None
    assert m.tick(clock.advance(3600)) is None
    assert m.restarts == 3
    assert m.reason is not None
    assert "gave up" in m.reason


def test_crashes_soon_after_start_count_too() -> None:
    """A KDF that reaches running and dies 20 s later, every time, still ends up failed."""
    clock, m = FakeClock(), machine(RestartPolicy(jitter=0.0, stable_after_s=60.0))
    for _ in range(3):
        crash_after(m, clock, uptime=20)
        spawn_when_due(m, clock)
    crash_after(m, clock, uptime=20)
    assert m.state is InstanceState.FAILED


def test_stable_period_resets_the_streak() -> None:
    """Crashes separated by stable uptime never accumulate: each restarts at once."""
    clock, m = FakeClock(), machine(RestartPolicy(jitter=0.0, stable_after_s=60.0))
    for _ in range(10):
        crash_after(m, clock, uptime=61)
        assert spawn_when_due(m, clock) == 0.0
    assert m.restarts == 10
    assert m.history.crashes == (clock.now,)


def test_old_crashes_leave_the_window() -> None:
    """Crashes older than window_s no longer count towards the give-up limit."""
    policy = RestartPolicy(jitter=0.0, window_s=100.0, stable_after_s=1000.0)
    clock, m = FakeClock(), machine(policy)
    for _ in range(3):
        crash_after(m, clock, uptime=1)
        spawn_when_due(m, clock)
    clock.advance(150)  # the three crashes are now outside the window
    crash_after(m, clock, uptime=1)
    assert m.state is InstanceState.BACKOFF


def test_manual_start_clears_failed() -> None:
    """After failed, a manual start forgets the streak: the next crash restarts at once."""
    clock, m = FakeClock(), machine(RestartPolicy(jitter=0.0, max_restart_attempts=1))
    crash_after(m, clock, uptime=0.1)
    spawn_when_due(m, clock)
    crash_after(m, clock, uptime=0.1)
    states = [m.state]
    m.manual_start()
    crash_after(m, clock, uptime=0.1)
    states.append(m.state)
    assert states == [InstanceState.FAILED, InstanceState.BACKOFF]
    assert spawn_when_due(m, clock) == 0.0


def test_exit_code_1_does_not_tight_loop() -> None:
    """KDF's config-error exit (code 1) waits at least config_error_delay_s, even first."""
    policy = RestartPolicy(jitter=0.0, config_error_delay_s=10.0, max_restart_attempts=5)
    clock, m = FakeClock(), machine(policy)
    crash_after(m, clock, uptime=0.05, code=1)
    assert spawn_when_due(m, clock) == 10.0
    crash_after(m, clock, uptime=0.05, code=1)
    assert spawn_when_due(m, clock) == 10.0
    crash_after(m, clock, uptime=0.05, code=139)
    assert spawn_when_due(m, clock) == 2.0


def test_auto_restart_off_fails_at_once() -> None:
    """With auto_restart off an unexpected exit is final."""
    clock, m = FakeClock(), machine(RestartPolicy(auto_restart=False))
    crash_after(m, clock, uptime=100)
    assert m.state is InstanceState.FAILED


def test_zero_attempts_means_no_restart() -> None:
    """max_restart_attempts=0 gives up on the first crash."""
    clock, m = FakeClock(), machine(RestartPolicy(max_restart_attempts=0))
    crash_after(m, clock, uptime=100)
    assert m.state is InstanceState.FAILED


def test_start_timeout_fires_once_at_the_deadline() -> None:
    """A process that is not ready start_timeout_s after spawn yields START_TIMEOUT once."""
    clock, m = FakeClock(), machine(start_timeout_s=30.0)
    m.spawned(clock.now)
    assert m.tick(clock.advance(29.9)) is None
    assert m.tick(clock.advance(0.1)) is Action.START_TIMEOUT
    assert m.tick(clock.advance(1)) is None
    m.ready(clock.now)
    assert m.tick(clock.advance(100)) is None


@pytest.mark.parametrize(
    ("start", "target"),
    [
        (InstanceState.STOPPED, InstanceState.RUNNING),
        (InstanceState.STOPPED, InstanceState.BACKOFF),
        (InstanceState.STOPPING, InstanceState.RUNNING),
        (InstanceState.BACKOFF, InstanceState.RUNNING),
        (InstanceState.FAILED, InstanceState.RUNNING),
    ],
)
def test_illegal_transitions_are_refused(start: InstanceState, target: InstanceState) -> None:
    """The machine refuses jumps the lifecycle does not have (e.g. stopped to running)."""
    m = machine()
    m.state = start
    with pytest.raises(InvalidState):
        m.transition(target, 0.0)
    assert m.state is start


def test_decide_restart_is_pure() -> None:
    """decide_restart returns a new history and leaves its input untouched."""
    history = RestartHistory((1.0, 2.0))
    decision = decide_restart(
        NO_JITTER, history, now=3.0, uptime_s=0.5, exit_code=None, rand=middle
    )
    assert history.crashes == (1.0, 2.0)
    assert decision.history.crashes == (1.0, 2.0, 3.0)
    assert decision.restart
    assert decision.delay_s == 2.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_restart_attempts": -1},
        {"window_s": 0},
        {"backoff_factor": 0.5},
        {"jitter": 1.0},
        {"backoff_initial_s": float("nan")},
        {"stable_after_s": float("inf")},
    ],
)
def test_invalid_policy_is_rejected(kwargs: dict[str, float]) -> None:
    """Policies that make no sense are refused at construction, naming the field."""
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        RestartPolicy(**kwargs)  # type: ignore[arg-type]


def test_clock_is_injected(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine never reads a clock itself: freezing time.monotonic changes nothing."""
    import time

    def frozen() -> float:
        raise AssertionError("the machine read the real clock")

    monkeypatch.setattr(time, "monotonic", frozen)
    clock, m = FakeClock(), machine()
    crash_after(m, clock, uptime=1)
    spawn_when_due(m, clock)
