"""Typed results and request bodies of the client library (msgspec Structs).

The REST wire types are `kdf_remote.api`'s, the very Structs the daemon encodes and documents;
this module re-exports them under the client's names and adds the client's own results
(`HealthEvent`, `RpcReply`). Decoding is tolerant of fields the client does not know (a newer
daemon may add some) and strict about the types of the fields it does know: a wrong type is a
`ProtocolError`, not a silent dict.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from kdf_remote.api import (
    INSTANCE_STATES,
    UPDATE_SUCCESS,
    Backup,
    BackupList,
    Capacity,
    DaemonHealth,
    HealthSample,
    InstanceList,
    InstanceState,
    InstanceStatus,
    LastExit,
    Limits,
    LogLine,
    RestoreResult,
    TokenResponse,
    UpdateRequest,
    UpdateResult,
    UpdateStep,
    WorkerList,
    WorkerRemoved,
    WorkerRequest,
)

__all__ = [
    "UPDATE_SUCCESS",
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

State = InstanceState
STATES: tuple[str, ...] = INSTANCE_STATES
#: A worker instance as the daemon reports it: its instance status.
Worker = InstanceStatus


class HealthEvent(msgspec.Struct, kw_only=True):
    """One item of `monitor_health()`: a sample, or a note that the stream was interrupted.

    `kind` is `"sample"` for a reading, `"reconnecting"` while the client waits to resume the
    stream after the daemon went away (`detail` says why), and `"reconnected"` once it is back.
    """

    kind: Literal["sample", "reconnecting", "reconnected"]
    sample: HealthSample | None = None
    detail: str | None = None


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
