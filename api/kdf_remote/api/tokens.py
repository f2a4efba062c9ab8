"""``POST /v1/auth/token``: an API key exchanged for a short-lived JWT."""

from __future__ import annotations

import msgspec

__all__ = ["TokenResponse"]


class TokenResponse(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /v1/auth/token``: a short-lived access token for ``Authorization: Bearer``."""

    access_token: str
    token_type: str = "Bearer"  # noqa: S105  # the scheme name, not a secret
    expires_in: int
    """Seconds until the token expires."""
