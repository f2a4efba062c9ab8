"""``GET /v1/metrics`` plumbing: the daemon's Prometheus registry and the HTTP request timer.

The registry is :class:`~kdf_remote.supervisor.metrics.DaemonMetrics` (per-instance figures read
from status snapshots at each scrape, the KDF RPC latency histogram, HTTP request counts and
latencies). RPC calls are timed in :meth:`InstanceService.rpc`, which both the raw ASGI fast
path and the Litestar route go through. Every HTTP request, the fast path's and those the
security gate refuses included, is counted and timed by :class:`HttpMetricsMiddleware`, the
outermost layer of :class:`~kdf_remote.daemon.asgi.DaemonApp`, under its route template (never
the raw path, so a caller cannot grow the label set; requests refused before routing count
under ``unmatched``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from litestar.enums import ScopeType

from kdf_remote.supervisor.metrics import DaemonMetrics

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

    from kdf_remote.daemon.settings import Settings

__all__ = ["HttpMetricsMiddleware", "make_metrics"]


def make_metrics(settings: Settings) -> DaemonMetrics:
    """The daemon's registry, honouring ``worker_support.worker_metrics_enabled``."""
    return DaemonMetrics(worker_metrics_enabled=settings.worker_support.worker_metrics_enabled)


class HttpMetricsMiddleware:
    """Counts and times every HTTP request (to the first byte for streams)."""

    def __init__(self, app: ASGIApp, metrics: DaemonMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        state: dict[str, Any] = {"status": 500, "recorded": False}

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = int(message["status"])
                self._record(scope, state, began)
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            self._record(scope, state, began)

    def _record(self, scope: Scope, state: dict[str, Any], began: float) -> None:
        if state["recorded"]:
            return
        state["recorded"] = True
        route = scope.get("path_template") or "unmatched"
        method = str(scope.get("method", "GET"))
        self.metrics.observe_http(method, str(route), state["status"], time.perf_counter() - began)
