"""The client's one exception tree.

Every error the library raises derives from `KdfRemoteError`::

    KdfRemoteError
    ├── ConfigError              a profile or stack output is missing or malformed (names the field)
    ├── TransportError           the daemon could not be reached or the exchange broke
    │   ├── ConnectError         no connection (refused, DNS, TLS handshake / certificate)
    │   ├── DaemonTimeoutError        connect/read/write/pool timeout
    │   └── ProtocolError        the daemon answered something that is not the documented shape
    ├── ApiError                 the daemon answered `{"error": code, "detail": text}`
    │   ├── BadRequest           400
    │   ├── Unauthorized         401  no or invalid credentials
    │   ├── Forbidden            403  role too low or address not allowed
    │   ├── NotFound             404  unknown instance, worker or route
    │   ├── Conflict             409  wrong state for the operation
    │   ├── PayloadTooLarge      413
    │   ├── RateLimited          429  carries `retry_after` (seconds, or None)
    │   ├── KdfUnavailable       502/503  KDF did not answer
    │   └── ServerError          any other 5xx
    └── Unsupported              the operation does not exist for this kind of profile (e.g. workers
                                 on an in-process local profile)

`is_auth_failure(exc)` tells the "cannot reach or authenticate" family (transport errors,
Unauthorized, Forbidden) apart from an operation that failed; the CLI maps the former to exit 3.
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "BadRequest",
    "ConfigError",
    "Conflict",
    "ConnectError",
    "DaemonTimeoutError",
    "Forbidden",
    "KdfRemoteError",
    "KdfUnavailable",
    "NotFound",
    "PayloadTooLarge",
    "ProtocolError",
    "RateLimited",
    "ServerError",
    "TransportError",
    "Unauthorized",
    "Unsupported",
    "error_for_status",
    "is_auth_failure",
]


class KdfRemoteError(Exception):
    """Base of every error raised by `kdf_remote.client`."""


class ConfigError(KdfRemoteError):
    """A profile, client YAML or stack output is missing a field or holds a bad value."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Unsupported(KdfRemoteError):  # noqa: N818  # names from the issue, as HTTP says them
    """The operation has no meaning for this kind of connection."""


class TransportError(KdfRemoteError):
    """The daemon could not be reached, or the exchange with it broke."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class ConnectError(TransportError):
    """No connection could be made (refused, unresolvable, TLS verification failed)."""


class DaemonTimeoutError(TransportError):
    """The daemon did not answer in time."""


class ProtocolError(TransportError):
    """The daemon's answer is not the documented shape."""


class ApiError(KdfRemoteError):
    """The daemon answered with an error document `{"error": code, "detail": text}`."""

    status: int = 0

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.status = status
        self.code = code
        self.detail = detail


class BadRequest(ApiError):  # noqa: N818  # names from the issue, as HTTP says them
    """400: the request was rejected as bad input."""


class Unauthorized(ApiError):  # noqa: N818  # names from the issue, as HTTP says them
    """401: no credentials, or the key/token is invalid, expired or revoked."""


class Forbidden(ApiError):  # noqa: N818  # names from the issue, as HTTP says them
    """403: the key's role is too low for the route, or the client address is not allowed."""


class NotFound(ApiError):  # noqa: N818  # names from the issue, as HTTP says them
    """404: unknown instance, worker, backup or route."""


class Conflict(ApiError):  # noqa: N818  # names from the issue, as HTTP says them
    """409: the instance is in the wrong state for the operation."""


class PayloadTooLarge(ApiError):  # noqa: N818  # names from the issue, as HTTP says them
    """413: the request body is larger than the daemon accepts."""


class RateLimited(ApiError):  # noqa: N818  # names from the issue, as HTTP says them
    """429: too many requests; `retry_after` is the daemon's hint in seconds (None when absent)."""

    def __init__(self, status: int, code: str, detail: str, retry_after: float | None) -> None:
        super().__init__(status, code, detail)
        self.retry_after = retry_after


class KdfUnavailable(ApiError):  # noqa: N818  # names from the issue, as HTTP says them
    """502/503: the daemon is up but KDF did not answer."""


class ServerError(ApiError):
    """Any other 5xx from the daemon."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    502: KdfUnavailable,
    503: KdfUnavailable,
}


def error_for_status(
    status: int, code: str, detail: str, *, retry_after: float | None = None
) -> ApiError:
    """Build the `ApiError` subclass that matches an HTTP status."""
    if status == 429:
        return RateLimited(status, code, detail, retry_after)
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else BadRequest
    return cls(status, code, detail)


def is_auth_failure(exc: BaseException) -> bool:
    """True for errors meaning "cannot reach or authenticate to the daemon"."""
    return isinstance(exc, TransportError | Unauthorized | Forbidden)
