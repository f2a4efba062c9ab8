"""The daemon's one error shape, ``{"error": code, "detail": text}``, and how errors map to it.

Exception tree of the REST layer::

    ApiError                      status + machine code + human detail
    ├── BadRequestError                400 bad_request
    ├── UnauthorizedError              401 unauthorized
    ├── ForbiddenError                 403 forbidden
    ├── NotFoundError                  404 not_found
    ├── ConflictError                  409 conflict (wrong state, no stored config)
    ├── PayloadTooLargeError           413 payload_too_large
    ├── TooManyRequestsError           429 too_many_streams / rate_limited
    └── BadGatewayError                502 kdf_unreachable

Litestar's own HTTP exceptions (unknown route, wrong method, bad query value) and supervisor
errors are rendered in the same shape. Anything else is a 500 whose body says nothing about the
failure: the traceback goes to the daemon log, never to the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec
from litestar import MediaType, Response
from litestar.exceptions import HTTPException, ValidationException

from kdf_remote.api import ErrorBody

if TYPE_CHECKING:
    from litestar.connection import Request
    from litestar.types import ExceptionHandlersMap, Send

__all__ = [
    "ApiError",
    "BadGatewayError",
    "BadRequestError",
    "ConflictError",
    "ErrorBody",
    "ForbiddenError",
    "NotFoundError",
    "PayloadTooLargeError",
    "TooManyRequestsError",
    "UnauthorizedError",
    "encode_error",
    "exception_handlers",
    "send_error",
    "send_json",
]

log = logging.getLogger("kdf_remote.daemon")


class ApiError(Exception):
    """An error the daemon reports to the caller with ``status``.

    A subclass names its status and default code in its header, e.g.
    ``class NotFoundError(ApiError, status=404, code="not_found")``.
    """

    status: int = 500
    code: str = "internal_error"
    _by_status: ClassVar[dict[int, str]] = {}

    def __init_subclass__(
        cls, *, status: int | None = None, code: str | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.status = status
        if code is not None:
            cls.code = code
        ApiError._by_status.setdefault(cls.status, cls.code)

    def __init__(
        self, detail: str, *, code: str | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.headers: dict[str, str] = dict(headers or {})


class BadRequestError(ApiError, status=400, code="bad_request"):
    """400: the request is malformed or a value is invalid."""


class UnauthorizedError(ApiError, status=401, code="unauthorized"):
    """401: no credentials, or credentials that are not valid."""

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(
            detail, code=code, headers={"WWW-Authenticate": 'Bearer realm="kdf-remote"'}
        )


class ForbiddenError(ApiError, status=403, code="forbidden"):
    """403: the caller's role or address may not do this."""


class NotFoundError(ApiError, status=404, code="not_found"):
    """404: no such instance (or route)."""


class ConflictError(ApiError, status=409, code="conflict"):
    """409: the instance is in the wrong state for this request."""


class PayloadTooLargeError(ApiError, status=413, code="payload_too_large"):
    """413: the request (or KDF's answer) exceeds the configured size."""


class TooManyRequestsError(ApiError, status=429, code="rate_limited"):
    """429: a concurrency or rate limit was hit."""


class BadGatewayError(ApiError, status=502, code="kdf_unreachable"):
    """502: KDF did not answer."""


# The code of each status Litestar itself may raise: the classes' own, plus 405 (no class).
_CODES = {**ApiError._by_status, 405: "method_not_allowed"}
_encoder = msgspec.json.Encoder()


def encode_error(code: str, detail: str) -> bytes:
    """The JSON body of an error response (for code outside Litestar, e.g. raw ASGI routes)."""
    return _encoder.encode(ErrorBody(error=code, detail=detail))


def _response(status: int, code: str, detail: str, headers: Mapping[str, str]) -> Response[Any]:
    return Response(
        content=ErrorBody(error=code, detail=detail),
        status_code=status,
        media_type=MediaType.JSON,
        headers=dict(headers),
    )


def _api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[Any]:
    return _response(exc.status, exc.code, exc.detail, exc.headers)


def _validation_detail(exc: ValidationException) -> str:
    extra = exc.extra if isinstance(exc.extra, list) else []
    parts = []
    for item in extra:
        if not isinstance(item, dict):
            continue
        source = item.get("source")
        where = f"{getattr(source, 'value', source)} parameter" if source else "value"
        key = item.get("key")
        message = str(item.get("message", "invalid value"))
        parts.append(f"{where} {key!r}: {message}" if key else f"{where}: {message}")
    return "; ".join(parts) or str(exc.detail)


def _http_exception(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    code = _CODES.get(status, HTTPStatus(status).phrase.lower().replace(" ", "_"))
    detail = _validation_detail(exc) if isinstance(exc, ValidationException) else str(exc.detail)
    return _response(status, code, detail, exc.headers or {})


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    # The path is logged with %r: a CR/LF in it must not forge a log line (GHSA-674p-xv2x-rf3g).
    log.error("unhandled error on %s %r", request.method, request.url.path, exc_info=exc)
    return _response(500, "internal_error", "the daemon failed to handle this request", {})


def exception_handlers() -> ExceptionHandlersMap:
    """Handlers mapping every exception to the one error shape."""
    return {ApiError: _api_error, HTTPException: _http_exception, Exception: _unexpected}


async def send_json(
    send: Send, status: int, body: bytes, headers: Mapping[str, str] | None = None
) -> None:
    """Send a complete JSON response on a raw ASGI channel (outside Litestar)."""
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("ascii")),
    ]
    raw_headers.extend(
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()
    )
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_error(send: Send, exc: ApiError) -> None:
    """Send ``exc`` in the one error shape on a raw ASGI channel."""
    await send_json(send, exc.status, encode_error(exc.code, exc.detail), exc.headers)
