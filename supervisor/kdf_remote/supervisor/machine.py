"""The per-instance state machine: states, legal transitions, deadlines and ``tick(now)``.

No I/O and no clock of its own: every method takes ``now`` (a monotonic time), so the whole
lifecycle, restart schedule included, is tested by setting fields and calling one method with a
fake time. The async supervisor feeds it events (spawned, ready, exited...) and calls
:meth:`InstanceMachine.tick` when :meth:`InstanceMachine.next_deadline` passes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from kdf_remote.supervisor.errors import InvalidState
from kdf_remote.supervisor.models import InstanceState
from kdf_remote.supervisor.restart_policy import (
    RestartDecision,
    RestartHistory,
    RestartPolicy,
    decide_restart,
)

__all__ = ["ALLOWED_TRANSITIONS", "Action", "InstanceMachine"]

S = InstanceState
ALLOWED_TRANSITIONS: dict[InstanceState, frozenset[InstanceState]] = {
    S.STOPPED: frozenset({S.STARTING, S.UPDATING}),
    S.STARTING: frozenset({S.RUNNING, S.STOPPING, S.BACKOFF, S.FAILED, S.STOPPED}),
    S.RUNNING: frozenset({S.STOPPING, S.BACKOFF, S.FAILED, S.STOPPED, S.UPDATING}),
    S.STOPPING: frozenset({S.STOPPED, S.FAILED}),
    S.BACKOFF: frozenset({S.STARTING, S.STOPPED, S.FAILED, S.UPDATING}),
    S.FAILED: frozenset({S.STARTING, S.STOPPED, S.UPDATING}),
    # From updating: the new binary starts, or a stop interrupts the update's restart.
    S.UPDATING: frozenset({S.STARTING, S.STOPPING, S.STOPPED, S.FAILED}),
}


class Action(enum.Enum):
    """What :meth:`InstanceMachine.tick` asks the driver to do."""

    SPAWN = "spawn"
    """The backoff delay is over: start the process again."""
    START_TIMEOUT = "start_timeout"
    """The process did not become ready in time: treat it as a failed start."""


@dataclass
class InstanceMachine:
    """State, restart history and deadlines of one instance."""

    policy: RestartPolicy
    start_timeout_s: float
    state: InstanceState = InstanceState.STOPPED
    since: float = 0.0
    history: RestartHistory = field(default_factory=RestartHistory)
    restarts: int = 0
    """Automatic restarts performed since the instance was added."""
    restart_at: float | None = None
    start_deadline: float | None = None
    process_started: float | None = None
    reason: str | None = None
    """Why the last give-up or restart decision was made."""

    def transition(self, new: InstanceState, now: float) -> None:
        """Enter ``new``; raises :class:`InvalidState` for a transition the model forbids."""
        if new is not self.state and new not in ALLOWED_TRANSITIONS[self.state]:
            raise InvalidState(f"cannot go from {self.state} to {new}")
        self.state = new
        self.since = now
        if new is not InstanceState.BACKOFF:
            self.restart_at = None
        if new is not InstanceState.STARTING:
            self.start_deadline = None

    def manual_start(self) -> None:
        """An operator asked for a start: forget the crash streak (this clears ``failed``)."""
        self.history = RestartHistory()
        self.reason = None

    def spawned(self, now: float) -> None:
        """A new process exists; it has ``start_timeout_s`` to become ready."""
        self.transition(InstanceState.STARTING, now)
        self.start_deadline = now + self.start_timeout_s
        self.process_started = now

    def adopted(self, now: float, uptime_s: float) -> None:
        """A process from an earlier supervisor was re-adopted; it is checked like a start."""
        self.spawned(now)
        self.process_started = now - uptime_s

    def ready(self, now: float) -> None:
        """The process answered ``version`` and an authenticated call."""
        self.transition(InstanceState.RUNNING, now)

    def uptime(self, now: float) -> float:
        """Seconds the current (or last) process has lived."""
        return 0.0 if self.process_started is None else max(0.0, now - self.process_started)

    def crashed(
        self, now: float, exit_code: int | None, rand: Callable[[], float]
    ) -> RestartDecision:
        """The process exited unexpectedly (or failed to start): back off or give up."""
        decision = decide_restart(
            self.policy,
            self.history,
            now=now,
            uptime_s=self.uptime(now),
            exit_code=exit_code,
            rand=rand,
        )
        self.history = decision.history
        self.reason = decision.reason
        if decision.restart:
            self.transition(InstanceState.BACKOFF, now)
            self.restart_at = now + decision.delay_s
        else:
            self.transition(InstanceState.FAILED, now)
        return decision

    def give_up(self, now: float, reason: str) -> None:
        """Fail without consulting the policy (e.g. KDF refused our credentials)."""
        self.reason = reason
        self.transition(InstanceState.FAILED, now)

    def next_deadline(self) -> float | None:
        """The next time :meth:`tick` has something to do, if any."""
        if self.state is InstanceState.BACKOFF:
            return self.restart_at
        if self.state is InstanceState.STARTING:
            return self.start_deadline
        return None

    def tick(self, now: float) -> Action | None:
        """Return the action due at ``now``; each due action is returned once."""
        if (
            self.state is InstanceState.BACKOFF
            and self.restart_at is not None
            and now >= self.restart_at
        ):
            self.restart_at = None
            self.restarts += 1
            return Action.SPAWN
        if (
            self.state is InstanceState.STARTING
            and self.start_deadline is not None
            and now >= self.start_deadline
        ):
            self.start_deadline = None
            return Action.START_TIMEOUT
        return None
