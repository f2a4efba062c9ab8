"""Wire types of the security endpoints (``/v1/auth/*``, ``/v1/audit``)."""

from __future__ import annotations

import msgspec

from kdf_remote.api import TokenResponse
from kdf_remote.daemon.security.audit import AuditEntry

__all__ = ["AuditPage", "RevokeRequest", "RevokeResponse", "TokenResponse"]


class RevokeRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/auth/revoke``: which token to refuse from now on."""

    jti: str | None = msgspec.field(default=None)
    """A token id (admin), or absent to revoke the access token sent with this request."""


class RevokeResponse(msgspec.Struct, frozen=True, kw_only=True):
    """The token id now refused."""

    revoked: str


class AuditPage(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/audit``: entries oldest first."""

    entries: list[AuditEntry]
    next_before_seq: int | None
    """Pass as ``before_seq`` to fetch the page before this one; None at the start of the log."""
