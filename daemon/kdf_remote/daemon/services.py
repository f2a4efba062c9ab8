"""The REST layer's view of the supervisor: instance specs from settings, configs, errors.

:class:`InstanceService` is the only daemon module that calls the supervisor. It turns settings
into :class:`InstanceSpec`, a request body into the KDF startup config the daemon enforces
(loopback RPC on the instance's port, a generated ``rpc_password`` when none is given), supervisor
snapshots into wire types, and supervisor errors into the API's statuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from kdf_remote import api
from kdf_remote.daemon.daemon_log import redactor
from kdf_remote.daemon.errors import (
    BadGatewayError,
    BadRequestError,
    ConflictError,
    NotFoundError,
)
from kdf_remote.daemon.schemas import StoredConfigOut
from kdf_remote.daemon.security.process import kdf_user
from kdf_remote.daemon.streams import SseEvent, merge
from kdf_remote.kdf.config import SECRET_FIELDS, KdfStartupConfig, decode_startup_config
from kdf_remote.kdf.errors import KdfConfigError, KdfProtocolError
from kdf_remote.kdf.password import generate_rpc_password
from kdf_remote.supervisor import errors as sup_errors
from kdf_remote.supervisor.models import InstanceState, InstanceStatus
from kdf_remote.supervisor.restart_policy import RestartPolicy
from kdf_remote.supervisor.spec import InstanceSpec, Timeouts
from kdf_remote.supervisor.wire import event_out, health_out, status_out

if TYPE_CHECKING:
    from kdf_remote.daemon.settings import Settings
    from kdf_remote.kdf.transport import RawResponse
    from kdf_remote.supervisor.metrics import DaemonMetrics
    from kdf_remote.supervisor.supervisor import Supervisor

__all__ = ["MAIN", "InstanceService", "main_spec", "rpc_method_label"]


MAIN = "main"
"""The primary instance, described by the ``kdf:`` section."""
LOOPBACK = "127.0.0.1"
START_FAILURE_LOG_LINES = 3
"""KDF log lines quoted when a start fails (KDF says why on its last lines)."""


class _MethodOnly(msgspec.Struct):
    method: object = None


_method_decoder = msgspec.json.Decoder(_MethodOnly)


def rpc_method_label(body: bytes) -> str:
    """The metric label of an RPC body: its method, ``batch``, or ``invalid``.

    Decodes into a one-field Struct, so the rest of the body is skipped, not built: this runs
    on every proxied call.
    """
    head = body[:1]
    if head.isspace():
        head = body.lstrip()[:1]
    if head == b"[":
        return "batch"
    try:
        method = _method_decoder.decode(body).method
    except (msgspec.DecodeError, msgspec.ValidationError):
        return "invalid"
    return method if isinstance(method, str) and method else "invalid"


def main_spec(settings: Settings, binary_path: Path | None = None) -> InstanceSpec:
    """The spec of ``main`` from the ``kdf:`` and ``daemon:`` sections.

    ``binary_path`` replaces ``kdf.binary_path`` (the release store's ``current`` binary when
    ``kdf.bin_dir`` is set).
    """
    kdf = settings.kdf
    return InstanceSpec(
        name=MAIN,
        binary_path=binary_path or kdf.binary_path,
        data_dir=kdf.data_dir,
        run_dir=settings.daemon.state_dir / "instances" / MAIN,
        rpc_port=kdf.rpc_port,
        restart=RestartPolicy(
            auto_restart=kdf.auto_restart, max_restart_attempts=kdf.max_restart_attempts
        ),
        timeouts=Timeouts(start_s=kdf.start_timeout, stop_rpc_s=kdf.stop_timeout),
        log_max_bytes=kdf.log_max_size,
        log_backups=kdf.log_backups,
        health_interval_s=settings.daemon.health_check_interval,
        user=kdf_user(kdf.run_as),
    )


@contextlib.contextmanager
def _api_errors(name: str) -> Iterator[None]:
    """Turn supervisor errors into the API's statuses."""
    try:
        yield
    except sup_errors.UnknownInstance:
        raise NotFoundError(f"no instance named {name!r}") from None
    except sup_errors.NotRunning as exc:
        raise ConflictError(
            f"instance {name!r} is not running: {exc}", code="not_running"
        ) from None
    except sup_errors.NoStoredConfig:
        raise ConflictError(
            f"instance {name!r} has no stored config: send a KDF startup config in the body",
            code="no_stored_config",
        ) from None
    except sup_errors.InvalidState as exc:
        raise ConflictError(str(exc), code="invalid_state") from None
    except sup_errors.StartFailed as exc:
        raise BadGatewayError(f"KDF did not start: {exc}", code="start_failed") from None
    except sup_errors.KdfUnreachable as exc:
        raise BadGatewayError(f"KDF did not answer: {exc}") from None
    except sup_errors.SupervisorError as exc:
        raise ConflictError(str(exc), code="unavailable") from None
    except KdfConfigError as exc:
        raise BadRequestError(f"invalid KDF startup config: {exc}", code="invalid_config") from None
    except KdfProtocolError as exc:
        raise BadRequestError(str(exc), code="invalid_rpc") from None


