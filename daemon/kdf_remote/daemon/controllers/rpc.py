"""``POST /v1/instances/{name}/rpc`` through Litestar.

The daemon normally answers this route on its raw ASGI fast path (:mod:`kdf_remote.daemon.proxy`)
before Litestar's routing; this handler documents it and serves it when the fast path is off.
Both share :class:`~kdf_remote.daemon.proxy.RpcForwarder`, so they behave identically.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, MediaType, Request, Response, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from kdf_remote.daemon.auth import needs, principal_of
from kdf_remote.daemon.errors import UnauthorizedError
from kdf_remote.daemon.openapi import RpcOperation, error_responses
from kdf_remote.daemon.proxy import RPC_ROLE, RpcForwarder

__all__ = ["RpcController"]


class RpcController(Controller):
    """KDF RPC proxy."""

    path = "/v1/instances"
    tags = ["rpc"]  # noqa: RUF012 (Litestar's declared class attribute)

    @post(
        "/{name:str}/rpc",
        operation_id="instanceRpc",
        summary="Proxy one KDF RPC call (or a batch); the daemon adds userpass",
        description=(
            "KDF's status and body come back unchanged. The daemon answers itself only when "
            "the call cannot reach KDF: 404 unknown instance, 409 not running, 413 too large, "
            "502 KDF did not answer, 403 for a role too low (methods answering with key material, "
            "such as `get_mnemonic`, need admin)."
        ),
        status_code=200,
        responses=error_responses(400, 401, 403, 404, 409, 413, 502),
        operation_class=RpcOperation,
        **needs(RPC_ROLE),
    )
    async def rpc(
        self,
        name: FromPath[str],
        request: Request[Any, Any, Any],
        forwarder: NamedDependency[RpcForwarder],
    ) -> Response[bytes]:
        """Forward one KDF call."""
        principal = principal_of(request.scope)
        if principal is None:
            # Unreachable behind the security gate (the route is not public): fail closed.
            raise UnauthorizedError("missing credentials")
        answer = await forwarder.forward(name, await request.body(), principal)
        return Response(content=answer.body, status_code=answer.status, media_type=MediaType.JSON)
