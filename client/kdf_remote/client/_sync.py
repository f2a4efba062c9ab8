"""`RemoteKdfController`: the blocking client of one kdf-remote daemon."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
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

__all__ = ["RemoteKdfController"]

T = TypeVar("T")


class RemoteKdfController:
    """Drive KDF instances through a kdf-remote daemon (blocking).

    Build it with `RemoteKdfController.from_profile(profile)` or `kdf_remote.client.connect()`;
    use it as a context manager (or call `close()`). `transport` is an injection point for tests
    (`httpx.MockTransport`, `httpx.ASGITransport` is async-only: use the async twin with it).
    """

    def __init__(
        self, settings: ClientSettings, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        self._settings = settings
        self._client = httpx.Client(**client_kwargs(settings, transport))

    @classmethod
    def from_profile(
        cls,
        profile: Profile,
        *,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        token_exchange: bool = True,
    ) -> RemoteKdfController:
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

    def close(self) -> None:
        """Release the connection pool."""
        self._client.close()

    def __enter__(self) -> RemoteKdfController:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- plumbing ---------------------------------------------------------------------------

    def _once(self, call: Call[T]) -> T:
        try:
            response = self._client.request(call.method, call.path, **request_parts(call))
        except httpx.HTTPError as exc:
            raise translate(exc, self._settings.url) from None
        return interpret(
            call, response.status_code, response.content, response.headers.get("Retry-After")
        )

    def _run(self, call: Call[T]) -> T:
        attempt = 1
        while True:
            try:
                return self._once(call)
            except errors.KdfRemoteError as exc:
                delay = self._settings.retry.should_retry(call, attempt, exc)
                if delay is None:
                    raise
            time.sleep(delay)
            attempt += 1

    def _events(
        self, call: Call[Any], *, read_timeout: float | None, state: HealthStreamState | None = None
    ) -> Iterator[SseEvent]:
        try:
            with self._client.stream(
                call.method,
                call.path,
                params=call.params,
                headers=sse_headers(state),
                timeout=stream_timeout(self._settings, read=read_timeout),
            ) as response:
                if response.status_code >= 300:
                    response.read()
                    raise api_error(
                        response.status_code, response.content, response.headers.get("Retry-After")
                    )
                parser = SseParser()
                for chunk in response.iter_text():
                    yield from parser.feed(chunk)
        except httpx.HTTPError as exc:
            raise translate(exc, self._settings.url) from None

    # --- daemon -----------------------------------------------------------------------------

    def connect(self) -> DaemonHealth:
        """Check that the daemon answers and that the credentials are accepted."""
        health = self._run(Calls.health())
        self._run(Calls.instances())
        return health

    def daemon_health(self) -> DaemonHealth:
        """`GET /v1/health` (no credentials needed)."""
        return self._run(Calls.health())

    # --- instances --------------------------------------------------------------------------

    def instances(self) -> list[InstanceStatus]:
        """Status of every instance (main and workers)."""
        return self._run(Calls.instances())

    def status(self, instance: str = "main") -> InstanceStatus:
        """Status of one instance."""
        return self._run(Calls.status(instance))

    def start_kdf(
        self, startup_config: Mapping[str, Any] | Any | None = None, *, instance: str = "main"
    ) -> InstanceStatus:
        """Start KDF with `startup_config` (a mapping or a msgspec Struct); None: the stored one."""
        return self._run(Calls.start(instance, startup_config))

    def start_default(self, *, instance: str = "main") -> InstanceStatus:
        """Start with the stored config, or with `DEFAULT_STARTUP_CONFIG` when none is stored."""
        try:
            return self.start_kdf(None, instance=instance)
        except errors.Conflict as exc:
            if exc.code != "no_stored_config":
                raise
        return self.start_kdf(DEFAULT_STARTUP_CONFIG, instance=instance)

    def stop_kdf(self, *, instance: str = "main") -> InstanceStatus:
        """Graceful stop (KDF `stop` RPC, then SIGTERM, then SIGKILL)."""
        return self._run(Calls.stop(instance))

    def restart(
        self, startup_config: Mapping[str, Any] | Any | None = None, *, instance: str = "main"
    ) -> InstanceStatus:
        """Stop then start (with a new config when given)."""
        return self._run(Calls.restart(instance, startup_config))

    def update_config(
        self, startup_config: Mapping[str, Any] | Any, *, instance: str = "main"
    ) -> None:
        """Replace the stored startup config (used by the next start)."""
        self._run(Calls.update_config(instance, startup_config))

    def wait_until(
        self,
        states: tuple[str, ...],
        *,
        instance: str = "main",
        timeout: float = 60.0,
        interval: float = 0.25,
    ) -> InstanceStatus:
        """Poll until the state is one of `states` (DaemonTimeoutError after `timeout` s)."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(instance)
            if status.state in states:
                return status
            if time.monotonic() >= deadline:
                wanted = ", ".join(states)
                raise errors.DaemonTimeoutError(
                    f"{instance} still {status.state} after {timeout:.0f} s (waiting for {wanted})"
                )
            time.sleep(interval)

    # --- logs and health --------------------------------------------------------------------

    def logs(
        self, *, instance: str = "main", tail: int = 100, follow: bool = False
    ) -> Iterator[LogLine]:
        """The last `tail` log lines; with `follow`, then every new line until the stream ends."""
        if not follow:
            yield from self._run(Calls.logs(instance, tail))
            return
        for event in self._events(Calls.logs_follow(instance, tail), read_timeout=None):
            if event.event in ("message", "log", "line"):
                yield decode_log_line(event.data)

    def health(self, *, instance: str = "main") -> HealthSample:
        """One health reading."""
        return self._run(Calls.health_of(instance))

    def monitor_health(
        self,
        *,
        instance: str = "main",
        backoff: Backoff | None = None,
        give_up_after: float | None = None,
    ) -> Iterator[HealthEvent]:
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
                for event in self._events(call, read_timeout=HEALTH_READ_TIMEOUT, state=state):
                    yield from state.on_event(event)
                detail = "the daemon closed the stream"
            except errors.KdfRemoteError as exc:
                if not is_stream_interruption(exc):
                    raise
                detail = str(exc)
            item, delay = state.on_interrupt(detail, time.monotonic())
            yield item
            time.sleep(delay)

    # --- KDF RPC ----------------------------------------------------------------------------

    def rpc(
        self, method: str, params: Mapping[str, Any] | None = None, *, instance: str = "main"
    ) -> RpcReply:
        """One legacy KDF RPC call through the daemon (which adds `userpass`)."""
        return self._run(Calls.rpc(instance, rpc_body(method, params)))

    def rpc_v2(
        self,
        method: str,
        params: Any = None,
        *,
        instance: str = "main",
        request_id: int | None = None,
    ) -> RpcReply:
        """One v2 (`mmrpc: "2.0"`) KDF RPC call through the daemon."""
        return self._run(Calls.rpc(instance, rpc_v2_body(method, params, request_id=request_id)))

    def rpc_raw(self, body: bytes, *, instance: str = "main") -> RpcReply:
        """Send a ready-made KDF request body (object or batch array)."""
        return self._run(Calls.rpc(instance, body))

    # --- workers, capacity, updates, backups ------------------------------------------------

    def workers(self) -> list[Worker]:
        """The workers of this daemon."""
        return self._run(Calls.workers())

    def add_worker(self, request: WorkerRequest) -> Worker:
        """Create (and by default start) a worker."""
        return self._run(Calls.add_worker(request))

    def remove_worker(self, name: str, *, purge: bool = False) -> WorkerRemoved:
        """Stop and remove a worker; its data is kept unless `purge`."""
        return self._run(Calls.remove_worker(name, purge=purge))

    def capacity(self) -> Capacity:
        """Free ports, memory and CPU left for workers."""
        return self._run(Calls.capacity())

    def update_kdf(self, request: UpdateRequest) -> UpdateResult:
        """Start installing a KDF release (restart, roll back on failure); returns at once with
        the update's first progress: follow it with `update_status()`."""
        return self._run(Calls.update(request))

    def update_status(self) -> UpdateResult:
        """The running KDF update, or the outcome of the last one."""
        return self._run(Calls.update_status())

    def backups(self, *, instance: str = "main") -> list[Backup]:
        """Backups of an instance's data directory."""
        return self._run(Calls.backups(instance))

    def create_backup(self, *, instance: str = "main") -> Backup:
        """Back up an instance's data directory."""
        return self._run(Calls.create_backup(instance))

    def restore_backup(self, backup_id: str, *, instance: str = "main") -> RestoreResult:
        """Restore a backup into a stopped instance (the archive is verified first)."""
        return self._run(Calls.restore_backup(instance, backup_id))
