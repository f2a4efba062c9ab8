"""Liveness of the daemon (``GET /v1/health``) and health readings of an instance."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

__all__ = ["DaemonHealth", "HealthSample"]


class DaemonHealth(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/health``: the daemon is up. Says nothing about instances (it is public)."""

    status: Literal["ok"] = "ok"
    version: str


class HealthSample(msgspec.Struct, frozen=True, kw_only=True):
    """One health reading of an instance: process and RPC liveness plus resource use.

    ``GET /v1/instances/{name}/health``, and each ``data`` of its ``?watch=true`` stream.
    """

    name: str
    state: str
    healthy: bool
    """Running, and KDF answered ``version`` within the probe timeout."""
    rpc_ok: bool
    rpc_latency_ms: float | None = None
    """Round trip of the ``version`` probe; None when it did not answer or was not tried."""
    kdf_version: str | None = None
    pid: int | None = None
    uptime_s: float | None = None
    restarts: int = 0
    cpu_percent: float | None = None
    rss_bytes: int | None = None
    open_fds: int | None = None
    threads: int | None = None
    at: datetime
