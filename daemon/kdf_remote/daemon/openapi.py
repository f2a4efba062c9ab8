"""OpenAPI details Litestar cannot infer: error responses, raw bodies, SSE alternatives.

Every handler declares each status it can return through :func:`error_responses`, so the served
document lists exactly what a client can see (checked by the schemathesis run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final

from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import OpenAPIRenderPlugin
from litestar.openapi.spec import (
    Components,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    RequestBody,
    Schema,
    SecurityScheme,
)

from kdf_remote.daemon.errors import ErrorBody

__all__ = [
    "SCHEMA_PATH",
    "ConfigOperation",
    "HealthStreamOperation",
    "PublicOperation",
    "RpcOperation",
    "SseOperation",
    "StartupConfigOperation",
    "error_responses",
    "openapi_config",
    "sse_event_schema",
]

SCHEMA_PATH: Final = "/v1/schema"
"""The document is served at ``/v1/schema/openapi.json`` (credentials required)."""
STARTUP_CONFIG_REF: Final = "#/components/schemas/KdfStartupConfig"

_DESCRIPTIONS = {
    400: "Invalid input (the detail names the field)",
    401: "No or invalid credentials",
    403: "The caller's role or address may not do this",
    404: "No such instance",
    409: "The instance is in the wrong state for this request",
    413: "The request body is larger than security.max_body_size",
    429: "Too many concurrent streams",
    502: "KDF did not answer (or did not start)",
}


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """Response specs for these statuses, all in the ``{"error", "detail"}`` shape."""
    return {
        status: ResponseSpec(
            data_container=ErrorBody, description=_DESCRIPTIONS[status], generate_examples=False
        )
        for status in statuses
    }


class _JsonOnly(OpenAPIRenderPlugin):
    """Serves the document as JSON only: no UI pages pulling scripts from elsewhere."""

    def render(self, request: Any, openapi_schema: dict[str, Any]) -> bytes:
        return self.render_json(request, openapi_schema)


def openapi_config(version: str) -> OpenAPIConfig:
    """The document's metadata and security schemes (API key as bearer token or header)."""
    return OpenAPIConfig(
        title="kdf-remote daemon",
        version=version,
        description=(
            "Supervises KDF instances on this server and proxies their RPC. Every route but "
            "/v1/health needs an API key: `Authorization: Bearer <key>` or `X-API-Key: <key>`."
        ),
        path=SCHEMA_PATH,
        render_plugins=[_JsonOnly(path="/openapi.json")],
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(type="http", scheme="bearer"),
                "apiKey": SecurityScheme(
                    type="apiKey", name="X-API-Key", security_scheme_in="header"
                ),
            }
        ),
        security=[{"bearer": []}, {"apiKey": []}],
    )


def _json_body(schema: Schema | Reference, description: str, *, required: bool) -> RequestBody:
    return RequestBody(
        content={"application/json": OpenAPIMediaType(schema=schema)},
        description=description,
        required=required,
    )


@dataclass
class PublicOperation(Operation):
    """An operation that needs no credentials (an explicit empty security requirement)."""

    def __post_init__(self) -> None:
        # Litestar drops an empty `security` list; without it the global requirement would apply.
        self.security = []


@dataclass
class StartupConfigOperation(Operation):
    """An operation whose optional body is a KDF startup config (start, restart)."""

    def __post_init__(self) -> None:
        self.request_body = _json_body(
            Reference(ref=STARTUP_CONFIG_REF),
            "A KDF startup config (kdf-facts 1.5; unknown fields refused). Empty: use the "
            "stored one. rpcip, rpc_local_only and rpcport are set by the daemon; a missing "
            "rpc_password keeps the stored one or is generated. Secrets are write-only.",
            required=False,
        )


@dataclass
class ConfigOperation(Operation):
    """``PUT .../config``: the body is a required KDF startup config."""

    def __post_init__(self) -> None:
        self.request_body = _json_body(
            Reference(ref=STARTUP_CONFIG_REF),
            "The KDF startup config to store (secrets write-only).",
            required=True,
        )


_KDF_CALL = Schema(
    type=OpenAPIType.OBJECT,
    properties={"method": Schema(type=OpenAPIType.STRING)},
    required=["method"],
    description='One KDF call, legacy (`method` and params) or v2 (`mmrpc: "2.0"`)',
)
_ANY_JSON = Schema(description="KDF's answer, passed through unchanged")


@dataclass
class RpcOperation(Operation):
    """``POST .../rpc``: one KDF call or a batch in, KDF's answer out, statuses included."""

    def __post_init__(self) -> None:
        self.request_body = _json_body(
            Schema(
                one_of=[_KDF_CALL, Schema(type=OpenAPIType.ARRAY, items=_KDF_CALL)],
            ),
            "A KDF request: a call object or a batch (array). Any `userpass` is replaced.",
            required=True,
        )
        answer = {"application/json": OpenAPIMediaType(schema=_ANY_JSON)}
        if self.responses is None:
            return
        for status, description in (
            ("200", "KDF's answer"),
            ("400", "KDF refused the call (its own error answer), or the body is not JSON"),
            ("403", "A reserved method, the caller's role, or KDF's own refusal"),
            ("500", "KDF's own error answer (legacy errors are HTTP 500 in KDF)"),
        ):
            self.responses[status] = OpenAPIResponse(description=description, content=answer)


def sse_event_schema(events: tuple[str, ...]) -> Schema:
    """One Server-Sent Event of a stream: its name, JSON ``data`` and optional ``id``."""
    return Schema(
        type=OpenAPIType.OBJECT,
        description="One Server-Sent Event; `data` is a JSON document",
        properties={
            "event": Schema(type=OpenAPIType.STRING, enum=list(events)),
            "data": Schema(type=OpenAPIType.STRING, content_media_type="application/json"),
            "id": Schema(type=OpenAPIType.STRING),
            "retry": Schema(type=OpenAPIType.INTEGER),
        },
        required=["data"],
    )


@dataclass
class SseOperation(Operation):
    """A GET that answers JSON, or ``text/event-stream`` when its stream flag is set.

    Subclasses name the events their stream sends in ``sse_events``.
    """

    sse_events: ClassVar[tuple[str, ...]] = ("end",)

    def __post_init__(self) -> None:
        if self.responses is None:
            return
        ok = self.responses.get("200")
        if isinstance(ok, OpenAPIResponse) and ok.content is not None:
            ok.content["text/event-stream"] = OpenAPIMediaType(
                schema=sse_event_schema(self.sse_events)
            )


@dataclass
class HealthStreamOperation(SseOperation):
    """``GET .../health``: ``health`` samples, then ``end``."""

    sse_events: ClassVar[tuple[str, ...]] = ("health", "end")
