"""kdf_remote.supervisor: the process supervisor used by the daemon and by local mode.

Imports neither litestar nor pulumi. Entry point: :class:`Supervisor`, managing instances
described by :class:`InstanceSpec`. Where things live:

- :mod:`.supervisor`: the :class:`Supervisor` façade and its concurrency model;
- :mod:`.instance`: the per-instance runtime record; :mod:`.operations`: the one-operation slot;
- :mod:`.machine` and :mod:`.restart_policy`: the state machine, restart schedule and defaults;
- :mod:`.config_store`: the stored startup config and log redaction secrets;
- :mod:`.spawn`: spawning KDF (config files, environment, limits, run-as);
  :mod:`.process`: one KDF OS process (identity, exit detection, signals);
- :mod:`.readiness`: when KDF counts as running; :mod:`.stopping`: the stop escalation;
- :mod:`.adoption`: the state file and re-adoption of a KDF left running;
- :mod:`.health`: health samples; :mod:`.events`: event streams and their fan-out;
- :mod:`.resource_limits`: memory/cpu/open-file limits; :mod:`.logs`: log rotation (and its
  disk bound), tails and redaction; :mod:`.files`: private run-directory files;
- :mod:`.spec`: what an instance is; :mod:`.models`: the values handed out; :mod:`.errors`;
- :mod:`.updater`: rolling KDF updates; :mod:`.backup`: data-directory snapshots;
  :mod:`.metrics`: Prometheus metrics.
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
