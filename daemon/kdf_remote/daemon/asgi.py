"""The ASGI application the server runs: the security gate, the RPC fast path, then Litestar.

Every request first passes :class:`~kdf_remote.daemon.security.middleware.SecurityMiddleware`
(client address, allow-list, rate limits, body cap, credentials, signatures, audit), before
Litestar's routing: no route, including ones added later, Litestar's automatic OPTIONS handlers
and the OpenAPI document, can be reached without a principal, except the exact routes in
:data:`~kdf_remote.daemon.auth.PUBLIC_ROUTES`. The RPC fast path sits behind the gate too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Final, cast

from litestar.enums import ScopeType

from kdf_remote.daemon.auth import principal_of
from kdf_remote.daemon.errors import UnauthorizedError, send_error
from kdf_remote.daemon.metrics import HttpMetricsMiddleware
from kdf_remote.daemon.proxy import RpcFastPath, rpc_instance
from kdf_remote.daemon.security.middleware import SecurityMiddleware, set_audit_note
from kdf_remote.kdf.errors import KdfProtocolError
from kdf_remote.kdf.rpc import method_names

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send

    from kdf_remote.daemon.rpc_lane import RpcLane
    from kdf_remote.daemon.security.runtime import SecurityRuntime
    from kdf_remote.daemon.services import InstanceService
    from kdf_remote.daemon.streams import StreamLimiter
    from kdf_remote.supervisor.metrics import DaemonMetrics

__all__ = ["RPC_PATH_TEMPLATE", "DaemonApp", "rpc_audit_detail"]

_PlainAsgi = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[MutableMapping[str, Any]]],
        Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]

RPC_PATH_TEMPLATE: Final = "/v1/instances/{name}/rpc"
"""The RPC route as Litestar names it in ``scope["path_template"]`` (the audit's action)."""
MAX_AUDITED_METHODS: Final = 8
MAX_METHOD_CHARS: Final = 64


class DaemonApp:
    """ASGI entry point of the daemon (what :func:`~kdf_remote.daemon.app.create_app` returns).

    Attributes:
        litestar: the Litestar application behind the gate (routes, OpenAPI, lifespan).
        security: the security layer's state (keys, tokens, limiters, audit).
        service: the instance service the handlers use.
        limiter: the stream limiter (ended on shutdown).
        gate: the security gate in front of everything.
        lane: the RPC lane the HTTP protocol serves the RPC route with, when enabled.
    """

    def __init__(
        self,
        *,
        litestar: Litestar,
        security: SecurityRuntime,
        service: InstanceService,
        limiter: StreamLimiter,
        fast_path: RpcFastPath | None,
        max_body: int,
        metrics: DaemonMetrics,
    ) -> None:
        self.litestar = litestar
        self.security = security
        self.service = service
        self.limiter = limiter
        self.fast_path = fast_path
        self._max_body = max_body
        # Outermost: the request counter and timer see everything, including calls the security
        # gate refuses and the RPC fast path that never reaches Litestar's routing.
        self.gate = SecurityMiddleware(self._dispatch, security)
        self.lane: RpcLane | None = None
        """Serves the RPC route inside the HTTP protocol (set by ``create_app``)."""
        self._entry = cast("_PlainAsgi", HttpMetricsMiddleware(cast("ASGIApp", self.gate), metrics))

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        # Typed as plain ASGI 3 so any server or test client accepts the app.
        await self._entry(scope, receive, send)

    def _dispatch(
        self,
        asgi_scope: MutableMapping[str, Any],
        asgi_receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        asgi_send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> Awaitable[None]:
        """Serve what the gate admitted: RPC calls by :meth:`_rpc`, the rest by Litestar.

        Returns the coroutine to await rather than awaiting it: one frame less on the hot path.
        """
        scope = cast("Scope", asgi_scope)
        receive = cast("Receive", asgi_receive)
        send = cast("Send", asgi_send)
        if scope["type"] == ScopeType.HTTP:
            name = rpc_instance(scope)
            if name is not None:
                return self._rpc(scope, receive, send, name)
        return self.litestar(scope, receive, send)

    async def _rpc(self, scope: Scope, receive: Receive, send: Send, name: str) -> None:
        """One proxied KDF call; its audit line names the instance and the methods called."""
        if self.fast_path is None:
            copy = _BodyCopy(receive, self._max_body)
            try:
                await self.litestar(scope, copy.receive, send)
            finally:
                _note_rpc(scope, name, copy.data)
            return
        body = b""
        try:
            principal = principal_of(scope)
            if principal is None:
                # Unreachable behind the gate (the route is not public): fail closed anyway.
                await send_error(send, UnauthorizedError("missing credentials"))
                return
            scope["path_template"] = RPC_PATH_TEMPLATE
            body = await self.fast_path(scope, receive, send, name, principal)
        finally:
            _note_rpc(scope, name, body)

    def begin_shutdown(self) -> None:
        """End open streams now, so a graceful shutdown does not wait for them."""
        self.limiter.close()


class _BodyCopy:
    """Keeps the first ``limit`` bytes of the request body as the app reads it."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self._limit = limit
        self._chunks = bytearray()

    async def receive(self) -> ReceiveMessage:
        message = await self._receive()
        if message["type"] == "http.request":
            room = self._limit - len(self._chunks)
            if room > 0:
                self._chunks += message.get("body", b"")[:room]
        return message

    @property
    def data(self) -> bytes:
        """What was read so far (at most ``limit`` bytes)."""
        return bytes(self._chunks)


def _note_rpc(scope: Scope, name: str, body: bytes) -> None:
    set_audit_note(cast("dict[str, Any]", scope), target=name, detail=rpc_audit_detail(body))


def rpc_audit_detail(body: bytes) -> str:
    """``methods: a, b`` for an RPC body: the method names only, never a parameter.

    Names are de-duplicated in order, each cut to a few dozen characters, and at most a handful
    are listed, so a large batch still makes a short line.
    """
    if not body:
        return "methods: none (empty body)"
    try:
        names = method_names(body)
    except KdfProtocolError:
        return "methods: unknown (not a JSON-RPC body)"
    unique = list(dict.fromkeys(name[:MAX_METHOD_CHARS] or "?" for name in names))
    shown = ", ".join(unique[:MAX_AUDITED_METHODS])
    extra = len(unique) - MAX_AUDITED_METHODS
    return f"methods: {shown}" + (f" (+{extra} more)" if extra > 0 else "")
