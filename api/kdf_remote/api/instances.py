"""Instance status, logs and the events of a stream (``/v1/instances``).

They mirror the supervisor's snapshots field for field but are the API's own, so the supervisor
can grow internal fields without changing the contract. None of them can carry a secret.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, get_args

import msgspec

__all__ = [
    "INSTANCE_STATES",
    "InstanceList",
    "InstanceState",
    "InstanceStatus",
    "LastExit",
    "Limits",
    "LogLine",
    "LogTail",
    "StateEvent",
    "StreamEnd",
]

InstanceState = Literal[
    "stopped", "starting", "running", "stopping", "backoff", "failed", "updating"
]
"""The states of design.md's instance model."""
INSTANCE_STATES: tuple[str, ...] = get_args(InstanceState)


class LastExit(msgspec.Struct, frozen=True, kw_only=True):
    """How the previous KDF process of an instance ended."""

    code: int | None = None
    """Exit code, when it exited normally (None when unknown, e.g. an adopted process)."""
    signal: str | None = None
    """Name of the signal that killed it, e.g. ``SIGKILL``."""
    at: datetime
    reason: str
    """Why it ended, e.g. ``stopped``, ``crashed``, ``memory_limit``."""
    pid: int | None = None


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Resource limits applied to an instance's KDF process (None: no limit)."""

    memory_bytes: int | None = None
    cpu: float | None = None
    """Cores."""
    open_files: int | None = None


class InstanceStatus(msgspec.Struct, frozen=True, kw_only=True):
    """Status of one instance (design.md "Instance model"); a worker's status is one too."""

    name: str
    state: InstanceState
    pid: int | None = None
    started_at: datetime | None = None
    uptime_s: float | None = None
    restarts: int = 0
    last_exit: LastExit | None = None
    kdf_version: str | None = None
    rpc_port: int
    cpu_percent: float | None = None
    rss_bytes: int | None = None
    open_fds: int | None = None
    data_dir: str
    limits: Limits | None = None


class InstanceList(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/instances``."""

    instances: list[InstanceStatus]


class LogLine(msgspec.Struct, frozen=True, kw_only=True):
    """One redacted log line of an instance (also each ``event: log`` of a log stream)."""

    line: str
    at: datetime | None = None
    stream: str | None = None
    """``stdout``, ``stderr``, or ``supervisor`` for the supervisor's own notes."""


class LogTail(msgspec.Struct, frozen=True, kw_only=True):
    """``GET .../logs?tail=N``: the last lines, oldest first."""

    name: str
    lines: list[LogLine]


class StateEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A supervisor event on a stream (``event: state``): a state change, exit or restart."""

    name: str
    kind: Literal["state", "spawned", "adopted", "exited", "restart_scheduled", "log_rotated"]
    state: str
    at: datetime
    pid: int | None = None
    exit: LastExit | None = None
    delay_s: float | None = None
    """For ``restart_scheduled``: seconds until the restart."""
    detail: str | None = None


class StreamEnd(msgspec.Struct, frozen=True, kw_only=True):
    """The last event of a stream the daemon ended itself (``event: end``)."""

    reason: str
