"""KDF on this machine, driven by the same supervisor the daemon uses, behind the same interface.

A profile of ``kind: local`` makes `connect()` return a `LocalKdfController` instead of a daemon
client: ``start_kdf``, ``status``, ``logs``, ``rpc``... behave as they do remotely (same typed
results, same exceptions: an unknown instance is `NotFound`, a wrong state `Conflict`, KDF not
answering `KdfUnavailable`). The supervisor (`kdf_remote.supervisor`, the ``[local]`` extra) is
imported only here, lazily. `AsyncLocalKdfController` runs it on the caller's event loop; the
blocking `LocalKdfController` runs it on a private event loop in a background thread.

KDF keeps running when the controller closes; the next controller re-adopts it (the
supervisor's state file), so separate CLI invocations act on the same KDF, as with a daemon.
Workers, capacity, updates and backups need a daemon and raise `Unsupported`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Coroutine, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from kdf_remote.client import errors
from kdf_remote.client._core import DEFAULT_STARTUP_CONFIG, encode_config, rpc_body, rpc_v2_body
from kdf_remote.client.models import (
    DaemonHealth,
    HealthEvent,
    HealthSample,
    InstanceStatus,
    LogLine,
    RpcReply,
)
from kdf_remote.client.profiles import LocalSettings, Profile

if TYPE_CHECKING:
    from kdf_remote.supervisor import Supervisor
    from kdf_remote.supervisor.models import InstanceStatus as SupervisorStatus

__all__ = ["AsyncLocalKdfController", "LocalKdfController"]

T = TypeVar("T")
MAIN = "main"
LOOPBACK = "127.0.0.1"
RESERVED_METHODS = frozenset({"stop"})
HEALTH_INTERVAL = 5.0


def _translate(exc: Exception, name: str) -> errors.KdfRemoteError:
    """Supervisor and KDF-config errors as the client's (the daemon maps them the same way)."""
    from kdf_remote.kdf.errors import KdfConfigError, KdfProtocolError
    from kdf_remote.supervisor import errors as sup

    if isinstance(exc, sup.UnknownInstance):
        return errors.NotFound(404, "not_found", f"no instance named {name!r}")
    if isinstance(exc, sup.NoStoredConfig):
        return errors.Conflict(409, "no_stored_config", f"instance {name!r} has no stored config")
    if isinstance(exc, sup.NotRunning):
        return errors.Conflict(409, "not_running", f"instance {name!r} is not running: {exc}")
    if isinstance(exc, sup.InvalidState):
        return errors.Conflict(409, "invalid_state", str(exc))
    if isinstance(exc, sup.StartFailed):
        return errors.KdfUnavailable(502, "start_failed", f"KDF did not start: {exc}")
    if isinstance(exc, sup.KdfUnreachable):
        return errors.KdfUnavailable(502, "kdf_unreachable", f"KDF did not answer: {exc}")
    if isinstance(exc, KdfConfigError):
        return errors.BadRequest(400, "invalid_config", f"invalid KDF startup config: {exc}")
    if isinstance(exc, KdfProtocolError):
        return errors.BadRequest(400, "invalid_rpc", str(exc))
    return errors.KdfRemoteError(f"local supervisor: {exc}")


def _catchable() -> tuple[type[Exception], ...]:
    from kdf_remote.kdf.errors import KdfConfigError, KdfProtocolError
    from kdf_remote.supervisor import SupervisorError

    return (SupervisorError, KdfConfigError, KdfProtocolError)


def _status(raw: SupervisorStatus) -> InstanceStatus:
    from kdf_remote.supervisor.wire import status_out

    return status_out(raw)


def _local_settings(profile: Profile) -> LocalSettings:
    if profile.local is None:
        raise errors.ConfigError(f"profile {profile.name!r} has no `local` section", field="local")
    return profile.local


