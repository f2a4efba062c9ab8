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
from typing import TYPE_CHECKING

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
        status = 0  # not started yet

        async def timed_send(message: Message) -> None:
            nonlocal status
            if not status and message["type"] == "http.response.start":
                status = int(message["status"])
                self._record(scope, status, began)
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            if not status:
                # No response started: the app failed (the server answers 500) or the client left.
                self._record(scope, 500, began)

    def _record(self, scope: Scope, status: int, began: float) -> None:
        route = scope.get("path_template") or "unmatched"
        method = str(scope.get("method", "GET"))
        self.metrics.observe_http(method, str(route), status, time.perf_counter() - began)
