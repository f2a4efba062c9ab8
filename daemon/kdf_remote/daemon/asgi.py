"""The ASGI application the server runs: the auth gate, the RPC fast path, then Litestar.

Authentication happens here, before Litestar's routing, so no route (including ones added
later, Litestar's automatic OPTIONS handlers and the OpenAPI document) can be reached without a
principal, except the exact routes in :data:`~kdf_remote.daemon.auth.PUBLIC_ROUTES`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, cast

from litestar.enums import ScopeType

from kdf_remote.daemon.auth import PUBLIC_ROUTES, Authenticator
from kdf_remote.daemon.errors import ApiError, send_error
from kdf_remote.daemon.proxy import RpcFastPath, rpc_instance

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.types import Receive, Scope, Send

    from kdf_remote.daemon.services import InstanceService
    from kdf_remote.daemon.streams import StreamLimiter

__all__ = ["DaemonApp"]

log = logging.getLogger("kdf_remote.daemon")


class DaemonApp:
    """ASGI entry point of the daemon (what :func:`~kdf_remote.daemon.app.create_app` returns).

    Attributes:
        litestar: the Litestar application behind the gate (routes, OpenAPI, lifespan).
        service: the instance service the handlers use.
        limiter: the stream limiter (ended on shutdown).
    """

    def __init__(
        self,
        *,
        litestar: Litestar,
        authenticator: Authenticator,
        service: InstanceService,
        limiter: StreamLimiter,
        fast_path: RpcFastPath | None,
    ) -> None:
        self.litestar = litestar
        self.authenticator = authenticator
        self.service = service
        self.limiter = limiter
        self.fast_path = fast_path

    async def __call__(
        self,
        asgi_scope: MutableMapping[str, Any],
        asgi_receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        asgi_send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        # Typed as plain ASGI 3 so any server or test client accepts the app; Litestar's
        # narrower types apply from here on.
        scope = cast("Scope", asgi_scope)
        receive = cast("Receive", asgi_receive)
        send = cast("Send", asgi_send)
        if scope["type"] == ScopeType.HTTP:
            try:
                if (scope["method"], scope["path"]) in PUBLIC_ROUTES:
                    self.authenticator.check_peer(scope)
                else:
                    principal = await self.authenticator.authenticate(scope)
                    scope["user"] = principal
                    if self.fast_path is not None:
                        name = rpc_instance(scope)
                        if name is not None:
                            await self.fast_path(scope, receive, send, name, principal)
                            return
            except ApiError as exc:
                await send_error(send, exc)
                return
        elif scope["type"] == ScopeType.WEBSOCKET:
            # The API has no websocket routes; refuse before anything reads the handshake.
            await send({"type": "websocket.close", "code": 1008, "reason": ""})
            return
        await self.litestar(scope, receive, send)

    def begin_shutdown(self) -> None:
        """End open streams now, so a graceful shutdown does not wait for them."""
        self.limiter.close()
