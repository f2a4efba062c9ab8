"""The KDF RPC proxy, and its raw ASGI fast path in front of Litestar's routing.

``POST /v1/instances/{name}/rpc`` is the hot path of every app that uses a remote KDF, so the
daemon answers it before Litestar routes the request: after the auth gate, the fast path reads the
body (capped), lets the supervisor insert the real ``userpass`` and forward it over the pooled
:class:`~kdf_remote.kdf.transport.KdfTransport`, and writes KDF's status and body back unchanged.
Litestar's handler for the same route shares :class:`RpcForwarder`, so both behave the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from kdf_remote.daemon.errors import (
    ApiError,
    BadGatewayError,
    ForbiddenError,
    PayloadTooLargeError,
    send_error,
)
from kdf_remote.daemon.principal import Principal, Role
from kdf_remote.kdf.errors import KdfProtocolError
from kdf_remote.kdf.rpc import KEY_MATERIAL_METHODS, method_names

if TYPE_CHECKING:
    from litestar.types import HTTPScope, Receive, Scope, Send

    from kdf_remote.daemon.services import InstanceService
    from kdf_remote.kdf.transport import RawResponse

__all__ = [
    "MAX_RPC_RESPONSE_BYTES",
    "RPC_ROLE",
    "RpcFastPath",
    "RpcForwarder",
    "is_rpc_route",
    "read_body",
    "require_rpc_role",
    "rpc_instance",
    "rpc_instance_of",
]

RPC_ROLE: Final = Role.OPERATOR
"""Least role that may proxy KDF calls (design.md)."""
KEY_MATERIAL_ROLE: Final = Role.ADMIN
"""Least role that may call a method answering with key or seed material (``get_mnemonic``...).

An operator key drives KDF; it must not be enough to walk away with the wallet's seed.
"""
MAX_RPC_RESPONSE_BYTES: Final = 32 * 1024 * 1024
"""Largest KDF answer passed back; a larger one is a 502 (protects the daemon and the caller)."""

_PREFIX: Final = "/v1/instances/"
_SUFFIX: Final = "/rpc"
_JSON_HEADERS: Final = ((b"content-type", b"application/json"),)


def rpc_instance(scope: HTTPScope) -> str | None:
    """The instance name when ``scope`` is ``POST /v1/instances/{name}/rpc``, else None."""
    return rpc_instance_of(scope["method"], scope["path"])


def is_rpc_route(method: str, path: str) -> bool:
    """Whether ``method path`` is the RPC proxy route (answered with one head and one body)."""
    return rpc_instance_of(method, path) is not None


def rpc_instance_of(method: str, path: str) -> str | None:
    """The instance name when ``method path`` is ``POST /v1/instances/{name}/rpc``, else None."""
    if method != "POST" or not path.startswith(_PREFIX) or not path.endswith(_SUFFIX):
        return None
    name = path[len(_PREFIX) : -len(_SUFFIX)]
    return name if name and "/" not in name else None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, refusing more than ``limit`` bytes.

    Raises:
        PayloadTooLargeError: declared or actual size above ``limit``.
    """
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                declared = -1
            if declared > limit:
                raise PayloadTooLargeError(f"request body larger than {limit} bytes")
            break
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            # The client went away mid-body: nothing to forward, nobody to answer.
            raise ConnectionAbortedError("client disconnected")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(f"request body larger than {limit} bytes")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class RpcForwarder:
    """Checks and forwards one proxied call; shared by the fast path and Litestar's handler."""

    def __init__(
        self, service: InstanceService, *, max_response: int = MAX_RPC_RESPONSE_BYTES
    ) -> None:
        self.service = service
        self.max_response = max_response

    async def forward(self, name: str, body: bytes, principal: Principal) -> RawResponse:
        """KDF's answer to ``body`` (see :meth:`InstanceService.rpc`).

        Unknown (404) and not-running (409) instances are refused by the supervisor's own
        check, so the hot path reads the instance's state once. Methods answering with key
        material need :data:`KEY_MATERIAL_ROLE` (403 otherwise; KDF never sees the call).
        """
        if not principal.role.allows(KEY_MATERIAL_ROLE):
            _refuse_key_material(body, principal)
        answer = await self.service.rpc(name, body)
        if len(answer.body) > self.max_response:
            raise BadGatewayError(
                f"KDF's answer is larger than {self.max_response} bytes",
                code="kdf_answer_too_large",
            )
        return answer


def require_rpc_role(principal: Principal) -> None:
    """Refuse (403) a caller below :data:`RPC_ROLE`; checked before the body is read."""
    if not principal.role.allows(RPC_ROLE):
        raise ForbiddenError(
            f"role {principal.role.label!r} may not do this; it needs {RPC_ROLE.label!r}",
            code="role_required",
        )


def _refuse_key_material(body: bytes, principal: Principal) -> None:
    try:
        names = method_names(body)
    except KdfProtocolError:
        return  # not JSON-RPC: KDF answers it with its own error, no method runs
    denied = sorted(KEY_MATERIAL_METHODS.intersection(names))
    if denied:
        raise ForbiddenError(
            f"method {denied[0]!r} answers with key material; it needs role "
            f"{KEY_MATERIAL_ROLE.label!r}, not {principal.role.label!r}",
            code="role_required",
        )


class RpcFastPath:
    """Serves ``POST /v1/instances/{name}/rpc`` as a raw ASGI endpoint."""

    def __init__(self, forwarder: RpcForwarder, *, max_body: int) -> None:
        self.forwarder = forwarder
        self.max_body = max_body

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, name: str, principal: Principal
    ) -> bytes:
        """Answer one proxied call; ``principal`` was resolved by the auth gate.

        Returns the request body as read (empty when it was not read), for the audit line.
        """
        body = b""
        try:
            require_rpc_role(principal)
            body = await read_body(scope, receive, self.max_body)
            answer = await self.forwarder.forward(name, body, principal)
        except ApiError as exc:
            await send_error(send, exc)
            return body
        except ConnectionAbortedError:
            return body
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [*_JSON_HEADERS, (b"content-length", b"%d" % len(answer.body))],
            }
        )
        await send({"type": "http.response.body", "body": answer.body, "more_body": False})
        return body
