"""kdf-remote's REST wire types, shared by the daemon and the client.

One msgspec Struct per JSON shape of design.md's REST API: the daemon returns and validates them,
Litestar documents them in the OpenAPI document, and the client decodes the same JSON into them.
The part depends on msgspec alone (the client installs without the daemon).

Rules: request bodies (``WorkerRequest``, ``UpdateRequest``) forbid unknown fields, since the
daemon validates them; response types never do, so an older client still decodes the answer of a
newer daemon that added a field. Every type is frozen.
"""

from __future__ import annotations

from kdf_remote.api.backups import Backup, BackupList, RestoreResult
from kdf_remote.api.errors import ErrorBody
from kdf_remote.api.health import DaemonHealth, HealthSample
from kdf_remote.api.instances import (
    INSTANCE_STATES,
    InstanceList,
    InstanceState,
    InstanceStatus,
    LastExit,
    Limits,
    LogLine,
    LogTail,
    StateEvent,
    StreamEnd,
)
from kdf_remote.api.tokens import TokenResponse
from kdf_remote.api.updates import UPDATE_SUCCESS, UpdateRequest, UpdateResult, UpdateStep
from kdf_remote.api.workers import Capacity, WorkerList, WorkerRemoved, WorkerRequest

__all__ = [
    "INSTANCE_STATES",
    "UPDATE_SUCCESS",
    "Backup",
    "BackupList",
    "Capacity",
    "DaemonHealth",
    "ErrorBody",
    "HealthSample",
    "InstanceList",
    "InstanceState",
    "InstanceStatus",
    "LastExit",
    "Limits",
    "LogLine",
    "LogTail",
    "RestoreResult",
    "StateEvent",
    "StreamEnd",
    "TokenResponse",
    "UpdateRequest",
    "UpdateResult",
    "UpdateStep",
    "WorkerList",
    "WorkerRemoved",
    "WorkerRequest",
]
