"""Worker instances: creation with admission, removal, persistence, and the capacity left.

A worker is an instance next to ``main`` with its own name, an RPC port from ``worker_ports``,
its own data directory (``<state_dir>/workers/<name>/data``) and supervisor files, and resource
limits (``memory_per_worker``/``cpu_per_worker`` unless the request names others). Admission:
``max_workers``, a free port, and the memory limit against what ``max_total_memory`` has left
(:func:`~kdf_remote.supervisor.resource_limits.admit`); a refusal is a 409 saying what is left.

The set of workers is kept in ``<state_dir>/workers.json`` (0600) so a restarted daemon
registers them again (and re-adopts their KDF processes); their startup configs are the
supervisor's stored configs, like ``main``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final

import msgspec

from kdf_remote.api import Capacity, InstanceStatus, WorkerList, WorkerRemoved, WorkerRequest
from kdf_remote.daemon.errors import BadRequestError, ConflictError, NotFoundError
from kdf_remote.daemon.security.process import kdf_user
from kdf_remote.daemon.services import MAIN, InstanceService
from kdf_remote.supervisor.resource_limits import (
    LimitsError,
    Mechanism,
    admit,
    capacity,
    parse_size,
    port_is_free,
)
from kdf_remote.supervisor.resource_limits import PortRange as LimitPortRange
from kdf_remote.supervisor.restart_policy import RestartPolicy
from kdf_remote.supervisor.spec import InstanceSpec, ResourceLimits, Timeouts

if TYPE_CHECKING:
    from kdf_remote.daemon.settings import Settings

__all__ = [
    "REGISTRY_FILE",
    "WorkerRecord",
    "WorkerRegistry",
    "WorkerService",
    "enforcement_of",
    "worker_spec",
]

REGISTRY_FILE = "workers.json"
LOOPBACK = "127.0.0.1"


class WorkerRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What the daemon remembers of a worker across restarts (no secret: configs live in the
    supervisor's 0600 stored config)."""

    name: str
    rpc_port: int
    memory_bytes: int | None = None
    cpu: float | None = None
    created_at: float


class _RegistryFile(msgspec.Struct, frozen=True, kw_only=True):
    workers: list[WorkerRecord]


class WorkerRegistry:
    """``<state_dir>/workers.json``: the workers to register at every start."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[WorkerRecord]:
        """The recorded workers (none when the file does not exist yet).

        Raises:
            ValueError: the file exists but cannot be read (the message names it).
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ValueError(f"{self.path}: cannot be read: {exc.strerror}") from None
        try:
            return msgspec.json.decode(raw, type=_RegistryFile).workers
        except msgspec.DecodeError as exc:
            raise ValueError(f"{self.path}: not a worker registry: {exc}") from None

    def save(self, records: list[WorkerRecord]) -> None:
        """Replace the file atomically (0600)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(msgspec.json.encode(_RegistryFile(workers=records)))
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(self.path)


def worker_dir(settings: Settings, name: str) -> Path:
    """Everything of worker ``name`` that the daemon owns: ``<state_dir>/workers/<name>``."""
    return settings.daemon.state_dir / "workers" / name


def worker_spec(settings: Settings, record: WorkerRecord, binary_path: Path) -> InstanceSpec:
    """The supervisor spec of a worker: ``main``'s policies with its own port, dirs and limits."""
    kdf = settings.kdf
    limits = None
    if record.memory_bytes is not None or record.cpu is not None:
        limits = ResourceLimits(memory_bytes=record.memory_bytes, cpu=record.cpu)
    return InstanceSpec(
        name=record.name,
        binary_path=binary_path,
        data_dir=worker_dir(settings, record.name) / "data",
        run_dir=settings.daemon.state_dir / "instances" / record.name,
        rpc_port=record.rpc_port,
        restart=RestartPolicy(
            auto_restart=kdf.auto_restart, max_restart_attempts=kdf.max_restart_attempts
        ),
        timeouts=Timeouts(start_s=kdf.start_timeout, stop_rpc_s=kdf.stop_timeout),
        log_max_bytes=kdf.log_max_size,
        log_backups=kdf.log_backups,
        health_interval_s=settings.daemon.health_check_interval,
        limits=limits,
        user=kdf_user(kdf.run_as),
    )