class AsyncLocalKdfController:
    """KDF on this machine through an in-process supervisor (asyncio).

    Build it with `from_profile` (or `aconnect`) and use it as an async context manager.
    """

    def __init__(self, settings: LocalSettings, *, name: str = "local") -> None:
        self._settings = settings
        self._name = name
        self._supervisor: Supervisor | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_profile(cls, profile: Profile) -> AsyncLocalKdfController:
        """A controller for a ``kind: local`` profile."""
        return cls(_local_settings(profile), name=profile.name)

    @property
    def name(self) -> str:
        """The profile name."""
        return self._name

    async def __aenter__(self) -> AsyncLocalKdfController:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Let go of the supervisor; KDF keeps running and is re-adopted next time."""
        if self._supervisor is not None:
            supervisor, self._supervisor = self._supervisor, None
            await supervisor.close(stop_instances=False)

    async def _sup(self) -> Supervisor:
        async with self._lock:
            if self._supervisor is None:
                try:
                    from kdf_remote.supervisor import InstanceSpec, Supervisor
                except ImportError as exc:
                    raise errors.ConfigError(
                        "a local profile needs the [local] extra: pip install 'kdf-remote[local]'"
                    ) from exc
                supervisor = Supervisor()
                spec = InstanceSpec(
                    name=MAIN,
                    binary_path=Path(self._settings.binary_path),
                    data_dir=Path(self._settings.data_dir),
                    run_dir=Path(self._settings.run_dir),
                    rpc_port=self._settings.rpc_port,
                )
                await supervisor.add(spec)
                self._supervisor = supervisor
            return self._supervisor

    async def _call(self, instance: str, work: Awaitable[T]) -> T:
        try:
            return await work
        except _catchable() as exc:
            raise _translate(exc, instance) from None

    def _config(self, startup_config: Mapping[str, Any] | Any) -> Any:
        from kdf_remote.kdf.config import decode_startup_config

        try:
            config = decode_startup_config(encode_config(startup_config))
        except _catchable() as exc:
            raise _translate(exc, MAIN) from None
        # As the daemon does: KDF's RPC stays on loopback, reachable only through us.
        return msgspec.structs.replace(config, rpcip=LOOPBACK, rpc_local_only=True)

    # --- the KdfController surface ----------------------------------------------------------

    async def connect(self) -> DaemonHealth:
        """Start the in-process supervisor (re-adopting a running KDF)."""
        await self._sup()
        from kdf_remote.client import __name__ as package

        return DaemonHealth(status="ok", version=f"{package} local")

    async def instances(self) -> list[InstanceStatus]:
        """Status of every local instance."""
        sup = await self._sup()
        return [_status(sup.status(name)) for name in sup.names()]

    async def status(self, instance: str = MAIN) -> InstanceStatus:
        """Status of one instance."""
        sup = await self._sup()
        try:
            return _status(sup.status(instance))
        except _catchable() as exc:
            raise _translate(exc, instance) from None

    async def start_kdf(
        self, startup_config: Mapping[str, Any] | Any | None = None, *, instance: str = MAIN
    ) -> InstanceStatus:
        """Start KDF (None: the stored config) and wait until it answers."""
        sup = await self._sup()
        config = None if startup_config is None else self._config(startup_config)
        return _status(await self._call(instance, sup.start(instance, config)))

    async def start_default(self, *, instance: str = MAIN) -> InstanceStatus:
        """Start with the stored config, or `DEFAULT_STARTUP_CONFIG` when none is stored."""
        try:
            return await self.start_kdf(None, instance=instance)
        except errors.Conflict as exc:
            if exc.code != "no_stored_config":
                raise
        return await self.start_kdf(DEFAULT_STARTUP_CONFIG, instance=instance)

    async def stop_kdf(self, *, instance: str = MAIN) -> InstanceStatus:
        """Stop KDF gracefully."""
        sup = await self._sup()
        return _status(await self._call(instance, sup.stop(instance)))

    async def restart(
        self, startup_config: Mapping[str, Any] | Any | None = None, *, instance: str = MAIN
    ) -> InstanceStatus:
        """Stop then start."""
        sup = await self._sup()
        config = None if startup_config is None else self._config(startup_config)
        return _status(await self._call(instance, sup.restart(instance, config)))

    async def update_config(
        self, startup_config: Mapping[str, Any] | Any, *, instance: str = MAIN
    ) -> None:
        """Replace the stored startup config."""
        sup = await self._sup()
        await self._call(instance, sup.set_config(instance, self._config(startup_config)))

    async def wait_until(
        self,
        states: tuple[str, ...],
        *,
        instance: str = MAIN,
        timeout: float = 60.0,  # noqa: ASYNC109  # the twin of the remote API
        interval: float = 0.25,
    ) -> InstanceStatus:
        """Poll until the state is one of `states`."""
        deadline = time.monotonic() + timeout
        while True:
            current = await self.status(instance)
            if current.state in states:
                return current
            if time.monotonic() >= deadline:
                raise errors.DaemonTimeoutError(
                    f"{instance} still {current.state} after {timeout:.0f} s"
                )
            await asyncio.sleep(interval)

    async def logs(
        self, *, instance: str = MAIN, tail: int = 100, follow: bool = False
    ) -> AsyncIterator[LogLine]:
        """The last `tail` redacted lines; with `follow`, new lines until the caller stops."""
        sup = await self._sup()
        for line in await self._call(instance, sup.read_log_tail(instance, tail)) if tail else []:
            yield LogLine(line=line)
        if follow:
            try:
                async for line in sup.follow_log(instance):
                    yield LogLine(line=line)
            except _catchable() as exc:
                raise _translate(exc, instance) from None

    async def health(self, *, instance: str = MAIN) -> HealthSample:
        """One health reading (a stopped instance is reported unhealthy)."""
        from kdf_remote.supervisor import NotRunning
        from kdf_remote.supervisor.wire import health_out

        sup = await self._sup()
        try:
            status = sup.status(instance)
            sample = await sup.sample_health(instance)
        except NotRunning:
            return health_out(sup.status(instance), None)
        except _catchable() as exc:
            raise _translate(exc, instance) from None
        return health_out(status, sample)

    async def monitor_health(
        self, *, instance: str = MAIN, interval: float = HEALTH_INTERVAL
    ) -> AsyncIterator[HealthEvent]:
        """A sample now, then on every state change and at least every `interval` seconds."""
        sup = await self._sup()
        events = sup.subscribe(instance)
        try:
            while True:
                yield HealthEvent(kind="sample", sample=await self.health(instance=instance))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await anext(events)
        finally:
            await events.aclose()

    async def rpc(
        self, method: str, params: Mapping[str, Any] | None = None, *, instance: str = MAIN
    ) -> RpcReply:
        """One legacy KDF call (the supervisor injects `userpass`)."""
        return await self._rpc(instance, rpc_body(method, params))

    async def rpc_v2(
        self,
        method: str,
        params: Any = None,
        *,
        instance: str = MAIN,
        request_id: int | None = None,
    ) -> RpcReply:
        """One v2 KDF call."""
        return await self._rpc(instance, rpc_v2_body(method, params, request_id=request_id))

    async def _rpc(self, instance: str, body: bytes) -> RpcReply:
        from kdf_remote.kdf.rpc import method_names

        sup = await self._sup()
        try:
            reserved = RESERVED_METHODS.intersection(method_names(body))
        except _catchable() as exc:
            raise _translate(exc, instance) from None
        if reserved:
            raise errors.Forbidden(403, "method_reserved", "KDF `stop` is reserved: use stop_kdf()")
        raw = await self._call(instance, sup.rpc(instance, body))
        try:
            decoded: Any = msgspec.json.decode(raw.body) if raw.body else None
        except msgspec.DecodeError:
            decoded = raw.body.decode("utf-8", "replace")
        return RpcReply(http_status=raw.status, body=decoded)


class _LoopThread:
    """A private event loop on a daemon thread, for the blocking face."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="kdf-remote-local", daemon=True
        )
        self._thread.start()

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result()

    def iterate(self, items: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self.run(anext(items))  # type: ignore[arg-type]
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None and self.loop.is_running():
                self.run(aclose())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()


class LocalKdfController:
    """The blocking face of `AsyncLocalKdfController` (same methods as `RemoteKdfController`)."""

    def __init__(self, settings: LocalSettings, *, name: str = "local") -> None:
        self._loop = _LoopThread()
        self._inner = AsyncLocalKdfController(settings, name=name)

    @classmethod
    def from_profile(cls, profile: Profile) -> LocalKdfController:
        """A controller for a ``kind: local`` profile."""
        return cls(_local_settings(profile), name=profile.name)

    @property
    def name(self) -> str:
        """The profile name."""
        return self._inner.name

    def close(self) -> None:
        """Let go of the supervisor (KDF keeps running) and stop the loop thread."""
        try:
            self._loop.run(self._inner.aclose())
        finally:
            self._loop.stop()

    def __enter__(self) -> LocalKdfController:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def connect(self) -> DaemonHealth:
        """Start the supervisor (re-adopting a running KDF)."""
        return self._loop.run(self._inner.connect())

    def instances(self) -> list[InstanceStatus]:
        """Status of every local instance."""
        return self._loop.run(self._inner.instances())

    def status(self, instance: str = MAIN) -> InstanceStatus:
        """Status of one instance."""
        return self._loop.run(self._inner.status(instance))

    def start_kdf(
        self, startup_config: Mapping[str, Any] | Any | None = None, *, instance: str = MAIN
    ) -> InstanceStatus:
        """Start KDF."""
        return self._loop.run(self._inner.start_kdf(startup_config, instance=instance))

    def start_default(self, *, instance: str = MAIN) -> InstanceStatus:
        """Start with the stored config, or the default one."""
        return self._loop.run(self._inner.start_default(instance=instance))

    def stop_kdf(self, *, instance: str = MAIN) -> InstanceStatus:
        """Stop KDF gracefully."""
        return self._loop.run(self._inner.stop_kdf(instance=instance))

    def restart(
        self, startup_config: Mapping[str, Any] | Any | None = None, *, instance: str = MAIN
    ) -> InstanceStatus:
        """Stop then start."""
        return self._loop.run(self._inner.restart(startup_config, instance=instance))

    def update_config(
        self, startup_config: Mapping[str, Any] | Any, *, instance: str = MAIN
    ) -> None:
        """Replace the stored startup config."""
        self._loop.run(self._inner.update_config(startup_config, instance=instance))

    def wait_until(
        self,
        states: tuple[str, ...],
        *,
        instance: str = MAIN,
        timeout: float = 60.0,
        interval: float = 0.25,
    ) -> InstanceStatus:
        """Poll until the state is one of `states`."""
        return self._loop.run(
            self._inner.wait_until(states, instance=instance, timeout=timeout, interval=interval)
        )

    def logs(
        self, *, instance: str = MAIN, tail: int = 100, follow: bool = False
    ) -> Iterator[LogLine]:
        """Log lines (redacted)."""
        return self._loop.iterate(self._inner.logs(instance=instance, tail=tail, follow=follow))

    def health(self, *, instance: str = MAIN) -> HealthSample:
        """One health reading."""
        return self._loop.run(self._inner.health(instance=instance))

    def monitor_health(
        self, *, instance: str = MAIN, interval: float = HEALTH_INTERVAL
    ) -> Iterator[HealthEvent]:
        """Health updates as they come."""
        return self._loop.iterate(self._inner.monitor_health(instance=instance, interval=interval))

    def rpc(
        self, method: str, params: Mapping[str, Any] | None = None, *, instance: str = MAIN
    ) -> RpcReply:
        """One legacy KDF call."""
        return self._loop.run(self._inner.rpc(method, params, instance=instance))

    def rpc_v2(
        self,
        method: str,
        params: Any = None,
        *,
        instance: str = MAIN,
        request_id: int | None = None,
    ) -> RpcReply:
        """One v2 KDF call."""
        return self._loop.run(
            self._inner.rpc_v2(method, params, instance=instance, request_id=request_id)
        )
