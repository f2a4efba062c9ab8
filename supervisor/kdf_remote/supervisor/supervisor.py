"""The asyncio supervisor façade: named KDF instances, their lifecycle, RPC, health, events, logs.

Concurrency model. Each instance runs at most one *operation* at a time (start, stop, restart,
an automatic restart, or the readiness check of an adopted process), held in ``Instance.op``
(:mod:`.operations`). Checking and claiming that slot happens with no ``await`` in between, so it
is atomic on the event loop. A second request either joins the operation in flight (same intent:
start during a start, stop during a stop) or gets :class:`InvalidState`; a stop preempts a start
or restart (the start is cancelled, then the stop runs), so an operator can always stop a KDF
stuck in ``starting``. Spawning happens only inside an operation and only when no process exists,
hence exactly one KDF per instance. :meth:`Supervisor.status` and event streams never wait for an
operation.

Limits. A :class:`~.resource_limits.LimitEnforcer` is the only limits mechanism: each spawn is
prepared by it (argv prefix and a pre-exec hook, so limits hold from KDF's first instruction),
the pid is attached (also on re-adoption), an exit is asked whether the limits caused it
(reason ``memory_limit``, counted as a crash) and the instance's limits are released on remove.
Each instance is keyed in the enforcer by its name plus a hash of its run directory, so two
supervisors on one host (or a daemon and a test) never share a cgroup.

Secrets. Statuses, events, errors and log lines never carry a secret, and logs are redacted
when read. How the startup config reaches KDF without argv, and the run-as user, are in
:mod:`.spawn`.

Where the parts live: :mod:`.instance` (the per-instance runtime record), :mod:`.operations`
(the operation slot), :mod:`.config_store` (the stored startup config), :mod:`.spawn`
(spawning), :mod:`.readiness` (when KDF counts as running), :mod:`.stopping` (the stop
escalation), :mod:`.adoption` (the state file and re-adoption), :mod:`.health` (health samples),
:mod:`.events` (event fan-out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import subprocess
import time
from collections.abc import AsyncGenerator, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import psutil

from kdf_remote.kdf import rpc
from kdf_remote.kdf.config import KdfStartupConfig
from kdf_remote.kdf.errors import KdfUnreachable as _TransportUnreachable
from kdf_remote.kdf.transport import KdfTransport, RawResponse
from kdf_remote.supervisor import health
from kdf_remote.supervisor.adoption import (
    STATE_FILE,
    active_password,
    find_adoptable,
    is_our_child,
    record_state,
)
from kdf_remote.supervisor.config_store import (
    load_stored_config,
    prepare_config,
    refresh_redactor,
    store_config,
)
from kdf_remote.supervisor.errors import (
    InvalidState,
    KdfUnreachable,
    NoStoredConfig,
    NotRunning,
    StartFailed,
    SupervisorError,
    UnknownInstance,
)
from kdf_remote.supervisor.events import EventHub, EventStream
from kdf_remote.supervisor.files import ensure_private_dir, remove_quietly
from kdf_remote.supervisor.instance import MAX_AUTH_FAILURES, Instance
from kdf_remote.supervisor.logs import LogFollower, read_tail, rotate_if_needed
from kdf_remote.supervisor.machine import Action
from kdf_remote.supervisor.models import (
    EventKind,
    ExitInfo,
    HealthSample,
    InstanceLimits,
    InstanceState,
    InstanceStatus,
    now_utc,
)
from kdf_remote.supervisor.operations import (
    PREEMPTIBLE_KINDS,
    START_KINDS,
    active_op,
    begin,
    join,
)
from kdf_remote.supervisor.process import (
    KdfProcess,
    ProcessIdentity,
    describe_returncode,
    identity_of,
    spawned_identity,
)
from kdf_remote.supervisor.readiness import NotReadyError, wait_ready
from kdf_remote.supervisor.resource_limits import (
    MEMORY_LIMIT_REASON,
    LimitEnforcer,
    LimitsError,
    Mechanism,
)
from kdf_remote.supervisor.spawn import effective_config, launch, rpc_host
from kdf_remote.supervisor.spec import InstanceSpec, ResourceLimits
from kdf_remote.supervisor.stopping import terminate

__all__ = ["EventStream", "Supervisor"]

_log = logging.getLogger("kdf_remote.supervisor")

_LOG_FOLLOW_POLL_S = 0.2


def _default_enforcer() -> LimitEnforcer:
    try:
        return LimitEnforcer()
    except (OSError, LimitsError) as exc:
        # Detection found a mechanism it then could not set up (e.g. a read-only cgroup mount
        # that looked writable): the rlimit mechanism needs nothing from the host.
        _log.warning("limits: falling back to rlimit enforcement: %s", exc)
        return LimitEnforcer(Mechanism.RLIMIT)


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
        self._instances: dict[str, Instance] = {}
        self._events = EventHub()
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

    def _get(self, name: str) -> Instance:
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
        inst = Instance(spec)
        inst.stored = load_stored_config(spec)
        refresh_redactor(inst)
        self._instances[spec.name] = inst
        self._adopt_if_alive(inst)
        inst.monitor = asyncio.get_running_loop().create_task(self._monitor(inst))
        return self.status(spec.name)

    async def remove(self, name: str) -> None:
        """Stop the instance's KDF (gracefully) and forget the instance. Log files are kept."""
        await self.stop(name)
        inst = self._get(name)
        if (op := active_op(inst)) is not None:
            raise InvalidState(f"{name}: a {op.kind} started while removing; try again")
        del self._instances[name]
        self._cancel_timer(inst)
        if inst.monitor is not None:
            inst.monitor.cancel()
        self._release_limits(inst)
        self._emit(inst, EventKind.STATE, detail="removed")

    def _release_limits(self, inst: Instance) -> None:
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

    def _limits_status(self, inst: Instance) -> InstanceLimits:
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
        store_config(inst, prepare_config(config))

    # ------------------------------------------------------------------ operations

    async def start(self, name: str, config: KdfStartupConfig | None = None) -> InstanceStatus:
        """Start the instance with ``config`` (stored for later) or the stored config.

        Returns once KDF is ``running``. Starting a running instance with no new config is a
        no-op; a start during a start joins it. A manual start clears ``failed``. Raises
        :class:`StartFailed` when KDF does not become ready (it is then in ``backoff`` or
        ``failed``), :class:`NoStoredConfig`, or :class:`InvalidState`.
        """
        inst = self._get(name)
        prepared = prepare_config(config) if config is not None else None
        op = active_op(inst)
        if op is not None:
            if op.kind in START_KINDS and (prepared is None or prepared == inst.stored):
                return await join(inst, op)
            raise InvalidState(f"{name}: a {op.kind} is in progress")
        if inst.state in (InstanceState.RUNNING, InstanceState.STARTING):
            if prepared is None or prepared == inst.stored:
                return self.status(name)
            raise InvalidState(f"{name} is {inst.state}; restart it to apply a new config")
        if inst.state is InstanceState.UPDATING:
            raise InvalidState(f"{name} is updating")
        op = begin(inst, "start", self._do_start(inst, prepared, manual=True))
        return await join(inst, op)

    async def stop(self, name: str) -> InstanceStatus:
        """Stop the instance: ``stop`` RPC, then SIGINT, then SIGKILL to its process group.

        Each step waits at most its timeout. Stopping a stopped instance is a no-op; stopping
        ``backoff`` or ``failed`` cancels the pending restart and leaves it ``stopped``. A stop
        interrupts a start or restart in progress.
        """
        inst = self._get(name)
        while (op := active_op(inst)) is not None:
            if op.kind == "stop":
                return await join(inst, op)
            if op.kind not in PREEMPTIBLE_KINDS:
                raise InvalidState(f"{name}: a {op.kind} is in progress")
            op.preempted = True
            op.task.cancel()
            await asyncio.wait([op.task])
        op = begin(inst, "stop", self._do_stop(inst))
        return await join(inst, op)

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
        prepared = prepare_config(config) if config is not None else None
        op = active_op(inst)
        if op is not None:
            if op.kind == "restart" and prepared is None:
                return await join(inst, op)
            raise InvalidState(f"{name}: a {op.kind} is in progress")
        if prepared is None and inst.stored is None:
            raise NoStoredConfig(f"{name}: no stored startup config")
        op = begin(inst, "restart", self._do_restart(inst, prepared, updating=updating))
        return await join(inst, op)

    async def _do_start(
        self, inst: Instance, config: KdfStartupConfig | None, *, manual: bool
    ) -> InstanceStatus:
        if config is not None:
            store_config(inst, config)
        if inst.stored is None:
            raise NoStoredConfig(f"{inst.spec.name}: no stored startup config")
        self._cancel_timer(inst)
        if manual:
            inst.machine.manual_start()
        if inst.process is not None:
            # Only reachable through a preempted operation that left a live process behind.
            await terminate(inst, inst.process, graceful=False)
        return await self._spawn_until_ready(inst)

    async def _do_stop(self, inst: Instance) -> InstanceStatus:
        self._cancel_timer(inst)
        proc = inst.process
        if proc is not None:
            self._transition(inst, InstanceState.STOPPING)
            await terminate(inst, proc, graceful=True)
        if inst.state is not InstanceState.STOPPED:
            self._transition(inst, InstanceState.STOPPED)
        return self.status(inst.spec.name)

    async def _do_restart(
        self, inst: Instance, config: KdfStartupConfig | None, *, updating: bool
    ) -> InstanceStatus:
        if updating:
            await self._do_update_stop(inst)
        else:
            await self._do_stop(inst)
        return await self._do_start(inst, config, manual=True)

    async def _do_update_stop(self, inst: Instance) -> None:
        self._cancel_timer(inst)
        self._transition(inst, InstanceState.UPDATING)
        proc = inst.process
        if proc is not None:
            inst.exit_reason = "stopped for an update"
            await terminate(inst, proc, graceful=True)

    # ------------------------------------------------------------------ spawn and readiness

    def _spawn(self, inst: Instance, config: KdfStartupConfig) -> KdfProcess:
        spec = inst.spec
        pid = launch(inst, config, self._enforcer)
        started_wall = time.time()
        self._emit(inst, EventKind.SPAWNED, pid=pid)
        identity = spawned_identity(pid)
        proc = KdfProcess(identity, is_child=True, on_exit=self._exit_callback(inst))
        self._attach(inst, proc, identity, rpc_host(config), config.rpc_password)
        # psutil's create_time rests on a whole-second boot time; our own clock is exact.
        inst.started_wall = started_wall
        record_state(inst, identity)
        _log.info("instance %s: spawned KDF pid %d", spec.name, pid)
        self._attach_limits(inst, pid)
        proc.watch()
        return proc

    def _attach_limits(self, inst: Instance, pid: int) -> None:
        try:
            inst.enforcement = self._enforcer.attach(inst.limit_key, pid)
        except (OSError, LimitsError) as exc:
            # The launch plan's pre-exec already applied the limits; attaching only confirms
            # them, so the process keeps running and status says they are not known in force.
            inst.enforcement = None
            _log.warning("instance %s: attaching limits to pid %d: %s", inst.spec.name, pid, exc)

    def _attach(
        self,
        inst: Instance,
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
        refresh_redactor(inst)

    def _mark_ready(self, inst: Instance, proc: KdfProcess) -> None:
        inst.machine.ready(self._clock())
        self._emit_state(inst)
        # Record the command line now that KDF is up (a launcher prefix has exec'd KDF by now);
        # re-adoption compares it.
        current = identity_of(proc.pid)
        if current is not None and current.matches(proc.identity):
            proc.identity = current
            record_state(inst, current)

    async def _spawn_until_ready(self, inst: Instance) -> InstanceStatus:
        name = inst.spec.name
        inst.machine.spawned(self._clock())
        self._emit_state(inst)
        try:
            proc = self._spawn(inst, effective_config(inst))
        except (OSError, subprocess.SubprocessError, LimitsError) as exc:
            # SubprocessError: the limits' pre-exec or the run-as switch failed in the child.
            detail = exc.strerror if isinstance(exc, OSError) else str(exc)
            reason = f"spawn failed: {detail or type(exc).__name__}"
            inst.last_exit = ExitInfo(code=None, signal=None, at=now_utc(), reason=reason)
            self._emit(inst, EventKind.EXITED, exit=inst.last_exit)
            self._after_failed_start(inst, None, credentials_refused=False)
            raise StartFailed(f"{name}: {reason}") from None
        await self._await_ready(inst, proc, failure=f"{name}: ")
        _log.info("instance %s: running (pid %d, KDF %s)", name, proc.pid, inst.kdf_version)
        return self.status(name)

    def _after_failed_start(
        self, inst: Instance, returncode: int | None, *, credentials_refused: bool
    ) -> None:
        now = self._clock()
        if credentials_refused:
            # Retrying would only burn KDF's 10 attempts before it bans 127.0.0.1.
            inst.machine.give_up(now, "KDF refused the rpc_password; not retrying")
            self._emit_state(inst, inst.machine.reason)
            return
        code = returncode if returncode is not None and returncode >= 0 else None
        self._apply_restart_policy(inst, now, code)

    def _apply_restart_policy(self, inst: Instance, now: float, exit_code: int | None) -> None:
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

    def _arm_timer(self, inst: Instance) -> None:
        self._cancel_timer(inst)
        deadline = inst.machine.next_deadline()
        if deadline is None or inst.state is not InstanceState.BACKOFF:
            return
        delay = max(0.0, deadline - self._clock())
        inst.timer = asyncio.get_running_loop().call_later(delay, self._on_timer, inst)

    def _cancel_timer(self, inst: Instance) -> None:
        if inst.timer is not None:
            inst.timer.cancel()
            inst.timer = None

    def _on_timer(self, inst: Instance) -> None:
        inst.timer = None
        if self._closed or active_op(inst) or self._instances.get(inst.spec.name) is not inst:
            return
        if inst.machine.tick(self._clock()) is Action.SPAWN:
            begin(inst, "auto", self._do_start(inst, None, manual=False))
        else:
            self._arm_timer(inst)

    # ------------------------------------------------------------------ exits and stopping

    def _exit_callback(self, inst: Instance) -> Callable[[KdfProcess, int | None], None]:
        def on_exit(proc: KdfProcess, returncode: int | None) -> None:
            self._on_process_exit(inst, proc, returncode)

        return on_exit

    def _on_process_exit(self, inst: Instance, proc: KdfProcess, returncode: int | None) -> None:
        if inst.process is not proc:
            return
        code, sig, text = describe_returncode(returncode)
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
            code=code, signal=sig, at=now_utc(), reason=reason, pid=proc.pid, detail=detail
        )
        _log.info("instance %s: KDF pid %d %s", inst.spec.name, proc.pid, reason)
        self._release(inst)
        self._emit(inst, EventKind.EXITED, pid=proc.pid, exit=inst.last_exit)
        if active_op(inst) is not None or self._closed:
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

    def _release(self, inst: Instance) -> None:
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

    # ------------------------------------------------------------------ re-adoption

    def _adopt_if_alive(self, inst: Instance) -> None:
        spec = inst.spec
        found = find_adoptable(spec)
        if found is None:
            return
        record, current = found
        password = active_password(spec)
        is_child = is_our_child(record.pid)
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
            begin(inst, "adopt", self._confirm_adopted(inst, proc))

    async def _confirm_adopted(self, inst: Instance, proc: KdfProcess) -> InstanceStatus:
        await self._await_ready(inst, proc, failure=f"{inst.spec.name}: adopted KDF ")
        return self.status(inst.spec.name)

    async def _await_ready(self, inst: Instance, proc: KdfProcess, *, failure: str) -> None:
        """Wait until KDF is ready and mark it running.

        Raises:
            StartFailed: ``failure`` followed by the reason; KDF was killed if still alive, and
                the failed start recorded (restart policy, credentials refused).
        """
        try:
            await wait_ready(inst, proc, self._clock)
        except NotReadyError as exc:
            if not proc.has_exited:
                inst.exit_reason = f"killed: {exc.reason}"
                await terminate(inst, proc, graceful=False)
            self._after_failed_start(
                inst, proc.returncode, credentials_refused=exc.credentials_refused
            )
            raise StartFailed(f"{failure}{exc.reason}") from None
        self._mark_ready(inst, proc)

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
        if inst.auth_failures >= MAX_AUTH_FAILURES:
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
        return await health.sample_health(self._get(name))

    async def _monitor(self, inst: Instance) -> None:
        spec = inst.spec
        next_health = self._clock() + spec.health_interval_s
        while True:
            await asyncio.sleep(spec.log_check_interval_s)
            try:
                await self._check_log(inst)
                if self._clock() >= next_health or health.lacks_first_sample(inst):
                    next_health = self._clock() + spec.health_interval_s
                    if inst.process is not None:
                        with contextlib.suppress(SupervisorError):
                            await self.sample_health(spec.name)
            except OSError as exc:
                _log.warning("instance %s: monitor: %s", spec.name, exc)

    async def _check_log(self, inst: Instance) -> None:
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
        return self._events.subscribe(name)

    def _emit(
        self,
        inst: Instance,
        kind: EventKind,
        *,
        pid: int | None = None,
        exit: ExitInfo | None = None,
        delay_s: float | None = None,
        detail: str | None = None,
    ) -> None:
        self._events.emit(
            inst.spec.name,
            inst.state,
            kind,
            pid=pid,
            exit=exit,
            delay_s=delay_s,
            detail=detail,
        )

    def _emit_state(self, inst: Instance, detail: str | None = None) -> None:
        pid = inst.process.pid if inst.process is not None else None
        self._emit(inst, EventKind.STATE, pid=pid, detail=detail)

    def _transition(self, inst: Instance, state: InstanceState) -> None:
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
        self._events.close()
