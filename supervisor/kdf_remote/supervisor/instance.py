"""The per-instance runtime record: everything the supervisor tracks about one instance.

Private to the package (the public view is :class:`~.models.InstanceStatus`). An instance runs at
most one :class:`Operation` at a time, held in :attr:`Instance.op`; see :mod:`.operations`.
"""

from __future__ import annotations

import asyncio
import zlib
from dataclasses import dataclass
from pathlib import Path

import psutil

from kdf_remote.kdf.config import KdfStartupConfig
from kdf_remote.kdf.transport import KdfTransport
from kdf_remote.supervisor.logs import Redactor
from kdf_remote.supervisor.machine import InstanceMachine
from kdf_remote.supervisor.models import ExitInfo, HealthSample, InstanceState, InstanceStatus
from kdf_remote.supervisor.process import KdfProcess
from kdf_remote.supervisor.resource_limits import LimitEnforcement
from kdf_remote.supervisor.spec import InstanceSpec

__all__ = ["MAX_AUTH_FAILURES", "Instance", "Operation", "limit_key"]

# Rejected rpc_passwords before calls are suspended (KDF bans 127.0.0.1 after 10).
MAX_AUTH_FAILURES = 3


@dataclass
class Operation:
    """The one operation (start, stop, restart, auto, adopt) an instance runs at a time."""

    kind: str
    task: asyncio.Task[InstanceStatus]
    preempted: bool = False


class Instance:
    """Everything the supervisor tracks about one instance (private; see InstanceStatus)."""

    def __init__(self, spec: InstanceSpec) -> None:
        self.spec = spec
        self.machine = InstanceMachine(policy=spec.restart, start_timeout_s=spec.timeouts.start_s)
        self.stored: KdfStartupConfig | None = None
        self.process: KdfProcess | None = None
        self.transport: KdfTransport | None = None
        self.password: str | None = None
        self.rpc_host = "127.0.0.1"
        self.kdf_version: str | None = None
        self.started_wall: float | None = None
        self.last_exit: ExitInfo | None = None
        self.exit_reason: str | None = None
        self.op: Operation | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.monitor: asyncio.Task[None] | None = None
        self.health: HealthSample | None = None
        self.ps: psutil.Process | None = None
        self.auth_failures = 0
        self.redactor = Redactor()
        self.written: dict[Path, bytes] = {}
        self.limit_key = limit_key(spec)
        self.enforcement: LimitEnforcement | None = None
        """What the enforcer put in force on the current process (None without one)."""

    @property
    def state(self) -> InstanceState:
        return self.machine.state


def limit_key(spec: InstanceSpec) -> str:
    """The instance's key in the limit enforcer: its name plus a hash of its run directory."""
    # Stable across daemon restarts (re-adoption finds the same cgroup), distinct for two
    # instances of one name under different run directories; within the enforcer's 64 chars.
    digest = zlib.crc32(str(spec.run_dir.resolve()).encode())
    return f"{spec.name[:55]}.{digest:08x}"