@contextlib.asynccontextmanager
async def _async_api_errors(name: str) -> AsyncIterator[None]:
    """:func:`_api_errors` around an ``await``."""
    with _api_errors(name):
        yield


class InstanceService:
    """Instances as the REST API sees them."""

    def __init__(
        self,
        settings: Settings,
        supervisor_factory: Callable[[], Supervisor],
        *,
        binary_path: Path | None = None,
        metrics: DaemonMetrics | None = None,
    ) -> None:
        self.settings = settings
        self._factory = supervisor_factory
        self._supervisor: Supervisor | None = None
        self._specs = {MAIN: main_spec(settings, binary_path)}
        self._metrics = metrics
        self._before_open: list[Callable[[], None]] = []
        self._after_open: list[Callable[[Supervisor], Awaitable[None]]] = []

    @property
    def supervisor(self) -> Supervisor:
        """The supervisor of the current server run (one per lifespan).

        Raises:
            ConflictError: the service is not open (the daemon is starting or stopping).
        """
        if self._supervisor is None:
            raise ConflictError("the daemon is not serving instances now", code="unavailable")
        return self._supervisor

    # -- lifecycle of the service ---------------------------------------------------------

    def on_open(
        self,
        *,
        before: Callable[[], None] | None = None,
        after: Callable[[Supervisor], Awaitable[None]] | None = None,
    ) -> None:
        """Run ``before`` ahead of registering instances and ``after`` once they are registered
        (every server start). ``before`` may still change the specs (e.g. a release store)."""
        if before is not None:
            self._before_open.append(before)
        if after is not None:
            self._after_open.append(after)

    async def open(self) -> None:
        """Register every configured instance; a KDF left running is re-adopted."""
        for before in self._before_open:
            before()
        supervisor = self._factory()
        for spec in self._specs.values():
            await supervisor.add(spec)
        self._supervisor = supervisor
        for after in self._after_open:
            await after(supervisor)

    async def close(self, *, stop_instances: bool) -> None:
        """Let go of the supervisor; KDF keeps running unless ``stop_instances``."""
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            await supervisor.close(stop_instances=stop_instances)

    # -- reading --------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Every registered instance, ``main`` first."""
        return sorted(self.supervisor.names(), key=lambda n: (n != MAIN, n))

    def snapshots(self) -> list[InstanceStatus]:
        """The supervisor's status of every instance; empty while the service is not open."""
        supervisor = self._supervisor
        if supervisor is None:
            return []
        out = []
        for name in supervisor.names():
            with contextlib.suppress(sup_errors.SupervisorError):
                out.append(supervisor.status(name))
        return out

    # -- the set of instances -------------------------------------------------------------

    def specs(self) -> list[InstanceSpec]:
        """The spec of every instance the service registers, ``main`` first."""
        return list(self._specs.values())

    def spec(self, name: str) -> InstanceSpec:
        """The spec of ``name`` (404 when unknown)."""
        return self._spec(name)

    def register(self, spec: InstanceSpec) -> None:
        """Add ``spec`` to the instances registered when the service opens (before ``open``)."""
        self._specs[spec.name] = spec

    async def add_instance(self, spec: InstanceSpec) -> api.InstanceStatus:
        """Register a new instance with the running supervisor (re-adopting a live KDF)."""
        with _api_errors(spec.name):
            status = await self.supervisor.add(spec)
        self._specs[spec.name] = spec
        return status_out(status)

    async def remove_instance(self, name: str) -> None:
        """Stop ``name`` gracefully and forget it (its files stay)."""
        with _api_errors(name):
            await self.supervisor.remove(name)
        self._specs.pop(name, None)

    def set_binary(self, binary_path: Path) -> None:
        """Make every spec registered from now on run ``binary_path`` (before ``open``)."""
        self._specs = {
            name: dataclasses.replace(spec, binary_path=binary_path)
            for name, spec in self._specs.items()
        }

    def status(self, name: str) -> api.InstanceStatus:
        """Status of one instance."""
        with _api_errors(name):
            return status_out(self.supervisor.status(name))

    def statuses(self) -> api.InstanceList:
        """Status of every instance."""
        out = []
        for name in self.names():
            with contextlib.suppress(sup_errors.UnknownInstance):
                out.append(status_out(self.supervisor.status(name)))
        return api.InstanceList(instances=out)

    def is_running(self, name: str) -> bool:
        """True when ``name`` exists and is ``running`` (raises 404 for an unknown name)."""
        with _api_errors(name):
            return self.supervisor.status(name).state is InstanceState.RUNNING

    # -- configs --------------------------------------------------------------------------

    def _spec(self, name: str) -> InstanceSpec:
        spec = self._specs.get(name)
        if spec is None:
            raise NotFoundError(f"no instance named {name!r}")
        return spec

    def prepare_config(self, name: str, body: bytes) -> KdfStartupConfig:
        """Validate a startup config from a request body and apply what the daemon enforces.

        KDF's RPC stays on loopback (``rpcip`` 127.0.0.1, ``rpc_local_only``) on the instance's
        port: only the daemon talks to it. A missing ``rpc_password`` keeps the stored one, or
        gets a generated one that passes KDF's policy.

        Raises:
            BadRequestError: the config is invalid (the message names the field).
        """
        return self.prepare_config_for(self._spec(name), body)

    def prepare_config_for(self, spec: InstanceSpec, body: bytes) -> KdfStartupConfig:
        """:meth:`prepare_config` for an instance described by ``spec`` (maybe not yet added)."""
        name = spec.name
        try:
            config = decode_startup_config(body)
        except KdfConfigError as exc:
            raise BadRequestError(
                f"invalid KDF startup config: {exc}", code="invalid_config"
            ) from None
        if config.https:
            raise BadRequestError(
                "invalid KDF startup config: https: got true, expected false or absent "
                "(the daemon serves TLS; KDF's RPC stays plain HTTP on loopback)",
                code="invalid_config",
            )
        password = config.rpc_password or self._stored_rpc_password(name) or generate_rpc_password()
        config = msgspec.structs.replace(
            config,
            rpcip=LOOPBACK,
            rpc_local_only=True,
            rpcport=spec.rpc_port,
            rpc_password=password,
        )
        passphrase = config.passphrase if isinstance(config.passphrase, str) else None
        redactor.register(password, passphrase, config.wallet_password)
        return config

    def _stored_rpc_password(self, name: str) -> str | None:
        if self._supervisor is None:
            return None
        with contextlib.suppress(sup_errors.SupervisorError):
            return self._supervisor.stored_config(name).rpc_password
        return None

    async def put_config(self, name: str, body: bytes) -> StoredConfigOut:
        """Replace the stored startup config of ``name``; it applies on the next (re)start."""
        config = self.prepare_config(name, body)
        with _api_errors(name):
            await self.supervisor.set_config(name, config)
            running = self.supervisor.status(name).state is not InstanceState.STOPPED
        public = msgspec.structs.replace(config, **dict.fromkeys(SECRET_FIELDS))
        return StoredConfigOut(
            name=name,
            config=public,
            secrets_set=[f for f in SECRET_FIELDS if getattr(config, f) is not None],
            applies="next_start" if running else "now",
        )

    # -- lifecycle of instances -----------------------------------------------------------

    def _config_from(self, name: str, body: bytes) -> KdfStartupConfig | None:
        return self.prepare_config(name, body) if body.strip() else None

    async def start(self, name: str, body: bytes) -> api.InstanceStatus:
        """Start ``name`` with the config in ``body``, or the stored one when it is empty."""
        config = self._config_from(name, body)
        async with self._start_failures(name), _async_api_errors(name):
            return status_out(await self.supervisor.start(name, config))

    async def stop(self, name: str) -> api.InstanceStatus:
        """Stop ``name`` gracefully (``stop`` RPC, then SIGINT, then SIGKILL)."""
        with _api_errors(name):
            return status_out(await self.supervisor.stop(name))

    async def restart(self, name: str, body: bytes) -> api.InstanceStatus:
        """Stop then start ``name``, with a new config when ``body`` holds one."""
        config = self._config_from(name, body)
        async with self._start_failures(name), _async_api_errors(name):
            return status_out(await self.supervisor.restart(name, config))

    @contextlib.asynccontextmanager
    async def _start_failures(self, name: str) -> AsyncIterator[None]:
        """Add the last KDF log lines to a failed start: they usually say why."""
        try:
            yield
        except BadGatewayError as exc:
            if exc.code != "start_failed":
                raise
            with contextlib.suppress(sup_errors.SupervisorError, OSError):
                lines = await self.supervisor.read_log_tail(name, START_FAILURE_LOG_LINES)
                if lines:
                    exc.detail = f"{exc.detail}; last KDF log lines: " + " | ".join(lines)
            raise

    # -- RPC ------------------------------------------------------------------------------

    async def rpc(self, name: str, body: bytes) -> RawResponse:
        """Forward one KDF call with the real ``userpass``; KDF's answer is returned as is.

        Every method goes through, ``stop`` included: the supervisor records a KDF that exits 0
        after its ``stop`` call as stopped, not crashed.
        """
        metrics = self._metrics
        began = time.perf_counter()
        try:
            answer = await self.supervisor.rpc(name, body)
        except BaseException:
            if metrics is not None:
                elapsed = time.perf_counter() - began
                metrics.observe_rpc(name, rpc_method_label(body), elapsed, ok=False)
            # The error mapping runs only on failure: a context manager per call costs the
            # hot path about a microsecond.
            with _api_errors(name):
                raise
        if metrics is not None:
            metrics.observe_rpc(name, rpc_method_label(body), time.perf_counter() - began, ok=True)
        return answer

    # -- logs and health ------------------------------------------------------------------

    async def log_tail(self, name: str, lines: int) -> api.LogTail:
        """The last ``lines`` redacted log lines of ``name``."""
        with _api_errors(name):
            tail = await self.supervisor.read_log_tail(name, lines) if lines else []
        return api.LogTail(name=name, lines=[api.LogLine(line=line) for line in tail])

    def follow_logs(self, name: str, tail: int) -> AsyncIterator[SseEvent]:
        """Log lines of ``name`` as they are written, with the supervisor's events in between."""
        with _api_errors(name):
            self.supervisor.status(name)
        return merge(self._log_lines(name, tail), self._state_events(name))

    async def _log_lines(self, name: str, tail: int) -> AsyncIterator[SseEvent]:
        for old in (await self.log_tail(name, tail)).lines:
            yield SseEvent("log", old)
        async for new in self.supervisor.follow_log(name):
            yield SseEvent("log", api.LogLine(line=new))

    async def _state_events(self, name: str) -> AsyncIterator[SseEvent]:
        async for event in self.supervisor.subscribe(name):
            yield SseEvent("state", event_out(event))

    async def health(self, name: str) -> api.HealthSample:
        """One health sample of ``name`` (a not-running instance is reported unhealthy)."""
        with _api_errors(name):
            status = self.supervisor.status(name)
            if status.pid is None or status.state in (InstanceState.STOPPED, InstanceState.FAILED):
                return health_out(status, None)
            try:
                sample = await self.supervisor.sample_health(name)
            except sup_errors.NotRunning:
                return health_out(self.supervisor.status(name), None)
        return health_out(status, sample)

    async def watch_health(self, name: str) -> AsyncIterator[SseEvent]:
        """Health samples of ``name``: one now, one on every state change, one per interval."""
        interval = self.settings.daemon.health_check_interval
        changed = asyncio.Event()

        async def watch_events() -> None:
            async for _ in self.supervisor.subscribe(name):
                changed.set()

        watcher = asyncio.create_task(watch_events())
        sequence = 0
        try:
            while True:
                sequence += 1
                yield SseEvent("health", await self.health(name), id=str(sequence))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await changed.wait()
                changed.clear()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
