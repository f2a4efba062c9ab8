"""The asyncio supervisor: named KDF instances, their lifecycle, RPC, health, events and logs.

Concurrency model. Each instance runs at most one *operation* at a time (start, stop, restart,
an automatic restart, or the readiness check of an adopted process), held in ``_Instance.op``.
Checking and claiming that slot happens with no ``await`` in between, so it is atomic on the event
loop. A second request either joins the operation in flight (same intent: start during a start,
stop during a stop) or gets :class:`InvalidState`; a stop preempts a start or restart (the start
is cancelled, then the stop runs), so an operator can always stop a KDF stuck in ``starting``.
Spawning happens only inside an operation and only when no process exists, hence exactly one KDF
per instance. :meth:`Supervisor.status` and event streams never wait for an operation.

Limits. A :class:`~.resource_limits.LimitEnforcer` is the only limits mechanism: each spawn is
prepared by it (argv prefix and a pre-exec hook, so limits hold from KDF's first instruction),
the pid is attached (also on re-adoption), an exit is asked whether the limits caused it
(reason ``memory_limit``, counted as a crash) and the instance's limits are released on remove.
Each instance is keyed in the enforcer by its name plus a hash of its run directory, so two
supervisors on one host (or a daemon and a test) never share a cgroup.

Run-as. With ``InstanceSpec.user`` set, KDF switches to that uid/gid (no supplementary groups)
after the limits' pre-exec; its data directory and its two config files are chowned to it and
the run directory becomes 0711 (traversable, not listable) so it can read them.

Secrets. The startup config is written to ``run_dir/MM2.json`` (0600) and passed with
``MM_CONF_PATH``; argv is the binary path alone; the environment is a short allow-list plus the
spec's ``env``. Statuses, events, errors and log lines never carry a secret, and logs are redacted
when read.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import signal
import subprocess
import time
import zlib
from collections.abc import AsyncGenerator, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import psutil

from kdf_remote.kdf import rpc
from kdf_remote.kdf.config import (
    KdfStartupConfig,
    decode_startup_config,
    encode_startup_config,
    validate_startup_config,
)
from kdf_remote.kdf.errors import KdfConfigError, KdfProtocolError, KdfRpcError
from kdf_remote.kdf.errors import KdfUnreachable as _TransportUnreachable
from kdf_remote.kdf.password import generate_rpc_password
from kdf_remote.kdf.transport import KdfTransport, RawResponse
from kdf_remote.supervisor.errors import (
    InvalidState,
    KdfUnreachable,
    NoStoredConfig,
    NotRunning,
    StartFailed,
    SupervisorError,
    UnknownInstance,
)
from kdf_remote.supervisor.files import (
    StateRecord,
    ensure_private_dir,
    read_state,
    remove_quietly,
    write_private,
)
from kdf_remote.supervisor.logs import (
    LogFollower,
    Redactor,
    open_log_for_append,
    read_tail,
    rotate_if_needed,
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
from kdf_remote.supervisor.process import (
    KdfProcess,
    ProcessIdentity,
    identity_of,
    spawn,
    spawned_identity,
)
from kdf_remote.supervisor.resource_limits import (
    MEMORY_LIMIT_REASON,
    LimitEnforcement,
    LimitEnforcer,
    LimitsError,
    Mechanism,
)
from kdf_remote.supervisor.spec import InstanceSpec, ResourceLimits

__all__ = ["EventStream", "Supervisor"]

_log = logging.getLogger("kdf_remote.supervisor")

ACTIVE_CONFIG_FILE = "MM2.json"
COINS_FILE = "coins.json"
STORED_CONFIG_FILE = "config.json"
STATE_FILE = "state.json"
# The only variables KDF inherits from the supervisor's environment (which may hold the daemon's
# own secrets); everything else must come from InstanceSpec.env.
INHERITED_ENV = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "RUST_LOG",
    "RUST_BACKTRACE",
)
# Readiness polling: fast at first (a healthy KDF binds within tens of ms, and every ms counts
# towards recovery time), then slower so a long start does not spin.
_READY_POLL_FIRST_S = 0.002
_READY_POLL_FAST_PHASE_S = 1.0
_READY_POLL_MAX_S = 0.1
_MAX_AUTH_FAILURES = 3
_EVENT_QUEUE_SIZE = 1024
_LOG_FOLLOW_POLL_S = 0.2

_START_KINDS = frozenset({"start", "auto", "adopt"})
_PREEMPTIBLE_KINDS = frozenset({"start", "auto", "adopt", "restart"})


class _NotReadyError(Exception):
    def __init__(self, reason: str, *, credentials_refused: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.credentials_refused = credentials_refused


@dataclass
class _Operation:
    kind: str
    task: asyncio.Task[InstanceStatus]
    preempted: bool = False


class _Instance:
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
        self.op: _Operation | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.monitor: asyncio.Task[None] | None = None
        self.health: HealthSample | None = None
        self.ps: psutil.Process | None = None
        self.auth_failures = 0
        self.redactor = Redactor()
        self.written: dict[Path, bytes] = {}
        self.limit_key = _limit_key(spec)
        self.enforcement: LimitEnforcement | None = None
        """What the enforcer put in force on the current process (None without one)."""

    @property
    def state(self) -> InstanceState:
        return self.machine.state


class EventStream:
    """Async iterator of :class:`SupervisorEvent`, registered from creation on.

    Bounded: if the consumer lags by more than 1024 events the oldest are dropped (counted in
    :attr:`dropped`), so a slow consumer can never stall the supervisor. Ends when the supervisor
    closes or :meth:`aclose` is called.
    """

    def __init__(self, owner: Supervisor, name: str | None) -> None:
        self._owner = owner
        self.name = name
        self.dropped = 0
        self._queue: asyncio.Queue[SupervisorEvent | None] = asyncio.Queue(_EVENT_QUEUE_SIZE)
        self._closed = False

    def _offer(self, event: SupervisorEvent | None) -> None:
        if self._closed:
            return
        if event is not None and self.name is not None and event.name != self.name:
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> SupervisorEvent:
        if self._closed:
            raise StopAsyncIteration
        event = await self._queue.get()
        if event is None:
            await self.aclose()
            raise StopAsyncIteration
        return event

    async def aclose(self) -> None:
        """Stop receiving events."""
        self._closed = True
        self._owner._unsubscribe(self)


def _describe_returncode(returncode: int | None) -> tuple[int | None, str | None, str]:
    if returncode is None:
        return None, None, "exited (exit status unknown: not our child)"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return None, name, f"killed by {name}"
    meaning = {
        0: "clean exit",
        1: "startup or config error",
        101: "panic (e.g. RPC port busy)",
        134: "abort",
    }.get(returncode, "error")
    return returncode, None, f"exited with code {returncode} ({meaning})"


def _limit_key(spec: InstanceSpec) -> str:
    # Stable across daemon restarts (re-adoption finds the same cgroup), distinct for two
    # instances of one name under different run directories; within the enforcer's 64 chars.
    digest = zlib.crc32(str(spec.run_dir.resolve()).encode())
    return f"{spec.name[:55]}.{digest:08x}"


def _default_enforcer() -> LimitEnforcer:
    try:
        return LimitEnforcer()
    except (OSError, LimitsError) as exc:
        # Detection found a mechanism it then could not set up (e.g. a read-only cgroup mount
        # that looked writable): the rlimit mechanism needs nothing from the host.
        _log.warning("limits: falling back to rlimit enforcement: %s", exc)
        return LimitEnforcer(Mechanism.RLIMIT)


def _now_utc() -> datetime:
    return datetime.now(UTC)


def _rpc_host(config: KdfStartupConfig) -> str:
    ip = config.effective_rpcip
    if ip == "0.0.0.0":
        return "127.0.0.1"
    if ip == "::":
        return "::1"
    return ip


class Supervisor:
    """Supervises named KDF instances (``main``, workers) on this machine.

    Use one per process, inside a running event loop. ``clock`` is the monotonic clock used for
    the restart schedule and deadlines; ``rng`` supplies backoff jitter; ``enforcer`` applies
    resource limits (default: one with the strongest mechanism detected on this host, closed by
    :meth:`close`; one passed in stays the caller's to close).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        enforcer: LimitEnforcer | None = None,
    ) -> None:
        self._clock = clock
        self._rng = rng or random.SystemRandom()
        self._owns_enforcer = enforcer is None
        self._enforcer = enforcer if enforcer is not None else _default_enforcer()
        self._instances: dict[str, _Instance] = {}
        self._streams: list[EventStream] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._closed = False

    # ------------------------------------------------------------------ registry

    def names(self) -> list[str]:
        """Names of the registered instances, in the order they were added."""
        return list(self._instances)

    @property
    def limit_mechanism(self) -> Mechanism:
        """How resource limits are enforced on this host (``GET /v1/capacity`` reports it)."""
        return self._enforcer.mechanism

    def _get(self, name: str) -> _Instance:
        if self._closed:
            raise SupervisorError("the supervisor is closed")
        try:
            return self._instances[name]
        except KeyError:
            raise UnknownInstance(f"no instance named {name!r}") from None

    async def add(self, spec: InstanceSpec) -> InstanceStatus:
        """Register an instance; re-adopt its KDF if one from an earlier supervisor still runs.

        A KDF is re-adopted only if the pid in the state file is alive with the recorded start
        time and command line; anything else (a recycled pid) is neither adopted nor signalled.
        Does not start anything.
        """
        if self._closed:
            raise SupervisorError("the supervisor is closed")
        if spec.name in self._instances:
            raise InvalidState(f"an instance named {spec.name!r} already exists")
        ensure_private_dir(spec.run_dir)
        spec.data_dir.mkdir(parents=True, exist_ok=True)
        inst = _Instance(spec)
        inst.stored = self._load_stored_config(spec)
        self._refresh_redactor(inst)
        self._instances[spec.name] = inst
        self._adopt_if_alive(inst)
        inst.monitor = asyncio.get_running_loop().create_task(self._monitor(inst))
        return self.status(spec.name)

    async def remove(self, name: str) -> None:
        """Stop the instance's KDF (gracefully) and forget the instance. Log files are kept."""
        await self.stop(name)
        inst = self._get(name)
        if (op := self._active_op(inst)) is not None:
            raise InvalidState(f"{name}: a {op.kind} started while removing; try again")
        del self._instances[name]
        self._cancel_timer(inst)
        if inst.monitor is not None:
            inst.monitor.cancel()
        self._release_limits(inst)
        self._emit(inst, EventKind.STATE, detail="removed")

    def _release_limits(self, inst: _Instance) -> None:
        try:
            self._enforcer.release(inst.limit_key)
        except OSError as exc:
            _log.warning("instance %s: releasing its limits failed: %s", inst.spec.name, exc)

    # ------------------------------------------------------------------ status

    def status(self, name: str) -> InstanceStatus:
        """A snapshot of the instance. Never waits (takes no lock) and holds no secret."""
        inst = self._get(name)
        proc = inst.process
        sample = inst.health if proc is not None and inst.health is not None else None
        if sample is not None and proc is not None and sample.pid != proc.pid:
            sample = None
        started = inst.started_wall if proc is not None else None
        return InstanceStatus(
            name=name,
            state=inst.state,
            pid=proc.pid if proc is not None else None,
            started_at=datetime.fromtimestamp(started, UTC) if started is not None else None,
            uptime_s=max(0.0, time.time() - started) if started is not None else None,
            restarts=inst.machine.restarts,
            last_exit=inst.last_exit,
            kdf_version=inst.kdf_version if proc is not None else None,
            rpc_port=inst.spec.rpc_port,
            cpu_percent=sample.cpu_percent if sample else None,
            rss_bytes=sample.rss_bytes if sample else None,
            open_fds=sample.open_fds if sample else None,
            data_dir=str(inst.spec.data_dir),
            limits=self._limits_status(inst),
        )

    def _limits_status(self, inst: _Instance) -> InstanceLimits:
        limits = inst.spec.limits or ResourceLimits()
        enforcement = inst.enforcement if inst.process is not None else None
        if enforcement is None:
            return InstanceLimits(
                memory_bytes=limits.memory_bytes,
                cpu=limits.cpu,
                open_files=limits.open_files,
                mechanism=self._enforcer.mechanism,
                in_force=False,
                detail=f"no KDF process; its next start is limited by {self._enforcer.mechanism}",
            )
        return InstanceLimits(
            memory_bytes=limits.memory_bytes,
            cpu=limits.cpu,
            open_files=limits.open_files,
            mechanism=enforcement.mechanism,
            in_force=True,
            memory_enforced=enforcement.memory_enforced,
            cpu_enforced=enforcement.cpu_enforced,
            detail=enforcement.detail,
            cgroup=enforcement.cgroup,
            unit=enforcement.unit,
        )

    def statuses(self) -> list[InstanceStatus]:
        """:meth:`status` of every instance."""
        return [self.status(name) for name in self._instances]

    # ------------------------------------------------------------------ config

    def stored_config(self, name: str) -> KdfStartupConfig:
        """The config the next start will use (holds secrets: redact before showing)."""
        inst = self._get(name)
        if inst.stored is None:
            raise NoStoredConfig(f"{name}: no stored startup config")
        return inst.stored

    async def set_config(self, name: str, config: KdfStartupConfig) -> None:
        """Validate and store the config used by the next start (a running KDF is untouched).

        A missing ``rpc_password`` is generated (KDF's policy-compliant); ``https: true`` is
        refused because the supervisor and the daemon talk to KDF over plain HTTP on loopback.
        """
        inst = self._get(name)
        self._store_config(inst, self._prepare_config(config))

    def _prepare_config(self, config: KdfStartupConfig) -> KdfStartupConfig:
        if config.https:
            raise KdfConfigError(
                "https", True, "false or absent: terminate TLS in the daemon, KDF stays on HTTP"
            )
        if config.rpc_password is None:
            config = msgspec.structs.replace(config, rpc_password=generate_rpc_password())
        validate_startup_config(config)
        return config

    def _store_config(self, inst: _Instance, config: KdfStartupConfig) -> None:
        write_private(
            inst.spec.run_dir / STORED_CONFIG_FILE, encode_startup_config(config), durable=True
        )
        inst.stored = config
        self._refresh_redactor(inst)

    def _load_stored_config(self, spec: InstanceSpec) -> KdfStartupConfig | None:
        path = spec.run_dir / STORED_CONFIG_FILE
        try:
            return decode_startup_config(path.read_bytes())
        except FileNotFoundError:
            return None
        except KdfConfigError as exc:
            _log.warning("instance %s: ignoring unusable stored config: %s", spec.name, exc)
            return None

    def _refresh_redactor(self, inst: _Instance) -> None:
        secrets: list[str] = []
        for config in (inst.stored,):
            if config is None:
                continue
            for value in (config.passphrase, config.rpc_password, config.wallet_password):
                if isinstance(value, str):
                    secrets.append(value)
        if inst.password:
            secrets.append(inst.password)
        inst.redactor = Redactor(secrets)

    # ------------------------------------------------------------------ operations

    def _begin(
        self, inst: _Instance, kind: str, work: Coroutine[Any, Any, InstanceStatus]
    ) -> _Operation:
        op = _Operation(kind, asyncio.get_running_loop().create_task(self._run_op(inst, work)))
        inst.op = op
        op.task.add_done_callback(functools.partial(self._op_done, inst, op, work))
        return op

    def _op_done(
        self,
        inst: _Instance,
        op: _Operation,
        work: Coroutine[Any, Any, InstanceStatus],
        task: asyncio.Task[InstanceStatus],
    ) -> None:
        # Cleared here, not in the coroutine: a task cancelled before its first step never runs
        # its own finally clause.
        if inst.op is op:
            inst.op = None
        if task.cancelled():
            work.close()  # never started: nothing to undo, and no "never awaited" warning
        else:
            task.exception()  # outcomes reach callers via _join; mark it seen regardless

    def _active_op(self, inst: _Instance) -> _Operation | None:
        op = inst.op
        if op is not None and op.task.done():
            inst.op = None
            return None
        return op

    async def _run_op(
        self, inst: _Instance, work: Coroutine[Any, Any, InstanceStatus]
    ) -> InstanceStatus:
        try:
            return await work
        except asyncio.CancelledError:
            op = inst.op
            if op is not None and op.preempted:
                raise InvalidState(f"{inst.spec.name}: {op.kind} interrupted by a stop") from None
            raise

    async def _join(self, inst: _Instance, op: _Operation) -> InstanceStatus:
        """Wait for ``op`` to finish and share its outcome, without being able to cancel it."""
        try:
            return await asyncio.shield(op.task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if op.task.cancelled() and (current is None or not current.cancelling()):
                raise InvalidState(f"{inst.spec.name}: {op.kind} interrupted by a stop") from None
            raise

    async def start(self, name: str, config: KdfStartupConfig | None = None) -> InstanceStatus:
        """Start the instance with ``config`` (stored for later) or the stored config.

        Returns once KDF is ``running``. Starting a running instance with no new config is a
        no-op; a start during a start joins it. A manual start clears ``failed``. Raises
        :class:`StartFailed` when KDF does not become ready (it is then in ``backoff`` or
        ``failed``), :class:`NoStoredConfig`, or :class:`InvalidState`.
        """
        inst = self._get(name)
        prepared = self._prepare_config(config) if config is not None else None
        op = self._active_op(inst)
        if op is not None:
            if op.kind in _START_KINDS and (prepared is None or prepared == inst.stored):
                return await self._join(inst, op)
            raise InvalidState(f"{name}: a {op.kind} is in progress")
        if inst.state in (InstanceState.RUNNING, InstanceState.STARTING):
            if prepared is None or prepared == inst.stored:
                return self.status(name)
            raise InvalidState(f"{name} is {inst.state}; restart it to apply a new config")
        if inst.state is InstanceState.UPDATING:
            raise InvalidState(f"{name} is updating")
        op = self._begin(inst, "start", self._do_start(inst, prepared, manual=True))
        return await self._join(inst, op)

    async def stop(self, name: str) -> InstanceStatus:
        """Stop the instance: ``stop`` RPC, then SIGINT, then SIGKILL to its process group.

        Each step waits at most its timeout. Stopping a stopped instance is a no-op; stopping
        ``backoff`` or ``failed`` cancels the pending restart and leaves it ``stopped``. A stop
        interrupts a start or restart in progress.
        """
        inst = self._get(name)
        while (op := self._active_op(inst)) is not None:
            if op.kind == "stop":
                return await self._join(inst, op)
            if op.kind not in _PREEMPTIBLE_KINDS:
                raise InvalidState(f"{name}: a {op.kind} is in progress")
            op.preempted = True
            op.task.cancel()
            await asyncio.wait([op.task])
        op = self._begin(inst, "stop", self._do_stop(inst))
        return await self._join(inst, op)

    async def restart(
        self, name: str, config: KdfStartupConfig | None = None, *, updating: bool = False
    ) -> InstanceStatus:
        """Stop (if a KDF runs) then start, with ``config`` or the stored config.

        With ``updating`` (a KDF update rolling through the instances) the instance is in
        ``updating`` from the moment the old KDF is told to stop until the new one is spawned
        (then ``starting``, ``running`` as usual). A restart during a restart joins it; during
        any other operation it is a conflict.
        """
        inst = self._get(name)
        prepared = self._prepare_config(config) if config is not None else None
        op = self._active_op(inst)
        if op is not None:
            if op.kind == "restart" and prepared is None:
                return await self._join(inst, op)
            raise InvalidState(f"{name}: a {op.kind} is in progress")
        if prepared is None and inst.stored is None:
            raise NoStoredConfig(f"{name}: no stored startup config")
        op = self._begin(inst, "restart", self._do_restart(inst, prepared, updating=updating))
        return await self._join(inst, op)

    async def _do_start(
        self, inst: _Instance, config: KdfStartupConfig | None, *, manual: bool
    ) -> InstanceStatus:
        if config is not None:
            self._store_config(inst, config)
        if inst.stored is None:
            raise NoStoredConfig(f"{inst.spec.name}: no stored startup config")
        self._cancel_timer(inst)
        if manual:
            inst.machine.manual_start()
        if inst.process is not None:
            # Only reachable through a preempted operation that left a live process behind.
            await self._terminate(inst, inst.process, graceful=False)
        return await self._spawn_until_ready(inst)

    async def _do_stop(self, inst: _Instance) -> InstanceStatus:
        self._cancel_timer(inst)
        proc = inst.process
        if proc is not None:
            self._transition(inst, InstanceState.STOPPING)
            await self._terminate(inst, proc, graceful=True)
        if inst.state is not InstanceState.STOPPED:
            self._transition(inst, InstanceState.STOPPED)
        return self.status(inst.spec.name)

    async def _do_restart(
        self, inst: _Instance, config: KdfStartupConfig | None, *, updating: bool
    ) -> InstanceStatus:
        if updating:
            await self._do_update_stop(inst)
        else:
            await self._do_stop(inst)
        return await self._do_start(inst, config, manual=True)

    async def _do_update_stop(self, inst: _Instance) -> None:
        self._cancel_timer(inst)
        self._transition(inst, InstanceState.UPDATING)
        proc = inst.process
        if proc is not None:
            inst.exit_reason = "stopped for an update"
            await self._terminate(inst, proc, graceful=True)

    # ------------------------------------------------------------------ spawn and readiness

    def _effective_config(self, inst: _Instance) -> KdfStartupConfig:
        assert inst.stored is not None
        changes: dict[str, Any] = {"rpcport": inst.spec.rpc_port}
        if inst.stored.dbdir is None:
            changes["dbdir"] = str(inst.spec.data_dir)
        return msgspec.structs.replace(inst.stored, **changes)

    def _child_env(self, inst: _Instance) -> dict[str, str]:
        env = {key: os.environ[key] for key in INHERITED_ENV if key in os.environ}
        env.update(inst.spec.env)
        return env

    def _write_if_changed(self, inst: _Instance, path: Path, data: bytes) -> None:
        # The same config is rewritten on every restart; skipping identical writes keeps the
        # respawn path short.
        if inst.written.get(path) == data and path.exists():
            return
        write_private(path, data)
        inst.written[path] = data

    def _spawn(self, inst: _Instance, config: KdfStartupConfig) -> KdfProcess:
        spec = inst.spec
        ensure_private_dir(spec.run_dir)
        spec.data_dir.mkdir(parents=True, exist_ok=True)
        env = self._child_env(inst)
        conf_path = spec.run_dir / ACTIVE_CONFIG_FILE
        coins_path = spec.run_dir / COINS_FILE
        self._write_if_changed(inst, conf_path, encode_startup_config(config.without_coins()))
        env["MM_CONF_PATH"] = str(conf_path)
        if config.coins is not None:
            self._write_if_changed(inst, coins_path, msgspec.json.encode(config.coins))
            env["MM_COINS_PATH"] = str(coins_path)
        else:
            inst.written.pop(coins_path, None)
            remove_quietly(coins_path)
        if spec.run_as is not None:
            self._hand_over_files(inst, conf_path, coins_path)
        plan = self._enforcer.prepare(inst.limit_key, spec.limits or ResourceLimits())
        log_fd = open_log_for_append(spec.log_path)
        try:
            pid = spawn(
                plan.wrap([str(spec.binary_path)]),
                cwd=spec.data_dir,
                env=env,
                log_fd=log_fd,
                preexec=plan.preexec,
                run_as=spec.run_as,
            )
        finally:
            os.close(log_fd)
        started_wall = time.time()
        self._emit(inst, EventKind.SPAWNED, pid=pid)
        identity = spawned_identity(pid)
        proc = KdfProcess(identity, is_child=True, on_exit=self._exit_callback(inst))
        self._attach(inst, proc, identity, _rpc_host(config), config.rpc_password)
        # psutil's create_time rests on a whole-second boot time; our own clock is exact.
        inst.started_wall = started_wall
        self._record_state(inst, identity)
        _log.info("instance %s: spawned KDF pid %d", spec.name, pid)
        self._attach_limits(inst, pid)
        proc.watch()
        return proc

    def _hand_over_files(self, inst: _Instance, conf_path: Path, coins_path: Path) -> None:
        """Let the run-as user read its config files and own its data directory."""
        spec = inst.spec
        assert spec.run_as is not None
        uid, gid = spec.run_as.uid, spec.run_as.gid
        spec.run_dir.chmod(0o711)
        for path in (conf_path, coins_path):
            with contextlib.suppress(FileNotFoundError):
                os.chown(path, uid, gid)
        stat = spec.data_dir.stat()
        if (stat.st_uid, stat.st_gid) != (uid, gid):
            # First start as this user (or a new user): take over what an earlier run left.
            for root, dirs, files in os.walk(spec.data_dir):
                for entry in (*dirs, *files):
                    os.chown(Path(root) / entry, uid, gid, follow_symlinks=False)
            os.chown(spec.data_dir, uid, gid)

    def _attach_limits(self, inst: _Instance, pid: int) -> None:
        try:
            inst.enforcement = self._enforcer.attach(inst.limit_key, pid)
        except (OSError, LimitsError) as exc:
            # The launch plan's pre-exec already applied the limits; attaching only confirms
            # them, so the process keeps running and status says they are not known in force.
            inst.enforcement = None
            _log.warning("instance %s: attaching limits to pid %d: %s", inst.spec.name, pid, exc)

    def _attach(
        self,
        inst: _Instance,
        proc: KdfProcess,
        identity: ProcessIdentity,
        host: str,
        password: str | None,
    ) -> None:
        inst.process = proc
        inst.rpc_host = host
        inst.transport = KdfTransport(host, inst.spec.rpc_port)
        inst.password = password
        inst.auth_failures = 0
        inst.kdf_version = None
        inst.started_wall = identity.create_time
        inst.health = None
        try:
            inst.ps = psutil.Process(identity.pid)
        except psutil.NoSuchProcess:
            inst.ps = None
        self._refresh_redactor(inst)

    def _record_state(self, inst: _Instance, identity: ProcessIdentity) -> None:
        record = StateRecord(
            pid=identity.pid,
            create_time=identity.create_time,
            cmdline=list(identity.cmdline),
            rpc_host=inst.rpc_host,
            rpc_port=inst.spec.rpc_port,
        )
        write_private(inst.spec.run_dir / STATE_FILE, msgspec.json.encode(record))

    def _mark_ready(self, inst: _Instance, proc: KdfProcess) -> None:
        inst.machine.ready(self._clock())
        self._emit_state(inst)
        # Record the command line now that KDF is up (a launcher prefix has exec'd KDF by now);
        # re-adoption compares it.
        current = identity_of(proc.pid)
        if current is not None and current.matches(proc.identity):
            proc.identity = current
            self._record_state(inst, current)

    async def _spawn_until_ready(self, inst: _Instance) -> InstanceStatus:
        name = inst.spec.name
        inst.machine.spawned(self._clock())
        self._emit_state(inst)
        try:
            proc = self._spawn(inst, self._effective_config(inst))
        except (OSError, subprocess.SubprocessError, LimitsError) as exc:
            # SubprocessError: the limits' pre-exec or the run-as switch failed in the child.
            detail = exc.strerror if isinstance(exc, OSError) else str(exc)
            reason = f"spawn failed: {detail or type(exc).__name__}"
            inst.last_exit = ExitInfo(code=None, signal=None, at=_now_utc(), reason=reason)
            self._emit(inst, EventKind.EXITED, exit=inst.last_exit)
            self._after_failed_start(inst, None, credentials_refused=False)
            raise StartFailed(f"{name}: {reason}") from None
        try:
            await self._wait_ready(inst, proc)
        except _NotReadyError as exc:
            if not proc.has_exited:
                inst.exit_reason = f"killed: {exc.reason}"
                await self._terminate(inst, proc, graceful=False)
            self._after_failed_start(
                inst, proc.returncode, credentials_refused=exc.credentials_refused
            )
            raise StartFailed(f"{name}: {exc.reason}") from None
        self._mark_ready(inst, proc)
        _log.info("instance %s: running (pid %d, KDF %s)", name, proc.pid, inst.kdf_version)
        return self.status(name)

    async def _wait_ready(self, inst: _Instance, proc: KdfProcess) -> None:
        transport = inst.transport
        assert transport is not None
        timeouts = inst.spec.timeouts
        began = self._clock()
        interval = _READY_POLL_FIRST_S
        while True:
            if proc.has_exited:
                raise _NotReadyError(f"{self._exit_text(inst)} during start")
            if inst.machine.tick(self._clock()) is Action.START_TIMEOUT:
                raise _NotReadyError(f"not ready within {timeouts.start_s:g} s")
            deadline = inst.machine.start_deadline or self._clock()
            remaining = max(0.001, deadline - self._clock())
            try:
                response = await transport.post(
                    rpc.version_request(), timeout=min(timeouts.probe_s, remaining)
                )
                inst.kdf_version = rpc.parse_version(response.status, response.body).result
                break
            except (_TransportUnreachable, KdfProtocolError):
                pass
            await proc.wait(min(interval, remaining))
            if self._clock() - began > _READY_POLL_FAST_PHASE_S:
                interval = min(interval * 1.5, _READY_POLL_MAX_S)
        await self._check_credentials(inst, transport)
        if proc.has_exited:
            # Something else answered on the port (ours died, e.g. exit 101: port busy).
            raise _NotReadyError(f"{self._exit_text(inst)} during start")

    async def _check_credentials(self, inst: _Instance, transport: KdfTransport) -> None:
        if inst.password is None:
            raise _NotReadyError("no rpc_password known for this KDF", credentials_refused=True)
        try:
            response = await transport.post(
                rpc.get_enabled_coins_request(inst.password), timeout=inst.spec.timeouts.probe_s
            )
            rpc.parse_enabled_coins(response.status, response.body)
        except KdfRpcError as exc:
            if exc.is_auth_failure:
                raise _NotReadyError(
                    "KDF refused the configured rpc_password", credentials_refused=True
                ) from None
            raise _NotReadyError(f"authenticated check failed: {exc.message}") from None
        except (_TransportUnreachable, KdfProtocolError) as exc:
            raise _NotReadyError(f"authenticated check failed: {exc}") from None

    def _exit_text(self, inst: _Instance) -> str:
        return inst.last_exit.reason if inst.last_exit is not None else "exited"

    def _after_failed_start(
        self, inst: _Instance, returncode: int | None, *, credentials_refused: bool
    ) -> None:
        now = self._clock()
        if credentials_refused:
            # Retrying would only burn KDF's 10 attempts before it bans 127.0.0.1.
            inst.machine.give_up(now, "KDF refused the rpc_password; not retrying")
            self._emit_state(inst, inst.machine.reason)
            return
        code = returncode if returncode is not None and returncode >= 0 else None
        self._apply_restart_policy(inst, now, code)

    def _apply_restart_policy(self, inst: _Instance, now: float, exit_code: int | None) -> None:
        decision = inst.machine.crashed(now, exit_code, self._rng.random)
        self._emit_state(inst, decision.reason)
        if decision.restart:
            self._emit(
                inst,
                EventKind.RESTART_SCHEDULED,
                delay_s=decision.delay_s,
                detail=decision.reason,
            )
            self._arm_timer(inst)
        else:
            _log.warning("instance %s: %s", inst.spec.name, decision.reason)

    # ------------------------------------------------------------------ timers

    def _arm_timer(self, inst: _Instance) -> None:
        self._cancel_timer(inst)
        deadline = inst.machine.next_deadline()
        if deadline is None or inst.state is not InstanceState.BACKOFF:
            return
        delay = max(0.0, deadline - self._clock())
        inst.timer = asyncio.get_running_loop().call_later(delay, self._on_timer, inst)

    def _cancel_timer(self, inst: _Instance) -> None:
        if inst.timer is not None:
            inst.timer.cancel()
            inst.timer = None

    def _on_timer(self, inst: _Instance) -> None:
        inst.timer = None
        if self._closed or self._active_op(inst) or self._instances.get(inst.spec.name) is not inst:
            return
        if inst.machine.tick(self._clock()) is Action.SPAWN:
            self._begin(inst, "auto", self._do_start(inst, None, manual=False))
        else:
            self._arm_timer(inst)

    # ------------------------------------------------------------------ exits and stopping

    def _exit_callback(self, inst: _Instance) -> Callable[[KdfProcess, int | None], None]:
        def on_exit(proc: KdfProcess, returncode: int | None) -> None:
            self._on_process_exit(inst, proc, returncode)

        return on_exit

    def _on_process_exit(self, inst: _Instance, proc: KdfProcess, returncode: int | None) -> None:
        if inst.process is not proc:
            return
        code, sig, text = _describe_returncode(returncode)
        reason = f"{inst.exit_reason}; {text}" if inst.exit_reason else text
        inst.exit_reason = None
        detail: str | None = None
        try:
            cause = self._enforcer.exit_cause(inst.limit_key)
        except (OSError, subprocess.SubprocessError) as exc:
            _log.warning("instance %s: reading the limits' exit cause: %s", inst.spec.name, exc)
            cause = None
        if cause is not None and cause.reason == MEMORY_LIMIT_REASON:
            reason, detail = MEMORY_LIMIT_REASON, f"{cause.detail}; {text}"
            # A memory kill is a crash even if it raced a stop: the restart policy must see it.
            code = None
        inst.last_exit = ExitInfo(
            code=code, signal=sig, at=_now_utc(), reason=reason, pid=proc.pid, detail=detail
        )
        _log.info("instance %s: KDF pid %d %s", inst.spec.name, proc.pid, reason)
        self._release(inst)
        self._emit(inst, EventKind.EXITED, pid=proc.pid, exit=inst.last_exit)
        if self._active_op(inst) is not None or self._closed:
            return  # the operation in flight decides what the exit means
        if inst.state not in (InstanceState.RUNNING, InstanceState.STARTING):
            return
        now = self._clock()
        if code == 0:
            # KDF was told to stop (its stop RPC or SIGINT): honour it, do not restart.
            inst.machine.transition(InstanceState.STOPPED, now)
            self._emit_state(inst)
            return
        self._apply_restart_policy(inst, now, code)

    def _release(self, inst: _Instance) -> None:
        inst.process = None
        inst.ps = None
        inst.enforcement = None
        transport, inst.transport = inst.transport, None
        if transport is not None:
            self._in_background(transport.close())
        remove_quietly(inst.spec.run_dir / STATE_FILE)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _terminate(self, inst: _Instance, proc: KdfProcess, *, graceful: bool) -> None:
        """Stop escalation: ``stop`` RPC, wait, SIGINT, wait, SIGKILL the group, wait."""
        timeouts = inst.spec.timeouts
        if inst.exit_reason is None:
            inst.exit_reason = "stopped on request" if graceful else "killed"
        if graceful:
            if await self._send_stop_rpc(inst) and await proc.wait(timeouts.stop_rpc_s):
                return
            if proc.send_signal(signal.SIGINT) and await proc.wait(timeouts.sigint_s):
                return
        proc.kill_group()
        if await proc.wait(timeouts.sigkill_s):
            return
        raise SupervisorError(
            f"{inst.spec.name}: pid {proc.pid} survived SIGKILL for {timeouts.sigkill_s:g} s"
        )

    async def _send_stop_rpc(self, inst: _Instance) -> bool:
        transport, password = inst.transport, inst.password
        if transport is None or password is None or inst.auth_failures >= _MAX_AUTH_FAILURES:
            return False
        try:
            response = await transport.post(
                rpc.stop_request(password), timeout=inst.spec.timeouts.probe_s
            )
            rpc.parse_result(response.status, response.body)
        except (_TransportUnreachable, KdfProtocolError):
            return False
        return True

    # ------------------------------------------------------------------ re-adoption

    def _adopt_if_alive(self, inst: _Instance) -> None:
        spec = inst.spec
        record = read_state(spec.run_dir / STATE_FILE)
        if record is None:
            return
        expected = ProcessIdentity(record.pid, record.create_time, tuple(record.cmdline))
        current = identity_of(record.pid)
        if current is None or not current.matches(expected):
            _log.info(
                "instance %s: not adopting pid %d (gone or a different process)",
                spec.name,
                record.pid,
            )
            remove_quietly(spec.run_dir / STATE_FILE)
            return
        password = self._active_password(spec)
        try:
            is_child = psutil.Process(record.pid).ppid() == os.getpid()
        except psutil.Error:
            is_child = False
        proc = KdfProcess(current, is_child=is_child, on_exit=self._exit_callback(inst))
        self._attach(inst, proc, current, record.rpc_host, password)
        try:
            self._enforcer.prepare(inst.limit_key, spec.limits or ResourceLimits())
        except (OSError, LimitsError) as exc:
            _log.warning("instance %s: preparing limits for adoption: %s", spec.name, exc)
        else:
            self._attach_limits(inst, record.pid)
        inst.machine.adopted(self._clock(), max(0.0, time.time() - current.create_time))
        _log.info("instance %s: re-adopted KDF pid %d", spec.name, record.pid)
        self._emit(inst, EventKind.ADOPTED, pid=record.pid)
        self._emit_state(inst)
        proc.watch()
        if inst.process is proc:
            self._begin(inst, "adopt", self._confirm_adopted(inst, proc))

    def _active_password(self, spec: InstanceSpec) -> str | None:
        # The file the running KDF was started with, not the stored config (which set_config may
        # have replaced since): the only password that KDF is sure to accept.
        try:
            return decode_startup_config(
                (spec.run_dir / ACTIVE_CONFIG_FILE).read_bytes()
            ).rpc_password
        except (FileNotFoundError, KdfConfigError):
            return None

    async def _confirm_adopted(self, inst: _Instance, proc: KdfProcess) -> InstanceStatus:
        try:
            await self._wait_ready(inst, proc)
        except _NotReadyError as exc:
            if not proc.has_exited:
                inst.exit_reason = f"killed: {exc.reason}"
                await self._terminate(inst, proc, graceful=False)
            self._after_failed_start(
                inst, proc.returncode, credentials_refused=exc.credentials_refused
            )
            raise StartFailed(f"{inst.spec.name}: adopted KDF {exc.reason}") from None
        self._mark_ready(inst, proc)
        return self.status(inst.spec.name)

    # ------------------------------------------------------------------ RPC and health

    async def rpc(self, name: str, body: bytes, *, timeout: float | None = None) -> RawResponse:  # noqa: ASYNC109
        """Send one KDF RPC call (object or batch) with the real ``userpass`` injected.

        Any ``userpass`` in ``body`` is replaced. Returns KDF's response as is, errors included.
        Raises :class:`NotRunning`, :class:`KdfUnreachable`, or
        :class:`~kdf_remote.kdf.KdfProtocolError` for a body that is not a JSON object or array.
        """
        inst = self._get(name)
        transport, password = inst.transport, inst.password
        if inst.state is not InstanceState.RUNNING or transport is None or password is None:
            raise NotRunning(f"{name} is {inst.state}")
        if inst.auth_failures >= _MAX_AUTH_FAILURES:
            raise SupervisorError(
                f"{name}: KDF rejected the stored rpc_password {inst.auth_failures} times; "
                "calls are suspended until it is restarted (KDF bans 127.0.0.1 after 10)"
            )
        payload = rpc.with_userpass(body, password)
        try:
            response = await transport.post(payload, timeout=timeout or inst.spec.timeouts.rpc_s)
        except _TransportUnreachable as exc:
            raise KdfUnreachable(f"{name}: {exc}") from None
        if response.status in (403, 500) and b"Userpass is invalid" in response.body:
            inst.auth_failures += 1
        return response

    async def sample_health(self, name: str) -> HealthSample:
        """Sample cpu, rss, open fds, threads and the ``version`` round trip now."""
        inst = self._get(name)
        proc, ps = inst.process, inst.ps
        if proc is None or ps is None:
            raise NotRunning(f"{name} has no KDF process")
        try:
            with ps.oneshot():
                cpu = ps.cpu_percent(None)
                rss = ps.memory_info().rss
                fds = ps.num_fds()
                threads = ps.num_threads()
        except psutil.Error:
            raise NotRunning(f"{name}: KDF pid {proc.pid} is gone") from None
        rtt_ms: float | None = None
        transport = inst.transport
        if transport is not None and inst.state is InstanceState.RUNNING:
            began = time.perf_counter()
            try:
                response = await transport.post(
                    rpc.version_request(), timeout=inst.spec.timeouts.probe_s
                )
                rpc.parse_version(response.status, response.body)
                rtt_ms = (time.perf_counter() - began) * 1000.0
            except (_TransportUnreachable, KdfProtocolError):
                rtt_ms = None
        sample = HealthSample(
            name=name,
            at=_now_utc(),
            state=inst.state,
            pid=proc.pid,
            cpu_percent=cpu,
            rss_bytes=rss,
            open_fds=fds,
            threads=threads,
            rpc_rtt_ms=rtt_ms,
        )
        inst.health = sample
        return sample

    async def _monitor(self, inst: _Instance) -> None:
        spec = inst.spec
        next_health = self._clock() + spec.health_interval_s
        while True:
            await asyncio.sleep(spec.log_check_interval_s)
            try:
                await self._check_log(inst)
                if self._clock() >= next_health or _lacks_first_sample(inst):
                    next_health = self._clock() + spec.health_interval_s
                    if inst.process is not None:
                        with contextlib.suppress(SupervisorError):
                            await self.sample_health(spec.name)
            except OSError as exc:
                _log.warning("instance %s: monitor: %s", spec.name, exc)

    async def _check_log(self, inst: _Instance) -> None:
        spec = inst.spec
        try:
            size = spec.log_path.stat().st_size
        except FileNotFoundError:
            return
        if size >= spec.log_max_bytes and await asyncio.to_thread(
            rotate_if_needed, spec.log_path, spec.log_max_bytes, spec.log_backups
        ):
            self._emit(inst, EventKind.LOG_ROTATED, detail=f"rotated at {size} bytes")

    # ------------------------------------------------------------------ logs

    async def read_log_tail(self, name: str, n: int) -> list[str]:
        """The last ``n`` lines of the instance's KDF log (at most 10 000), secrets redacted."""
        inst = self._get(name)
        return await asyncio.to_thread(read_tail, inst.spec.log_path, n, inst.redactor)

    async def follow_log(self, name: str, *, from_start: bool = False) -> AsyncGenerator[str, None]:
        """Lines appended to the instance's KDF log from now on (redacted), across rotations and
        KDF restarts. Runs until the consumer stops iterating."""
        inst = self._get(name)
        follower = LogFollower(inst.spec.log_path, inst.redactor, from_start=from_start)
        try:
            while True:
                follower.redactor = inst.redactor  # secrets change when KDF restarts
                for line in follower.read_new():
                    yield line
                await asyncio.sleep(_LOG_FOLLOW_POLL_S)
        finally:
            follower.close()

    # ------------------------------------------------------------------ events

    def subscribe(self, name: str | None = None) -> EventStream:
        """Events of one instance (or all), from this call on."""
        if name is not None:
            self._get(name)
        stream = EventStream(self, name)
        self._streams.append(stream)
        return stream

    def _unsubscribe(self, stream: EventStream) -> None:
        with contextlib.suppress(ValueError):
            self._streams.remove(stream)

    def _emit(
        self,
        inst: _Instance,
        kind: EventKind,
        *,
        pid: int | None = None,
        exit: ExitInfo | None = None,
        delay_s: float | None = None,
        detail: str | None = None,
    ) -> None:
        if not self._streams:
            return
        event = SupervisorEvent(
            kind=kind,
            name=inst.spec.name,
            state=inst.state,
            at=_now_utc(),
            monotonic=time.monotonic(),
            pid=pid,
            exit=exit,
            delay_s=delay_s,
            detail=detail,
        )
        for stream in list(self._streams):
            stream._offer(event)

    def _emit_state(self, inst: _Instance, detail: str | None = None) -> None:
        pid = inst.process.pid if inst.process is not None else None
        self._emit(inst, EventKind.STATE, pid=pid, detail=detail)

    def _transition(self, inst: _Instance, state: InstanceState) -> None:
        inst.machine.transition(state, self._clock())
        self._emit_state(inst)

    # ------------------------------------------------------------------ shutdown

    async def close(self, stop_instances: bool = False) -> None:
        """Shut the supervisor down.

        With ``stop_instances`` every KDF is stopped (gracefully, with escalation). Without it,
        KDF keeps running and its state file stays, so the next supervisor re-adopts it.
        """
        if self._closed:
            return
        instances = list(self._instances.values())
        if stop_instances:
            results = await asyncio.gather(
                *(self.stop(inst.spec.name) for inst in instances), return_exceptions=True
            )
            for inst, result in zip(instances, results, strict=True):
                if isinstance(result, BaseException):
                    _log.warning("instance %s: stop on close failed: %s", inst.spec.name, result)
        self._closed = True
        for inst in instances:
            self._cancel_timer(inst)
            if inst.op is not None:
                inst.op.task.cancel()
            if inst.monitor is not None:
                inst.monitor.cancel()
        pending: list[asyncio.Task[Any]] = [inst.op.task for inst in instances if inst.op]
        pending += [inst.monitor for inst in instances if inst.monitor is not None]
        if pending:
            await asyncio.wait(pending)
        # Without stop_instances KDF keeps running in its cgroup for the next supervisor to
        # re-adopt; with it, the cgroups of reaped KDFs are empty and are freed.
        reaped = [inst for inst in instances if stop_instances and inst.process is None]
        for inst in instances:
            if inst.process is not None:
                inst.process.detach()
                inst.process = None
            if inst.transport is not None:
                await inst.transport.close()
                inst.transport = None
        for inst in reaped:
            self._release_limits(inst)
        if self._owns_enforcer:
            self._enforcer.close()
        if self._background:
            await asyncio.wait(list(self._background))
        for stream in list(self._streams):
            stream._offer(None)


def _lacks_first_sample(inst: _Instance) -> bool:
    """A KDF that just reached ``running`` has no sample of its own yet.

    Sampling it on the next monitor pass (not a whole health interval later) gives ``status``
    its rss and open fds within a second of the start.
    """
    proc, sample = inst.process, inst.health
    return (
        proc is not None
        and inst.state is InstanceState.RUNNING
        and (sample is None or sample.pid != proc.pid)
    )
