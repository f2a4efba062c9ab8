"""`AsyncRemoteKdfController`: the asyncio twin of `RemoteKdfController` (same names and order)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, TypeVar

import httpx

from kdf_remote.client import errors
from kdf_remote.client._core import (
    DEFAULT_STARTUP_CONFIG,
    Backoff,
    Call,
    Calls,
    HealthStreamState,
    RetryPolicy,
    SseEvent,
    SseParser,
    api_error,
    decode_log_line,
    interpret,
    is_stream_interruption,
    rpc_body,
    rpc_v2_body,
)
from kdf_remote.client._http import (
    HEALTH_READ_TIMEOUT,
    ClientSettings,
    client_kwargs,
    request_parts,
    sse_headers,
    stream_timeout,
    translate,
)
from kdf_remote.client.models import (
    Backup,
    Capacity,
    DaemonHealth,
    HealthEvent,
    HealthSample,
    InstanceStatus,
    LogLine,
    RestoreResult,
    RpcReply,
    UpdateRequest,
    UpdateResult,
    Worker,
    WorkerRemoved,
    WorkerRequest,
)
from kdf_remote.client.profiles import Profile

__all__ = ["AsyncRemoteKdfController"]

T = TypeVar("T")


class AsyncRemoteKdfController:
    """Drive KDF instances through a kdf-remote daemon (asyncio).

    Build it with `AsyncRemoteKdfController.from_profile(profile)` or
    `kdf_remote.client.aconnect()`; use it as an async context manager (or await `aclose()`).
    `transport` is an injection point for tests (`httpx.MockTransport`, or `httpx.ASGITransport`
    over the real daemon app).
    """

    def __init__(
        self, settings: ClientSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._settings = settings
        self._client = httpx.AsyncClient(**client_kwargs(settings, transport))

    @classmethod
    def from_profile(
        cls,
        profile: Profile,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
        token_exchange: bool = True,
    ) -> AsyncRemoteKdfController:
        """A controller for a daemon profile (`token_exchange=False`: send the key as Bearer)."""
        settings = ClientSettings.from_profile(profile, retry=retry, token_exchange=token_exchange)
        return cls(settings, transport=transport)

    @property
    def name(self) -> str:
        """The profile name (or URL) this controller talks to."""
        return self._settings.name

    @property
    def url(self) -> str:
        """The daemon's base URL."""
        return self._settings.url

    async def aclose(self) -> None:
        """Release the connection pool."""
        await self._client.aclose()

    async def __aenter__(self) -> AsyncRemoteKdfController:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- plumbing ---------------------------------------------------------------------------

    async def _once(self, call: Call[T]) -> T:
        try:
            response = await self._client.request(call.method, call.path, **request_parts(call))
        except httpx.HTTPError as exc:
            raise translate(exc, self._settings.url) from None
        return interpret(
            call, response.status_code, response.content, response.headers.get("Retry-After")
        )

    async def _run(self, call: Call[T]) -> T:
        attempt = 1
        while True:
            try:
                return await self._once(call)
            except errors.KdfRemoteError as exc:
                delay = self._settings.retry.should_retry(call, attempt, exc)
                if delay is None:
                    raise
            await asyncio.sleep(delay)
            attempt += 1

    async def _events(
        self, call: Call[Any], *, read_timeout: float | None, state: HealthStreamState | None = None
    ) -> AsyncIterator[SseEvent]:
        try:
            async with self._client.stream(
                call.method,
                call.path,
                params=call.params,
                headers=sse_headers(state),
                timeout=stream_timeout(self._settings, read=read_timeout),
            ) as response:
                if response.status_code >= 300:
                    await response.aread()
                    raise api_error(
                        response.status_code, response.content, response.headers.get("Retry-After")
                    )
                parser = SseParser()
                async for chunk in response.aiter_text():
                    for event in parser.feed(chunk):
                        yield event
        except httpx.HTTPError as exc:
            raise translate(exc, self._settings.url) from None

    # --- daemon -----------------------------------------------------------------------------

    async def connect(self) -> DaemonHealth:
        """Check that the daemon answers and that the credentials are accepted."""
        health = await self._run(Calls.health())
        await self._run(Calls.instances())
        return health

    async def daemon_health(self) -> DaemonHealth:
        """`GET /v1/health` (no credentials needed)."""
        return await self._run(Calls.health())

    # --- instances --------------------------------------------------------------------------

    async def instances(self) -> list[InstanceStatus]:
        """Status of every instance (main and workers)."""
        return await self._run(Calls.instances())

    async def status(self, instance: str = "main") -> InstanceStatus:
        """Status of one instance."""
        return await self._run(Calls.status(instance))

    async def start_kdf(
        self, startup_config: Mapping[str, Any] | Any | None = None, *, instance: str = "main"
    ) -> InstanceStatus:
        """Start KDF with `startup_config` (a mapping or a msgspec Struct); None: the stored one."""
        return await self._run(Calls.start(instance, startup_config))

    async def start_default(self, *, instance: str = "main") -> InstanceStatus:
        """Start with the stored config, or with `DEFAULT_STARTUP_CONFIG` when none is stored."""
        try:
            return await self.start_kdf(None, instance=instance)
        except errors.Conflict as exc:
            if exc.code != "no_stored_config":
                raise
        return await self.start_kdf(DEFAULT_STARTUP_CONFIG, instance=instance)

    async def stop_kdf(self, *, instance: str = "main") -> InstanceStatus:
        """Graceful stop (KDF `stop` RPC, then SIGTERM, then SIGKILL)."""
        return await self._run(Calls.stop(instance))

    async def restart(
        self, startup_config: Mapping[str, Any] | Any | None = None, *, instance: str = "main"
    ) -> InstanceStatus:
        """Stop then start (with a new config when given)."""
        return await self._run(Calls.restart(instance, startup_config))

    async def update_config(
        self, startup_config: Mapping[str, Any] | Any, *, instance: str = "main"
    ) -> None:
        """Replace the stored startup config (used by the next start)."""
        await self._run(Calls.update_config(instance, startup_config))

    async def wait_until(
        self,
        states: tuple[str, ...],
        *,
        instance: str = "main",
        timeout: float = 60.0,  # noqa: ASYNC109  # a polling deadline, the twin of the sync API
        interval: float = 0.25,
    ) -> InstanceStatus:
        """Poll until the state is one of `states` (DaemonTimeoutError after `timeout` s)."""
        deadline = time.monotonic() + timeout
        while True:
            status = await self.status(instance)
            if status.state in states:
                return status
            if time.monotonic() >= deadline:
                wanted = ", ".join(states)
                raise errors.DaemonTimeoutError(
                    f"{instance} still {status.state} after {timeout:.0f} s (waiting for {wanted})"
                )
            await asyncio.sleep(interval)

    # --- logs and health --------------------------------------------------------------------

    async def logs(
        self, *, instance: str = "main", tail: int = 100, follow: bool = False
    ) -> AsyncIterator[LogLine]:
        """The last `tail` log lines; with `follow`, then every new line until the stream ends."""
        if not follow:
            for line in await self._run(Calls.logs(instance, tail)):
                yield line
            return
        async for event in self._events(Calls.logs_follow(instance, tail), read_timeout=None):
            if event.event in ("message", "log", "line"):
                yield decode_log_line(event.data)

    async def health(self, *, instance: str = "main") -> HealthSample:
        """One health reading."""
        return await self._run(Calls.health_of(instance))

    async def monitor_health(
        self,
        *,
        instance: str = "main",
        backoff: Backoff | None = None,
        give_up_after: float | None = None,
    ) -> AsyncIterator[HealthEvent]:
        """Health updates as they come; survives daemon restarts.

        When the stream breaks it yields a `reconnecting` item, waits (exponential backoff),
        reconnects with `Last-Event-ID`, and yields `reconnected` before the next sample. It gives
        up (TransportError) only after `give_up_after` seconds down, if set. Auth and not-found
        errors are raised at once.
        """
        state = HealthStreamState(backoff=backoff or Backoff(), give_up_after=give_up_after)
        call = Calls.health_watch(instance)
        while True:
            try:
                async for event in self._events(
                    call, read_timeout=HEALTH_READ_TIMEOUT, state=state
                ):
                    for item in state.on_event(event):
                        yield item
                detail = "the daemon closed the stream"
            except errors.KdfRemoteError as exc:
                if not is_stream_interruption(exc):
                    raise
                detail = str(exc)
            item, delay = state.on_interrupt(detail, time.monotonic())
            yield item
            await asyncio.sleep(delay)

    # --- KDF RPC ----------------------------------------------------------------------------

    async def rpc(
        self, method: str, params: Mapping[str, Any] | None = None, *, instance: str = "main"
    ) -> RpcReply:
        """One legacy KDF RPC call through the daemon (which adds `userpass`)."""
        return await self._run(Calls.rpc(instance, rpc_body(method, params)))

    async def rpc_v2(
        self,
        method: str,
        params: Any = None,
        *,
        instance: str = "main",
        request_id: int | None = None,
    ) -> RpcReply:
        """One v2 (`mmrpc: "2.0"`) KDF RPC call through the daemon."""
        return await self._run(
            Calls.rpc(instance, rpc_v2_body(method, params, request_id=request_id))
        )

    async def rpc_raw(self, body: bytes, *, instance: str = "main") -> RpcReply:
        """Send a ready-made KDF request body (object or batch array)."""
        return await self._run(Calls.rpc(instance, body))

    # --- workers, capacity, updates, backups ------------------------------------------------

    async def workers(self) -> list[Worker]:
        """The workers of this daemon."""
        return await self._run(Calls.workers())

    async def add_worker(self, request: WorkerRequest) -> Worker:
        """Create (and by default start) a worker."""
        return await self._run(Calls.add_worker(request))

    async def remove_worker(self, name: str, *, purge: bool = False) -> WorkerRemoved:
        """Stop and remove a worker; its data is kept unless `purge`."""
        return await self._run(Calls.remove_worker(name, purge=purge))

    async def capacity(self) -> Capacity:
        """Free ports, memory and CPU left for workers."""
        return await self._run(Calls.capacity())

    async def update_kdf(self, request: UpdateRequest) -> UpdateResult:
        """Start installing a KDF release (restart, roll back on failure); returns at once with
        the update's first progress: follow it with `update_status()`."""
        return await self._run(Calls.update(request))

    async def update_status(self) -> UpdateResult:
        """The running KDF update, or the outcome of the last one."""
        return await self._run(Calls.update_status())

    async def backups(self, *, instance: str = "main") -> list[Backup]:
        """Backups of an instance's data directory."""
        return await self._run(Calls.backups(instance))

    async def create_backup(self, *, instance: str = "main") -> Backup:
        """Back up an instance's data directory."""
        return await self._run(Calls.create_backup(instance))

    async def restore_backup(self, backup_id: str, *, instance: str = "main") -> RestoreResult:
        """Restore a backup into a stopped instance (the archive is verified first)."""
        return await self._run(Calls.restore_backup(instance, backup_id))
