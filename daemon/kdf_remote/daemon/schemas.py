"""The daemon's own wire type: the answer of ``PUT /v1/instances/{name}/config``.

Every other REST shape lives in :mod:`kdf_remote.api`, shared with the client. This one stays
here because it embeds :class:`~kdf_remote.kdf.config.KdfStartupConfig` (and ``kdf_remote.api``
depends on msgspec alone); the client does not decode it. It cannot carry a secret.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from kdf_remote.kdf.config import KdfStartupConfig

__all__ = ["StoredConfigOut"]


class StoredConfigOut(msgspec.Struct, frozen=True, kw_only=True):
    """``PUT .../config``: what is stored, with every secret left out."""

    name: str
    config: KdfStartupConfig
    """The stored startup config without its secret fields."""
    secrets_set: list[str]
    """Names of the secret fields that hold a value (values are write-only)."""
    applies: Literal["next_start", "now"]
    """``next_start`` when the instance runs: the new config takes effect on (re)start."""
