"""The daemon's version, from the installed distribution."""

from __future__ import annotations

import functools
from importlib import metadata

__all__ = ["daemon_version"]


@functools.cache
def daemon_version() -> str:
    """The ``kdf-remote`` distribution version (``0+unknown`` when not installed)."""
    try:
        return metadata.version("kdf-remote")
    except metadata.PackageNotFoundError:
        return "0+unknown"
