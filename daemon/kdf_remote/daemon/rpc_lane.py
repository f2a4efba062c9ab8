"""The RPC lane: ``POST /v1/instances/{name}/rpc`` answered inside the HTTP protocol.

The RPC proxy is the hot path of every app using a remote KDF. Going through ASGI costs a task,
a scope, four wrapped ``send`` callables and two writes per call, which on loopback is more than
KDF's own answer takes. So when the daemon's HTTP protocol
(:func:`~kdf_remote.daemon.http_protocol.daemon_protocol`) has read a whole, small RPC request,
it hands it here instead: the security gate's own checks, refusals, headers and audit line
(:meth:`SecurityMiddleware.serve_direct`), then the shared :class:`RpcForwarder`, then the
request metrics. Requests the lane does not take (large or chunked bodies, pipelined requests,
``Expect: 100-continue``, HTTP/1.0) go the ASGI way, through the same gate and forwarder.
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Final

from kdf_remote.daemon.asgi import RPC_PATH_TEMPLATE, rpc_audit_detail
from kdf_remote.daemon.errors import ApiError, encode_error
from kdf_remote.daemon.proxy import require_rpc_role, rpc_instance_of
from kdf_remote.daemon.security.middleware import DENIED_STATUSES, DirectAnswer

if TYPE_CHECKING:
    from kdf_remote.daemon.principal import Principal
    from kdf_remote.daemon.proxy import RpcForwarder
    from kdf_remote.daemon.security.middleware import (
        DirectRequest,
        DirectResponse,
        SecurityMiddleware,
    )
    from kdf_remote.supervisor.metrics import DaemonMetrics

__all__ = ["LANE_BODY_LIMIT", "RpcLane"]

LANE_BODY_LIMIT: Final = 64 * 1024
"""Largest body the lane takes; uvicorn stops reading past this until the app asks for more."""
_ACTION: Final = f"POST {RPC_PATH_TEMPLATE}"


class RpcLane:
    """Serves the RPC route for the daemon's HTTP protocol (see the module docstring)."""

    def __init__(
        self,
        *,
        gate: SecurityMiddleware,
        forwarder: RpcForwarder,
        metrics: DaemonMetrics,
        max_body: int,
    ) -> None:
        self.gate = gate
        self.forwarder = forwarder
        self.metrics = metrics
        self.max_body = min(max_body, LANE_BODY_LIMIT)

    def match(self, method: str, path: str) -> str | None:
        """The instance name when ``method path`` is the RPC route, else None."""
        return rpc_instance_of(method, path)

    async def respond(self, request: DirectRequest, name: str) -> DirectResponse:
        """The whole answer to one RPC request for instance ``name``.

        Its ``after`` writes the audit line and records the request's metrics.
        """
        began = time.perf_counter()
        response = await self.gate.serve_direct(
            request, partial(self._call, name, request.body), action=_ACTION, target=name
        )
        elapsed = time.perf_counter() - began
        route = RPC_PATH_TEMPLATE if response.routed else "unmatched"
        audit = response.after

        def after() -> None:
            audit()
            self.metrics.observe_http("POST", route, response.status, elapsed)

        return replace(response, after=after)

    async def _call(self, name: str, body: bytes, principal: Principal) -> DirectAnswer:
        try:
            require_rpc_role(principal)
            answer = await self.forwarder.forward(name, body, principal)
        except ApiError as exc:
            refused = exc.status in DENIED_STATUSES
            return DirectAnswer(
                status=exc.status,
                body=encode_error(exc.code, exc.detail),
                audit_detail=f"{exc.code}: {exc.detail}" if refused else rpc_audit_detail(body),
                headers=tuple(
                    (key.lower().encode("latin-1"), value.encode("latin-1"))
                    for key, value in exc.headers.items()
                ),
            )
        return DirectAnswer(
            status=answer.status, body=answer.body, audit_detail=rpc_audit_detail(body)
        )
