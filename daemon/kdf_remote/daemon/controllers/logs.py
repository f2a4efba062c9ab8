"""``GET /v1/instances/{name}/logs``: a redacted tail, or a live Server-Sent Event stream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.openapi.spec import Parameter as OpenAPIParameter
from litestar.openapi.spec import Schema
from litestar.params import FromPath, QueryParameter
from litestar.response import ServerSentEvent

from kdf_remote.api import LogTail
from kdf_remote.daemon.auth import needs
from kdf_remote.daemon.errors import BadRequestError
from kdf_remote.daemon.openapi import SseOperation, error_responses
from kdf_remote.daemon.principal import Role
from kdf_remote.daemon.services import InstanceService
from kdf_remote.daemon.streams import StreamLimiter

__all__ = ["DEFAULT_TAIL", "logs_controller"]

DEFAULT_TAIL = 100
TailQuery = Annotated[int, QueryParameter(ge=0, description="Lines from the end")]
FollowQuery = Annotated[bool, QueryParameter(description="Stream new lines (SSE)")]


def logs_controller(max_tail: int) -> type[Controller]:
    """The logs controller, with ``tail`` bounded by ``security.max_log_tail``."""
    default_tail = min(DEFAULT_TAIL, max_tail)

    @dataclass
    class LogsOperation(SseOperation):
        """Log events, and the configured bound of ``tail`` (checked in the handler)."""

        sse_events: ClassVar[tuple[str, ...]] = ("log", "state", "end")

        def __post_init__(self) -> None:
            super().__post_init__()
            for parameter in self.parameters or []:
                if (
                    isinstance(parameter, OpenAPIParameter)
                    and parameter.name == "tail"
                    and isinstance(parameter.schema, Schema)
                ):
                    parameter.schema.maximum = max_tail

    class LogsController(Controller):
        """Instance logs."""

        path = "/v1/instances"
        tags = ["logs"]  # noqa: RUF012 (Litestar's declared class attribute)

        @get(
            "/{name:str}/logs",
            operation_id="instanceLogs",
            summary="Last lines of the log, or follow it (SSE)",
            description=(
                "Without follow: `{name, lines}`. With `follow=true`: a `text/event-stream` that "
                "first sends the last `tail` lines, then each new one. Events: `log` (data: "
                "`{line, at, stream}`), `state` (a supervisor event such as a crash or restart) "
                "and `end` (data: `{reason}`) when the daemon ends the stream."
            ),
            responses=error_responses(400, 401, 403, 404, 429),
            operation_class=LogsOperation,
            **needs(Role.VIEWER),
        )
        async def logs(
            self,
            name: FromPath[str],
            service: NamedDependency[InstanceService],
            limiter: NamedDependency[StreamLimiter],
            tail: TailQuery = default_tail,
            follow: FollowQuery = False,
        ) -> Response[LogTail]:
            """The log of one instance."""
            if tail > max_tail:
                raise BadRequestError(
                    f"query parameter 'tail': got {tail}, expected at most {max_tail} "
                    "(security.max_log_tail)"
                )
            if not follow:
                return Response(await service.log_tail(name, tail))
            return ServerSentEvent(limiter.open(service.follow_logs(name, tail)))  # type: ignore[return-value]

    return LogsController
