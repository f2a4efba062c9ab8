"""Typed results and request bodies of the client library (msgspec Structs).

Decoding is tolerant of fields the client does not know (a newer daemon may add some) and strict
about the types of the fields it does know: a wrong type is a `ProtocolError`, not a silent dict.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = [
    "Backup",
    "BackupList",
    "Capacity",
    "DaemonHealth",
    "HealthEvent",
    "HealthSample",
    "InstanceList",
    "InstanceStatus",
    "LastExit",
    "Limits",
    "LogLine",
    "RestoreResult",
    "RpcReply",
    "TokenResponse",
    "UpdateRequest",
    "UpdateResult",
    "UpdateStep",
    "Worker",
    "WorkerList",
    "WorkerRemoved",
    "WorkerRequest",
]

State = Literal["stopped", "starting", "running", "stopping", "backoff", "failed", "updating"]
STATES: tuple[str, ...] = (
    "stopped",
    "starting",
    "running",
    "stopping",
    "backoff",
    "failed",
    "updating",
)


class DaemonHealth(msgspec.Struct, kw_only=True):
    """`GET /v1/health`: daemon liveness."""

    status: str
    version: str | None = None


class TokenResponse(msgspec.Struct, kw_only=True):
    """`POST /v1/auth/token`: a short-lived JWT."""

    access_token: str
    token_type: str = "Bearer"  # noqa: S105  # the scheme name, not a secret
    expires_in: float = 300.0


class LastExit(msgspec.Struct, kw_only=True):
    """How the process last ended: exit code or signal, when, and why (if known)."""

    code: int | None = None
    signal: int | str | None = None
    at: str | float | None = None
    reason: str | None = None
    pid: int | None = None


class Limits(msgspec.Struct, kw_only=True):
    """Resource limits applied to an instance (None = not limited)."""

    memory_bytes: int | None = None
    cpu: float | None = None
    open_files: int | None = None


class InstanceStatus(msgspec.Struct, kw_only=True):
    """Status of one supervised KDF process (never secrets)."""

    name: str
    state: str
    pid: int | None = None
    started_at: str | float | None = None
    uptime_s: float | None = None
    restarts: int = 0
    last_exit: LastExit | None = None
    kdf_version: str | None = None
    rpc_port: int | None = None
    cpu_percent: float | None = None
    rss_bytes: int | None = None
    open_fds: int | None = None
    data_dir: str | None = None
    limits: Limits | None = None


class InstanceList(msgspec.Struct, kw_only=True):
    """`GET /v1/instances`."""

    instances: list[InstanceStatus]


class HealthSample(msgspec.Struct, kw_only=True):
    """One health reading of an instance: process and RPC liveness plus resource use."""

    name: str
    state: str
    healthy: bool = False
    rpc_ok: bool | None = None
    rpc_latency_ms: float | None = None
    kdf_version: str | None = None
    pid: int | None = None
    uptime_s: float | None = None
    restarts: int = 0
    cpu_percent: float | None = None
    rss_bytes: int | None = None
    open_fds: int | None = None
    threads: int | None = None
    at: str | float | None = None


class HealthEvent(msgspec.Struct, kw_only=True):
    """One item of `monitor_health()`: a sample, or a note that the stream was interrupted.

    `kind` is `"sample"` for a reading, `"reconnecting"` while the client waits to resume the
    stream after the daemon went away (`detail` says why), and `"reconnected"` once it is back.
    """

    kind: Literal["sample", "reconnecting", "reconnected"]
    sample: HealthSample | None = None
    detail: str | None = None


class LogLine(msgspec.Struct, kw_only=True):
    """One redacted log line of an instance."""

    line: str
    at: str | float | None = None
    stream: str | None = None


class WorkerRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Body of `POST /v1/workers`.

    `config` is the worker's KDF startup config (required when `start`; the daemon forces
    loopback RPC on the worker's port and generates the rpc_password when none is given).
    `memory` (`512M`, `1G` or bytes) and `cpu` (cores) default to the daemon's per-worker limits.
    """

    name: str
    config: dict[str, Any] | None = None
    memory: str | int | None = None
    cpu: float | None = None
    start: bool = True


class Worker(msgspec.Struct, kw_only=True):
    """A worker instance as the daemon reports it (its instance status)."""

    name: str
    state: str | None = None
    pid: int | None = None
    uptime_s: float | None = None
    restarts: int = 0
    kdf_version: str | None = None
    rpc_port: int | None = None
    cpu_percent: float | None = None
    rss_bytes: int | None = None
    open_fds: int | None = None
    data_dir: str | None = None
    limits: Limits | None = None


