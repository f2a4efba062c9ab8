"""Wire types of the REST API (msgspec Structs): what the daemon sends and accepts.

They mirror the supervisor's snapshots field for field but are the API's own, so the supervisor
can grow internal fields without changing the contract. None of them can carry a secret.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from kdf_remote.kdf.config import KdfStartupConfig

__all__ = [
    "DaemonHealth",
    "HealthSampleOut",
    "InstanceList",
    "InstanceStatusOut",
    "LastExitOut",
    "LimitsOut",
    "LogLineOut",
    "LogTail",
    "StateEventOut",
    "StoredConfigOut",
    "StreamEnd",
]


class DaemonHealth(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/health``: the daemon is up. Says nothing about instances (it is public)."""

    status: Literal["ok"] = "ok"
    version: str


class LastExitOut(msgspec.Struct, frozen=True, kw_only=True):
    """How the previous KDF process of an instance ended."""

    code: int | None = None
    """Exit code, when it exited normally (None when unknown, e.g. an adopted process)."""
    signal: str | None = None
    """Name of the signal that killed it, e.g. ``SIGKILL``."""
    at: datetime
    reason: str
    """Why it ended, e.g. ``stopped``, ``crashed``, ``memory_limit``."""
    pid: int | None = None


class LimitsOut(msgspec.Struct, frozen=True, kw_only=True):
    """Resource limits applied to an instance's KDF process (None: no limit)."""

    memory_bytes: int | None = None
    cpu: float | None = None
    """Cores."""
    open_files: int | None = None


class InstanceStatusOut(msgspec.Struct, frozen=True, kw_only=True):
    """Status of one instance (design.md "Instance model")."""

    name: str
    state: Literal["stopped", "starting", "running", "stopping", "backoff", "failed", "updating"]
    pid: int | None = None
    started_at: datetime | None = None
    uptime_s: float | None = None
    restarts: int = 0
    last_exit: LastExitOut | None = None
    kdf_version: str | None = None
    rpc_port: int
    cpu_percent: float | None = None
    rss_bytes: int | None = None
    open_fds: int | None = None
    data_dir: str
    limits: LimitsOut | None = None


class InstanceList(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/instances``."""

    instances: list[InstanceStatusOut]


class StoredConfigOut(msgspec.Struct, frozen=True, kw_only=True):
    """``PUT .../config``: what is stored, with every secret left out."""

    name: str
    config: KdfStartupConfig
    """The stored startup config without its secret fields."""
    secrets_set: list[str]
    """Names of the secret fields that hold a value (values are write-only)."""
    applies: Literal["next_start", "now"]
    """``next_start`` when the instance runs: the new config takes effect on (re)start."""


class LogLineOut(msgspec.Struct, frozen=True, kw_only=True):
    """One redacted log line of an instance."""

    line: str
    at: datetime | None = None
    stream: str | None = None
    """``stdout``, ``stderr``, or ``supervisor`` for the supervisor's own notes."""


class LogTail(msgspec.Struct, frozen=True, kw_only=True):
    """``GET .../logs?tail=N``: the last lines, oldest first."""

    name: str
    lines: list[LogLineOut]


class HealthSampleOut(msgspec.Struct, frozen=True, kw_only=True):
    """One health reading of an instance: process and RPC liveness plus resource use."""

    name: str
    state: str
    healthy: bool
    """Running, and KDF answered ``version`` within the probe timeout."""
    rpc_ok: bool
    rpc_latency_ms: float | None = None
    """Round trip of the ``version`` probe; None when it did not answer or was not tried."""
    kdf_version: str | None = None
    pid: int | None = None
    uptime_s: float | None = None
    restarts: int = 0
    cpu_percent: float | None = None
    rss_bytes: int | None = None
    open_fds: int | None = None
    threads: int | None = None
    at: datetime


class StateEventOut(msgspec.Struct, frozen=True, kw_only=True):
    """A supervisor event on a stream (``event: state``): a state change, exit or restart."""

    name: str
    kind: Literal["state", "spawned", "adopted", "exited", "restart_scheduled", "log_rotated"]
    state: str
    at: datetime
    pid: int | None = None
    exit: LastExitOut | None = None
    delay_s: float | None = None
    """For ``restart_scheduled``: seconds until the restart."""
    detail: str | None = None


class StreamEnd(msgspec.Struct, frozen=True, kw_only=True):
    """The last event of a stream the daemon ended itself (``event: end``)."""

    reason: str
