"""What the listener needs from the instance it fronts, behind one small interface.

:class:`ServiceBackend` reads it from the daemon's instance service (the same supervisor the
REST API uses): the stored startup config (``rpc_password``, ``rpccors``,
``event_streaming_configuration``), the RPC port, and the RPC call itself, with the real
``userpass`` inserted by the supervisor. Tests give the listener a fake instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from kdf_remote.daemon.errors import ApiError
from kdf_remote.supervisor import errors as sup_errors

if TYPE_CHECKING:
    from kdf_remote.daemon.services import InstanceService
    from kdf_remote.kdf.transport import RawResponse

__all__ = ["KDF_HOST", "BackendError", "CompatBackend", "InstanceView", "ServiceBackend"]

KDF_HOST: Final = "127.0.0.1"
"""Where KDF's RPC listens: the daemon keeps it on loopback (``rpcip`` is enforced)."""


@dataclass(frozen=True, slots=True)
class InstanceView:
    """The fronted instance as the listener sees it (holds the rpc_password: never log it)."""

    rpc_password: str | None
    rpccors: str | None
    """KDF's ``rpccors`` from the stored config (None: KDF's default applies)."""
    event_streaming: bool
    """The stored config has ``event_streaming_configuration``: KDF serves ``/event-stream``."""
    rpc_port: int | None

    def __repr__(self) -> str:
        return (
            f"InstanceView(rpc_password={'***' if self.rpc_password else None}, "
            f"rpccors={self.rpccors!r}, event_streaming={self.event_streaming}, "
            f"rpc_port={self.rpc_port})"
        )


class BackendError(Exception):
    """KDF could not be asked: ``status`` is what the listener answers (502 or 503)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class CompatBackend(Protocol):
    """The fronted instance."""

    def view(self, name: str) -> InstanceView | None:
        """The instance's stored config and port, or None when it has no stored config."""
        ...

    async def rpc(self, name: str, body: bytes) -> RawResponse:
        """KDF's answer to ``body`` (the real ``userpass`` inserted).

        Raises:
            BackendError: the instance is unknown or not running, or KDF did not answer.
        """
        ...


class ServiceBackend:
    """:class:`CompatBackend` over the daemon's instance service."""

    def __init__(self, service: InstanceService) -> None:
        self.service = service

    def view(self, name: str) -> InstanceView | None:
        """See :meth:`CompatBackend.view`."""
        try:
            supervisor = self.service.supervisor
            config = supervisor.stored_config(name)
            rpc_port = supervisor.status(name).rpc_port
        except (ApiError, sup_errors.SupervisorError):
            return None
        return InstanceView(
            rpc_password=config.rpc_password,
            rpccors=config.rpccors,
            event_streaming=config.event_streaming_configuration is not None,
            rpc_port=rpc_port,
        )

    async def rpc(self, name: str, body: bytes) -> RawResponse:
        """See :meth:`CompatBackend.rpc`."""
        try:
            return await self.service.rpc(name, body)
        except ApiError as exc:
            # 404/409 (unknown, stopped, daemon starting) mean "nothing to talk to": a KDF
            # that is down refuses the connection, which the SDK treats as unavailable too.
            status = 502 if exc.status == 502 else 503
            raise BackendError(
                status, f"instance {name!r} cannot take calls: {exc.detail}"
            ) from None