_MECHANISM_DETAIL: Final[dict[Mechanism, str]] = {
    Mechanism.CGROUP2: "cgroup v2: memory.max and cpu.max in a delegated subtree; the kernel "
    "OOM-kills an instance above its memory limit (counted as a crash)",
    Mechanism.SYSTEMD: "a transient systemd scope per instance with MemoryMax and CPUQuota",
    Mechanism.CGROUP1: "cgroup v1: memory.limit_in_bytes and cpu.cfs_quota_us; the kernel "
    "OOM-kills an instance above its memory limit (counted as a crash)",
    Mechanism.RLIMIT: "RLIMIT_AS as a backstop plus an RSS watchdog that kills an instance above "
    "its memory limit (counted as a crash); CPU is not enforced",
}


def enforcement_of(mechanism: Mechanism) -> str:
    """What ``mechanism`` guarantees, in one sentence for ``GET /v1/capacity``."""
    return f"{mechanism.value} in force: {_MECHANISM_DETAIL[mechanism]}"


class WorkerService:
    """``/v1/workers`` and ``/v1/capacity`` over the instance service."""

    def __init__(
        self,
        settings: Settings,
        instances: InstanceService,
        *,
        update_running: Callable[[], bool] = lambda: False,
    ) -> None:
        """Reads the registry now and registers every recorded worker with ``instances``."""
        self.settings = settings
        self.instances = instances
        self.registry = WorkerRegistry(settings.daemon.state_dir / REGISTRY_FILE)
        self._update_running = update_running
        self._lock = asyncio.Lock()
        self._records: dict[str, WorkerRecord] = {}
        if settings.worker_support.enabled:
            for record in self.registry.load():
                self._records[record.name] = record
        for record in self._records.values():
            instances.register(worker_spec(settings, record, self._binary()))

    def _binary(self) -> Path:
        return self.instances.spec(MAIN).binary_path

    # -- reading --------------------------------------------------------------------------

    def list(self) -> WorkerList:
        """Status of every worker, by name."""
        out: list[InstanceStatus] = []
        for name in sorted(self._records):
            with contextlib.suppress(NotFoundError):
                out.append(self.instances.status(name))
        return WorkerList(workers=out)

    def capacity(self) -> Capacity:
        """Free ports, memory and CPU left, and the enforcement mechanism."""
        ws = self.settings.worker_support
        limits = ws.resource_limits
        mechanism = self.instances.supervisor.limit_mechanism
        detail = enforcement_of(mechanism)
        room = capacity(
            LimitPortRange(ws.worker_ports.first, ws.worker_ports.last),
            [r.rpc_port for r in self._records.values()] + [self.settings.kdf.rpc_port],
            [_limits_of(r) for r in self._records.values()],
            limits.max_total_memory,
            probe=lambda port: port_is_free(port, LOOPBACK),
            mechanism=mechanism,
        )
        return Capacity(
            enabled=ws.enabled,
            workers=len(self._records),
            max_workers=ws.max_workers,
            free_ports=list(room.free_ports) if ws.enabled else [],
            memory_total=room.memory_total,
            memory_reserved=room.memory_reserved,
            memory_left=room.memory_left,
            memory_per_worker=limits.memory_per_worker,
            cpu_total=room.cpu_total,
            cpu_reserved=room.cpu_reserved,
            cpu_left=room.cpu_left,
            cpu_per_worker=limits.cpu_per_worker,
            mechanism=mechanism.value,
            mechanism_detail=detail,
        )

    # -- creating -------------------------------------------------------------------------

    async def create(self, request: WorkerRequest) -> InstanceStatus:
        """Admit, register and (by default) start a worker.

        Raises:
            BadRequestError: bad name, limits or startup config.
            ConflictError: worker support off, name taken, ``max_workers`` reached, no free
                port, memory budget exhausted, or an update running.
            BadGatewayError: KDF did not start (the worker is not kept).
        """
        if request.start and request.config is None:
            raise BadRequestError(
                "config: missing, expected a KDF startup config (required when start is true)",
                code="invalid_config",
            )
        async with self._lock:
            record = self._admit(request)
            spec = worker_spec(self.settings, record, self._binary())
            config_body = msgspec.json.encode(request.config) if request.config else b""
            config = self.instances.prepare_config_for(spec, config_body) if config_body else None
            await self.instances.add_instance(spec)
            try:
                if request.start:
                    status = await self.instances.start(record.name, config_body)
                else:
                    if config is not None:
                        await self.instances.put_config(record.name, config_body)
                    status = self.instances.status(record.name)
            except BaseException:
                with contextlib.suppress(Exception):
                    await self.instances.remove_instance(record.name)
                raise
            self._records[record.name] = record
            self._save()
            return status

    def _admit(self, request: WorkerRequest) -> WorkerRecord:
        ws = self.settings.worker_support
        name = request.name
        if not ws.enabled:
            raise ConflictError(
                "worker support is disabled (worker_support.enabled)", code="workers_disabled"
            )
        if self._update_running():
            raise ConflictError("a KDF update is running; try again when it has finished")
        if name == MAIN or name in self._records or name in self.instances.supervisor.names():
            raise ConflictError(f"an instance named {name!r} already exists", code="name_taken")
        if len(self._records) >= ws.max_workers:
            raise ConflictError(
                f"max_workers reached: {len(self._records)} of {ws.max_workers} workers exist",
                code="max_workers",
            )
        limits = self._limits(request)
        existing = [_limits_of(r) for r in self._records.values()]
        admission = admit(limits, existing, ws.resource_limits.max_total_memory)
        if not admission.ok:
            raise ConflictError(admission.message, code="insufficient_memory")
        return WorkerRecord(
            name=name,
            rpc_port=self._free_port(),
            memory_bytes=limits.memory_bytes,
            cpu=limits.cpu,
            created_at=time.time(),
        )

    def _limits(self, request: WorkerRequest) -> ResourceLimits:
        defaults = self.settings.worker_support.resource_limits
        memory = defaults.memory_per_worker
        if request.memory is not None:
            try:
                memory = parse_size(request.memory, field_name="memory")
            except LimitsError as exc:
                raise BadRequestError(str(exc), code="invalid_limits") from None
        cpu = request.cpu if request.cpu is not None else defaults.cpu_per_worker
        try:
            return ResourceLimits(memory_bytes=memory, cpu=cpu)
        except ValueError as exc:
            raise BadRequestError(str(exc), code="invalid_limits") from None

    def _free_port(self) -> int:
        ws = self.settings.worker_support
        taken = {r.rpc_port for r in self._records.values()} | {self.settings.kdf.rpc_port}
        for port in range(ws.worker_ports.first, ws.worker_ports.last + 1):
            if port not in taken and port_is_free(port, LOOPBACK):
                return port
        raise ConflictError(
            f"no free port left in worker_ports {ws.worker_ports}", code="no_free_port"
        )

    # -- removing -------------------------------------------------------------------------

    async def remove(self, name: str, *, purge: bool) -> WorkerRemoved:
        """Stop and forget worker ``name``; with ``purge`` its data and files are deleted."""
        async with self._lock:
            if name not in self._records:
                raise NotFoundError(f"no worker named {name!r}")
            if self._update_running():
                raise ConflictError("a KDF update is running; try again when it has finished")
            spec = self.instances.spec(name)
            await self.instances.remove_instance(name)
            del self._records[name]
            self._save()
        if purge:
            for path in (worker_dir(self.settings, name), spec.run_dir):
                await asyncio.to_thread(shutil.rmtree, path, True)
        return WorkerRemoved(name=name, purged=purge, data_dir=str(spec.data_dir))

    def _save(self) -> None:
        self.registry.save(sorted(self._records.values(), key=lambda r: r.name))


def _limits_of(record: WorkerRecord) -> ResourceLimits:
    return ResourceLimits(memory_bytes=record.memory_bytes, cpu=record.cpu)
