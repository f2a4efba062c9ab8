"""Wire types of the REST API (msgspec Structs): what the daemon sends and accepts.

They mirror the supervisor's snapshots field for field but are the API's own, so the supervisor
can grow internal fields without changing the contract. None of them can carry a secret.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from kdf_remote.kdf.config import KdfStartupConfig

__all__ = [
    "BackupListOut",
    "BackupOut",
    "CapacityOut",
    "DaemonHealth",
    "HealthSampleOut",
    "InstanceList",
    "InstanceStatusOut",
    "LastExitOut",
    "LimitsOut",
    "LogLineOut",
    "LogTail",
    "RestoreOut",
    "StateEventOut",
    "StoredConfigOut",
    "StreamEnd",
    "UpdateIn",
    "UpdateOut",
    "UpdateStepOut",
    "WorkerCreateIn",
    "WorkerList",
    "WorkerRemovedOut",
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


# -- workers and capacity ---------------------------------------------------------------------


class WorkerCreateIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/workers``: a new worker instance."""

    name: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
    """Lower-case letter, then up to 31 of a-z 0-9 _ -; not ``main``."""
    config: dict[str, Any] | None = None
    """The KDF startup config (same rules as ``main``: rpcip, rpc_local_only and rpcport are
    set by the daemon, a missing rpc_password is generated). Required when ``start`` is true."""
    memory: str | Annotated[int, msgspec.Meta(ge=0)] | None = None
    """Memory limit (``512M``, ``1G`` or bytes); default ``memory_per_worker``."""
    cpu: Annotated[float, msgspec.Meta(gt=0, le=4096)] | None = None
    """CPU limit in cores; default ``cpu_per_worker``."""
    start: bool = True
    """Start it now (the answer comes once KDF answers RPC)."""


class WorkerList(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/workers``: the status of every worker (``main`` is not a worker)."""

    workers: list[InstanceStatusOut]


class WorkerRemovedOut(msgspec.Struct, frozen=True, kw_only=True):
    """``DELETE /v1/workers/{name}``."""

    name: str
    purged: bool
    """True: its data directory and supervisor files were deleted."""
    data_dir: str
    """Where its KDF data is (kept unless purged)."""


class CapacityOut(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/capacity``: what is left for new workers and how limits are enforced."""

    enabled: bool
    workers: int
    max_workers: int
    free_ports: list[int]
    memory_total: int
    """``max_total_memory`` in bytes: the budget worker memory limits are admitted against."""
    memory_reserved: int
    memory_left: int
    memory_per_worker: int
    cpu_total: float
    """Cores of this host."""
    cpu_reserved: float
    cpu_left: float
    cpu_per_worker: float
    mechanism: Literal["cgroup2", "systemd", "cgroup1", "rlimit"]
    """How limits are enforced: cgroup v2, a systemd scope, cgroup v1, or RLIMIT_AS plus an RSS
    watchdog (CPU then only as a CPU-affinity cap)."""
    mechanism_detail: str


# -- KDF updates ------------------------------------------------------------------------------


class UpdateIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/kdf/update``: the release to install."""

    version: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,79}$")]
    sha256: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-fA-F]{64}$")]
    """sha256 of the whole release zip, verified before anything changes."""
    url: str | None = None
    """The zip's URL, on an origin of ``kdf.release_origins`` (redirects stay on it)."""


class UpdateStepOut(msgspec.Struct, frozen=True, kw_only=True):
    """One instance's part of an update."""

    name: str
    was: str
    """State before the update (what a rollback brings it back to)."""
    state: Literal[
        "pending",
        "restarting",
        "done",
        "skipped",
        "failed",
        "rolling_back",
        "rolled_back",
        "rollback_failed",
    ]
    backup_id: str | None = None
    kdf_version: str | None = None
    detail: str | None = None


class UpdateOut(msgspec.Struct, frozen=True, kw_only=True):
    """An update: where it is, and once finished its outcome and why."""

    id: str
    version: str
    previous_version: str | None = None
    phase: Literal[
        "downloading",
        "backing_up",
        "switching",
        "restarting",
        "rolling_back",
        "done",
        "rolled_back",
        "failed",
        "interrupted",
    ]
    running: bool
    outcome: Literal["updated", "unchanged", "rolled_back", "failed"] | None = None
    """None while it runs (and for an update interrupted by a daemon restart)."""
    reason: str | None = None
    """Why it ended so, e.g. the rollback reason."""
    steps: list[UpdateStepOut]
    started_at: datetime
    finished_at: datetime | None = None


# -- backups ----------------------------------------------------------------------------------


class BackupOut(msgspec.Struct, frozen=True, kw_only=True):
    """One snapshot of an instance's data directory (tar.gz with a sha256 manifest)."""

    id: str
    instance: str
    created_at: datetime
    label: str
    """``manual``, ``pre-update-<version>`` or ``pre-restore``."""
    encrypted: bool
    size_bytes: int
    sha256: str
    """sha256 of the archive as written, checked before a restore."""
    files: int


class BackupListOut(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/instances/{name}/backups``: oldest first."""

    instance: str
    backups: list[BackupOut]


class RestoreOut(msgspec.Struct, frozen=True, kw_only=True):
    """``POST .../backups/{id}/restore``: the data directory now holds the backup."""

    instance: str
    backup_id: str
    files: int
    safety_backup: str | None = None
    """Id of the snapshot of the replaced data, taken just before the swap."""
