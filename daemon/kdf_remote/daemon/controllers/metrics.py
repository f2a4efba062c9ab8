"""``GET /v1/metrics``: Prometheus text exposition of the daemon's registry."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency

from kdf_remote.daemon.auth import needs
from kdf_remote.daemon.openapi import error_responses
from kdf_remote.daemon.principal import Role
from kdf_remote.supervisor.metrics import DaemonMetrics

__all__ = ["MetricsController"]


class MetricsController(Controller):
    """Prometheus metrics."""

    path = "/v1"
    tags = ["metrics"]  # noqa: RUF012 (Litestar's declared class attribute)

    @get(
        "/metrics",
        operation_id="metrics",
        summary="Prometheus text format",
        description=(
            "Per instance (label `kdf_instance`): state, up, restarts, uptime, resident memory, "
            "CPU, open fds, last exit code, memory limit, version; the KDF RPC latency "
            "histogram by instance and method; the daemon's HTTP request counts and latencies. "
            "Workers are left out when `worker_metrics_enabled` is false. OpenMetrics when the "
            "`Accept` header asks for it."
        ),
        media_type="text/plain; version=0.0.4; charset=utf-8",
        responses=error_responses(401, 403),
        **needs(Role.VIEWER),
    )
    async def metrics(
        self, request: Request[Any, Any, Any], metrics: NamedDependency[DaemonMetrics]
    ) -> Response[bytes]:
        """The current figures."""
        body, content_type = metrics.render(request.headers.get("accept"))
        return Response(content=body, media_type=content_type)
