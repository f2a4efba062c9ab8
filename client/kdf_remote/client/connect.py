"""`connect(profile)`: one entry point whether KDF runs behind a daemon or on this machine.

An app writes ``with connect("prod") as kdf: kdf.start_kdf(config)`` and moves between a remote
daemon and a local in-process supervisor by changing the profile, not the code: both kinds of
controller offer the methods of `KdfController` (and `AsyncKdfController` for `aconnect`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from kdf_remote.client.profiles import Profile, resolve_profile

if TYPE_CHECKING:
    from types import TracebackType

    import httpx

    from kdf_remote.client._core import RetryPolicy
    from kdf_remote.client.models import (
        DaemonHealth,
        HealthEvent,
        HealthSample,
        InstanceStatus,
        LogLine,
        RpcReply,
    )

__all__ = ["AsyncKdfController", "KdfController", "aconnect", "connect"]


@runtime_checkable
class KdfController(Protocol):
    """What every blocking controller offers (remote daemon or local supervisor)."""

    @property
    def name(self) -> str:
        """The profile this controller talks to."""
        ...

    def close(self) -> None:
        """Release resources (connections, the local supervisor's loop thread)."""

    def __enter__(self) -> KdfController:
        """Use as a context manager; `close()` on exit."""
        ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close."""

    def connect(self) -> DaemonHealth:
        """Check that KDF's manager answers and accepts our credentials."""
        ...

    def instances(self) -> list[InstanceStatus]:
        """Status of every instance."""
        ...

    def status(self, instance: str = "main") -> InstanceStatus:
        """Status of one instance."""
        ...

    def start_kdf(
        self, startup_config: Mapping[str, Any] | Any | None = None, *, instance: str = "main"
    ) -> InstanceStatus:
        """Start KDF."""
        ...

    def start_default(self, *, instance: str = "main") -> InstanceStatus:
        """Start with the stored config, or the default one."""
        ...

    def stop_kdf(self, *, instance: str = "main") -> InstanceStatus:
        """Stop KDF gracefully."""
        ...

    def restart(
        self, startup_config: Mapping[str, Any] | Any | None = None, *, instance: str = "main"
    ) -> InstanceStatus:
        """Stop then start."""
        ...

    def update_config(
        self, startup_config: Mapping[str, Any] | Any, *, instance: str = "main"
    ) -> None:
        """Replace the stored startup config."""

    def logs(
        self, *, instance: str = "main", tail: int = 100, follow: bool = False
    ) -> Iterator[LogLine]:
        """Log lines (redacted)."""
        ...

    def health(self, *, instance: str = "main") -> HealthSample:
        """One health reading."""
        ...

    def monitor_health(self, *, instance: str = "main") -> Iterator[HealthEvent]:
        """Health updates as they come."""
        ...

    def rpc(
        self, method: str, params: Mapping[str, Any] | None = None, *, instance: str = "main"
    ) -> RpcReply:
        """A legacy KDF RPC call."""
        ...

    def rpc_v2(
        self,
        method: str,
        params: Any = None,
        *,
        instance: str = "main",
        request_id: int | None = None,
    ) -> RpcReply:
        """A v2 KDF RPC call."""
        ...

    def wait_until(
        self,
        states: tuple[str, ...],
        *,
        instance: str = "main",
        timeout: float = 60.0,
        interval: float = 0.25,
    ) -> InstanceStatus:
        """Poll until the instance reaches one of `states`."""
        ...


@runtime_checkable
class AsyncKdfController(Protocol):
    """What every asyncio controller offers (remote daemon or local supervisor)."""

    @property
    def name(self) -> str:
        """The profile this controller talks to."""
        ...

    async def aclose(self) -> None:
        """Release resources."""

    async def __aenter__(self) -> AsyncKdfController:
        """Use as an async context manager; `aclose()` on exit."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close."""

    async def connect(self) -> DaemonHealth:
        """Check that KDF's manager answers and accepts our credentials."""
        ...

    async def instances(self) -> list[InstanceStatus]:
        """Status of every instance."""
        ...

    async def status(self, instance: str = "main") -> InstanceStatus:
        """Status of one instance."""
        ...

    async def start_kdf(
        self, startup_config: Mapping[str, Any] | Any | None = None, *, instance: str = "main"
    ) -> InstanceStatus:
        """Start KDF."""
        ...

    async def stop_kdf(self, *, instance: str = "main") -> InstanceStatus:
        """Stop KDF gracefully."""
        ...

    async def rpc(
        self, method: str, params: Mapping[str, Any] | None = None, *, instance: str = "main"
    ) -> RpcReply:
        """A legacy KDF RPC call."""
        ...

    def logs(
        self, *, instance: str = "main", tail: int = 100, follow: bool = False
    ) -> AsyncIterator[LogLine]:
        """Log lines (redacted)."""
        ...

    def monitor_health(self, *, instance: str = "main") -> AsyncIterator[HealthEvent]:
        """Health updates as they come."""
        ...


def _profile(profile: Profile | str | None) -> Profile:
    return profile if isinstance(profile, Profile) else resolve_profile(profile)


def connect(
    profile: Profile | str | None = None,
    *,
    transport: httpx.BaseTransport | None = None,
    retry: RetryPolicy | None = None,
    token_exchange: bool = True,
) -> KdfController:
    """A blocking controller for `profile` (a `Profile`, a profile name, or None: the default).

    Nothing is sent yet; call `.connect()` on the result to check reachability and credentials.
    """
    chosen = _profile(profile)
    if chosen.kind == "local":
        from kdf_remote.client.local import LocalKdfController

        return LocalKdfController.from_profile(chosen)
    from kdf_remote.client._sync import RemoteKdfController

    return RemoteKdfController.from_profile(
        chosen, transport=transport, retry=retry, token_exchange=token_exchange
    )


def aconnect(
    profile: Profile | str | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    retry: RetryPolicy | None = None,
    token_exchange: bool = True,
) -> AsyncKdfController:
    """The asyncio twin of `connect`."""
    chosen = _profile(profile)
    if chosen.kind == "local":
        from kdf_remote.client.local import AsyncLocalKdfController

        return AsyncLocalKdfController.from_profile(chosen)
    from kdf_remote.client._async import AsyncRemoteKdfController

    return AsyncRemoteKdfController.from_profile(
        chosen, transport=transport, retry=retry, token_exchange=token_exchange
    )
