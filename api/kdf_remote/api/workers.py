"""Workers and capacity: ``/v1/workers`` and ``/v1/capacity``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from kdf_remote.api.instances import InstanceStatus

__all__ = ["Capacity", "WorkerList", "WorkerRemoved", "WorkerRequest"]


class WorkerRequest(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True
):
    """``POST /v1/workers``: a new worker instance.

    The daemon rejects unknown fields; the client leaves out the fields at their default.
    """

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

    workers: list[InstanceStatus]


class WorkerRemoved(msgspec.Struct, frozen=True, kw_only=True):
    """``DELETE /v1/workers/{name}``."""

    name: str
    purged: bool
    """True: its data directory and supervisor files were deleted."""
    data_dir: str
    """Where its KDF data is (kept unless purged)."""


class Capacity(msgspec.Struct, frozen=True, kw_only=True):
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
