"""The restart schedule: a pure function of (policy, crash history, now, the exit).

Three mechanisms together (style-and-security B5):

* backoff: the first restart of a streak is immediate (a KDF that ran fine and crashed comes back
  at once), later ones wait ``backoff_initial_s * backoff_factor**(n-2)``, capped at
  ``backoff_max_s``, each spread by +/- ``jitter`` so a fleet does not restart in lockstep;
* give-up: more than ``max_restart_attempts`` crashes inside ``window_s`` end in ``failed``.
  Crashes soon after a start count as much as crashes during start (supervisord's gap);
* reset: a process that stayed up ``stable_after_s`` clears the streak before its crash counts.

Exit code 1 is KDF's "bad config or startup error": restarting at once would tight-loop, so such
restarts wait at least ``config_error_delay_s``.

Defaults (written down here and in the README): auto_restart on, 3 attempts in 300 s, backoff
1 s doubling to 60 s with 20 % jitter, stable after 60 s, 10 s floor after exit code 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["RestartDecision", "RestartHistory", "RestartPolicy", "backoff_delay", "decide_restart"]

CONFIG_ERROR_EXIT_CODE = 1


@dataclass(frozen=True, kw_only=True)
class RestartPolicy:
    """When and how fast an instance that exited unexpectedly is started again."""

    auto_restart: bool = True
    """Restart after an unexpected exit at all."""
    max_restart_attempts: int = 3
    """Automatic restarts allowed inside ``window_s``; the next crash means ``failed``."""
    window_s: float = 300.0
    backoff_initial_s: float = 1.0
    """Delay before the second restart of a streak (the first one is immediate)."""
    backoff_factor: float = 2.0
    backoff_max_s: float = 60.0
    jitter: float = 0.2
    """Each delay is multiplied by a uniform factor in [1 - jitter, 1 + jitter]."""
    stable_after_s: float = 60.0
    """Uptime after which a crash starts a new streak."""
    config_error_delay_s: float = 10.0
    """Minimum delay after exit code 1 (config or startup error)."""

    def __post_init__(self) -> None:
        checks = {
            "max_restart_attempts": self.max_restart_attempts >= 0,
            "window_s": self.window_s > 0,
            "backoff_initial_s": self.backoff_initial_s >= 0,
            "backoff_factor": self.backoff_factor >= 1,
            "backoff_max_s": self.backoff_max_s >= 0,
            "jitter": 0 <= self.jitter < 1,
            "stable_after_s": self.stable_after_s >= 0,
            "config_error_delay_s": self.config_error_delay_s >= 0,
        }
        for name, ok in checks.items():
            value = getattr(self, name)
            if not ok or (isinstance(value, float) and not math.isfinite(value)):
                raise ValueError(f"restart.{name}: got {value!r}, out of range")


@dataclass(frozen=True)
class RestartHistory:
    """Monotonic times of the crashes counted in the current streak, oldest first."""

    crashes: tuple[float, ...] = field(default=())


@dataclass(frozen=True)
class RestartDecision:
    """What to do after an unexpected exit: restart after ``delay_s``, or give up."""

    restart: bool
    delay_s: float
    history: RestartHistory
    reason: str


def backoff_delay(policy: RestartPolicy, attempt: int, rand: float) -> float:
    """Delay before restart number ``attempt`` (1-based) of a streak; ``rand`` is in [0, 1)."""
    if attempt <= 1:
        return 0.0
    base = policy.backoff_initial_s * policy.backoff_factor ** (attempt - 2)
    spread = 1.0 + policy.jitter * (2.0 * rand - 1.0)
    return min(policy.backoff_max_s, min(policy.backoff_max_s, base) * spread)


def decide_restart(
    policy: RestartPolicy,
    history: RestartHistory,
    *,
    now: float,
    uptime_s: float,
    exit_code: int | None,
    rand: Callable[[], float],
) -> RestartDecision:
    """Decide the fate of an instance whose process exited unexpectedly at ``now``.

    ``uptime_s`` is how long that process lived; ``exit_code`` is None after a signal or when the
    code is unknown. Pure: the returned history replaces the old one.
    """
    if not policy.auto_restart:
        return RestartDecision(False, 0.0, history, "exited unexpectedly; auto_restart is off")
    crashes = () if uptime_s >= policy.stable_after_s else history.crashes
    recent = tuple(t for t in crashes if now - t < policy.window_s)
    if len(recent) >= policy.max_restart_attempts:
        return RestartDecision(
            False,
            0.0,
            RestartHistory((*recent, now)),
            f"gave up: {len(recent) + 1} unexpected exits within {policy.window_s:g} s "
            f"(max_restart_attempts={policy.max_restart_attempts})",
        )
    updated = RestartHistory((*recent, now))
    attempt = len(updated.crashes)
    delay = backoff_delay(policy, attempt, rand())
    reason = f"restart {attempt}/{policy.max_restart_attempts} of this streak"
    if exit_code == CONFIG_ERROR_EXIT_CODE and delay < policy.config_error_delay_s:
        delay = policy.config_error_delay_s
        reason += " (exit code 1: config or startup error, delayed)"
    return RestartDecision(True, delay, updated, reason)
