"""``GET /v1/instances/{name}/health``: one sample, or a stream of them (SSE)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter
from litestar.response import ServerSentEvent

from kdf_remote.api import HealthSample
from kdf_remote.daemon.auth import needs
from kdf_remote.daemon.openapi import HealthStreamOperation, error_responses
from kdf_remote.daemon.principal import Role
from kdf_remote.daemon.services import InstanceService
from kdf_remote.daemon.streams import StreamLimiter

__all__ = ["HealthController"]

WatchQuery = Annotated[bool, QueryParameter(description="Stream samples (SSE)")]


class HealthController(Controller):
    """Instance health."""

    path = "/v1/instances"
    tags = ["health"]  # noqa: RUF012 (Litestar's declared class attribute)

    @get(
        "/{name:str}/health",
        operation_id="instanceHealth",
        summary="One health sample, or watch them (SSE)",
        description=(
            "Without watch: one sample. With `watch=true`: a `text/event-stream` of `health` "
            "events (data: a sample, `id`: a sequence number), sent at once, on every state "
            "change and every `daemon.health_check_interval`; `end` when the daemon ends it."
        ),
        responses=error_responses(400, 401, 403, 404, 429),
        operation_class=HealthStreamOperation,
        **needs(Role.VIEWER),
    )
    async def health(
        self,
        name: FromPath[str],
        service: NamedDependency[InstanceService],
        limiter: NamedDependency[StreamLimiter],
        watch: WatchQuery = False,
    ) -> Response[HealthSample]:
        """Health of one instance."""
        if not watch:
            return Response(await service.health(name))
        service.status(name)
        return ServerSentEvent(limiter.open(service.watch_health(name)))  # type: ignore[return-value]
