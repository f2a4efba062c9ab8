"""The one error shape of every non-2xx answer: ``{"error": code, "detail": text}``."""

from __future__ import annotations

import msgspec

__all__ = ["ErrorBody"]


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """Every error response of the daemon."""

    error: str
    """A stable machine-readable code, e.g. ``not_found`` or ``kdf_unreachable``."""
    detail: str
    """What went wrong, for a human; never a secret or a traceback."""
