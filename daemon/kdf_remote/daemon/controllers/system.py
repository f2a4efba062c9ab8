"""``GET /v1/health``: daemon liveness, the one route that needs no credentials."""

from __future__ import annotations

from litestar import Controller, get

from kdf_remote.api import DaemonHealth
from kdf_remote.daemon.openapi import PublicOperation
from kdf_remote.daemon.version import daemon_version

__all__ = ["SystemController"]


class SystemController(Controller):
    """Daemon-wide endpoints."""

    path = "/v1"
    tags = ["system"]  # noqa: RUF012 (Litestar's declared class attribute)

    @get(
        "/health",
        operation_id="daemonHealth",
        summary="Daemon liveness",
        description="Public: says only that the daemon answers, and its version.",
        operation_class=PublicOperation,
    )
    async def health(self) -> DaemonHealth:
        """The daemon is up."""
        return DaemonHealth(version=daemon_version())