class WorkerList(msgspec.Struct, kw_only=True):
    """`GET /v1/workers`."""

    workers: list[Worker]


class WorkerRemoved(msgspec.Struct, kw_only=True):
    """`DELETE /v1/workers/{name}`: whether its data was deleted, and where it is otherwise."""

    name: str
    purged: bool = False
    data_dir: str | None = None


class Capacity(msgspec.Struct, kw_only=True):
    """`GET /v1/capacity`: room left for workers and how limits are enforced."""

    enabled: bool = True
    workers: int = 0
    max_workers: int | None = None
    free_ports: list[int] = msgspec.field(default_factory=list)
    memory_total: int | None = None
    memory_reserved: int | None = None
    memory_left: int | None = None
    memory_per_worker: int | None = None
    cpu_total: float | None = None
    cpu_reserved: float | None = None
    cpu_left: float | None = None
    cpu_per_worker: float | None = None
    mechanism: str | None = None
    """`cgroup2`, `systemd`, `cgroup1` or `rlimit` (RLIMIT_AS plus an RSS watchdog)."""
    mechanism_detail: str | None = None


class UpdateRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Body of `POST /v1/kdf/update`: the release zip, its sha256, and its version label."""

    version: str
    sha256: str
    url: str | None = None


class UpdateStep(msgspec.Struct, kw_only=True):
    """One instance's part of an update."""

    name: str
    was: str | None = None
    state: str
    backup_id: str | None = None
    kdf_version: str | None = None
    detail: str | None = None


#: Outcomes of an update that leave the new release (or an already current one) running.
UPDATE_SUCCESS = ("updated", "unchanged")


class UpdateResult(msgspec.Struct, kw_only=True):
    """A KDF update: progress while `running`, then its `outcome` and `reason`."""

    id: str
    version: str
    previous_version: str | None = None
    phase: str
    running: bool = False
    outcome: str | None = None
    """`updated`, `unchanged`, `rolled_back` or `failed` once finished."""
    reason: str | None = None
    steps: list[UpdateStep] = msgspec.field(default_factory=list)
    started_at: str | float | None = None
    finished_at: str | float | None = None

    @property
    def rolled_back(self) -> bool:
        """An instance failed on the new release and everything went back to the old one."""
        return self.outcome == "rolled_back"

    @property
    def succeeded(self) -> bool:
        """Finished with the new (or already current) release running."""
        return not self.running and self.outcome in UPDATE_SUCCESS


class Backup(msgspec.Struct, kw_only=True):
    """One backup of an instance's KDF data directory."""

    id: str
    instance: str | None = None
    created_at: str | float | None = None
    label: str | None = None
    encrypted: bool = False
    size_bytes: int | None = None
    sha256: str | None = None
    files: int | None = None


class BackupList(msgspec.Struct, kw_only=True):
    """`GET /v1/instances/{name}/backups`: oldest first."""

    backups: list[Backup]
    instance: str | None = None


class RestoreResult(msgspec.Struct, kw_only=True):
    """`POST .../backups/{id}/restore`: the instance's data now holds the backup."""

    instance: str
    backup_id: str
    files: int | None = None
    safety_backup: str | None = None
    """Id of the snapshot of the replaced data (restore it to undo)."""


class RpcReply(msgspec.Struct, kw_only=True):
    """KDF's answer to one RPC call, as KDF gave it (HTTP status and decoded JSON body).

    `ok` is True when KDF reported success (HTTP 2xx and no `error` member); `result` and `error`
    read the legacy and v2 (`mmrpc: "2.0"`) shapes alike.
    """

    http_status: int
    body: Any

    @property
    def ok(self) -> bool:
        """KDF answered with success."""
        return 200 <= self.http_status < 300 and not self._has_error()

    @property
    def result(self) -> Any:
        """The `result` member (None if absent)."""
        return self.body.get("result") if isinstance(self.body, dict) else None

    @property
    def error(self) -> str | None:
        """KDF's error message, if any."""
        if isinstance(self.body, dict) and "error" in self.body:
            return str(self.body["error"])
        return None

    def _has_error(self) -> bool:
        if isinstance(self.body, dict):
            return "error" in self.body
        if isinstance(self.body, list):
            return any(isinstance(item, dict) and "error" in item for item in self.body)
        return False
