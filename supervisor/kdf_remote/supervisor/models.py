"""Values the supervisor hands out: states, status snapshots, exits, health samples, events.

All are frozen msgspec Structs so the daemon can serialise them as they are. None holds a secret.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

import msgspec

from kdf_remote.supervisor.resource_limits import Mechanism

__all__ = [
    "EventKind",
    "ExitInfo",
    "HealthSample",
    "InstanceLimits",
    "InstanceState",
    "InstanceStatus",
    "SupervisorEvent",
    "now_utc",
]


class InstanceState(enum.StrEnum):
    """Lifecycle states (design.md "Instance model")."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    BACKOFF = "backoff"
    """Exited unexpectedly; a restart is scheduled."""
    FAILED = "failed"
    """Gave up (restart limit, credentials refused, auto_restart off); a manual start clears it."""
    UPDATING = "updating"


class ExitInfo(msgspec.Struct, frozen=True, kw_only=True):
    """How a KDF process ended. ``code`` and ``signal`` are None when unknown (adopted process)."""

    code: int | None
    signal: str | None
    at: datetime
    reason: str
    """``memory_limit`` when the limits killed it; otherwise what happened, for humans."""
    pid: int | None = None
    detail: str | None = None
    """More about a ``memory_limit`` exit (which limit, which mechanism, the exit status)."""


class InstanceLimits(msgspec.Struct, frozen=True, kw_only=True):
    """The configured limits of an instance and how they are enforced.

    ``memory_bytes``/``cpu``/``open_files`` are the spec's limits (None: not limited).
    ``mechanism`` is the enforcer's (``cgroup2``, ``systemd``, ``cgroup1`` or ``rlimit``);
    ``in_force`` is True while a KDF process runs under them, and then ``memory_enforced``,
    ``cpu_enforced`` and ``detail`` say what the mechanism really enforces on it.
    """

    memory_bytes: int | None = None
    cpu: float | None = None
    open_files: int | None = None
    mechanism: Mechanism
    in_force: bool
    memory_enforced: bool = False
    cpu_enforced: bool = False
    detail: str
    cgroup: str | None = None
    unit: str | None = None


class InstanceStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one instance: exactly the design's status fields, never a secret."""

    name: str
    state: InstanceState
    pid: int | None
    started_at: datetime | None
    uptime_s: float | None
    restarts: int
    last_exit: ExitInfo | None
    kdf_version: str | None
    rpc_port: int
    cpu_percent: float | None
    rss_bytes: int | None
    open_fds: int | None
    data_dir: str
    limits: InstanceLimits | None


class HealthSample(msgspec.Struct, frozen=True, kw_only=True):
    """Resource use of the KDF process and the round trip of a ``version`` call."""

    name: str
    at: datetime
    state: InstanceState
    pid: int
    cpu_percent: float
    rss_bytes: int
    open_fds: int
    threads: int
    rpc_rtt_ms: float | None
    """None when ``version`` did not answer within the probe timeout."""


class EventKind(enum.StrEnum):
    """What a :class:`SupervisorEvent` reports."""

    STATE = "state"
    """The instance entered ``state``."""
    SPAWNED = "spawned"
    ADOPTED = "adopted"
    EXITED = "exited"
    RESTART_SCHEDULED = "restart_scheduled"
    LOG_ROTATED = "log_rotated"


class SupervisorEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One thing that happened to an instance; ``monotonic`` is ``time.monotonic()`` then."""

    kind: EventKind
    name: str
    state: InstanceState
    at: datetime
    monotonic: float
    pid: int | None = None
    exit: ExitInfo | None = None
    delay_s: float | None = None
    detail: str | None = None


def now_utc() -> datetime:
    """The current time, as stamped on exits, health samples and events."""
    return datetime.now(UTC)
