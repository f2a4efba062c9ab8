"""kdf_remote.supervisor: the process supervisor used by the daemon and by local mode.

Imports neither litestar nor pulumi. Entry point: :class:`Supervisor`, managing instances
described by :class:`InstanceSpec`. See :mod:`.supervisor` for the concurrency model,
:mod:`.restart_policy` for the restart schedule and its defaults, :mod:`.logs` for log rotation
and its disk bound.
"""

from __future__ import annotations

from kdf_remote.kdf.transport import RawResponse
from kdf_remote.supervisor.errors import (
    InvalidState,
    KdfUnreachable,
    NoStoredConfig,
    NotRunning,
    StartFailed,
    SupervisorError,
    UnknownInstance,
)
from kdf_remote.supervisor.machine import Action, InstanceMachine
from kdf_remote.supervisor.models import (
    EventKind,
    ExitInfo,
    HealthSample,
    InstanceLimits,
    InstanceState,
    InstanceStatus,
    SupervisorEvent,
)
from kdf_remote.supervisor.restart_policy import (
    RestartDecision,
    RestartHistory,
    RestartPolicy,
    backoff_delay,
    decide_restart,
)
from kdf_remote.supervisor.spec import InstanceSpec, ResourceLimits, RunAs, Timeouts
from kdf_remote.supervisor.supervisor import EventStream, Supervisor

__all__ = [
    "Action",
    "EventKind",
    "EventStream",
    "ExitInfo",
    "HealthSample",
    "InstanceLimits",
    "InstanceMachine",
    "InstanceSpec",
    "InstanceState",
    "InstanceStatus",
    "InvalidState",
    "KdfUnreachable",
    "NoStoredConfig",
    "NotRunning",
    "RawResponse",
    "ResourceLimits",
    "RestartDecision",
    "RestartHistory",
    "RestartPolicy",
    "RunAs",
    "StartFailed",
    "Supervisor",
    "SupervisorError",
    "SupervisorEvent",
    "Timeouts",
    "UnknownInstance",
    "backoff_delay",
    "decide_restart",
]
