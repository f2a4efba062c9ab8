"""Errors raised by :mod:`kdf_remote.kdf`.

One tree for the package::

    KdfError
    ├── KdfConfigError        a startup config field has a bad value (names field, value, expected)
    ├── KdfProtocolError      a body is not KDF's JSON, or a response has an unexpected shape
    │   └── KdfRpcError       KDF answered with an error (status, message, error_type)
    └── KdfUnreachable        KDF did not answer: connect refused/failed, timeout, connection broken
"""

from __future__ import annotations

__all__ = [
    "REDACTED",
    "KdfConfigError",
    "KdfError",
    "KdfProtocolError",
    "KdfRpcError",
    "KdfUnreachable",
]

REDACTED = "***"
"""What a secret value is replaced with wherever it would otherwise be shown."""


class KdfError(Exception):
    """Base of every error raised by :mod:`kdf_remote.kdf`."""


class KdfConfigError(KdfError, ValueError):
    """A KDF startup config field is invalid.

    ``value`` is the offending value as given, except for secret fields, whose value is always
    :data:`REDACTED` so an error message can be logged or returned without leaking it.
    """

    def __init__(self, field: str, value: object, expected: str, *, secret: bool = False) -> None:
        shown = REDACTED if secret else value
        super().__init__(f"{field}: got {shown!r}, expected {expected}")
        self.field = field
        self.value = shown
        self.expected = expected


class KdfProtocolError(KdfError, ValueError):
    """A request body or a KDF response does not have the shape KDF's protocol requires."""


class KdfRpcError(KdfProtocolError):
    """KDF answered a call with an error (legacy ``{"error": ...}`` or a v2 error object)."""

    def __init__(self, status: int, message: str, error_type: str | None = None) -> None:
        super().__init__(f"KDF error (HTTP {status}): {message}")
        self.status = status
        self.message = message
        self.error_type = error_type

    @property
    def is_auth_failure(self) -> bool:
        """True when KDF rejected the userpass (each one counts towards KDF's per-IP ban)."""
        return self.error_type in ("UserpassIsInvalid", "UserpassIsNotSet") or (
            "Userpass is invalid" in self.message or "Userpass is not set" in self.message
        )


class KdfUnreachable(KdfError, ConnectionError):  # noqa: N818 (name fixed by the interface)
    """KDF did not answer: nothing listens, the connection broke, or the call timed out."""
