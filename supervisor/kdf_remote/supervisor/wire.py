"""The supervisor's readings as the REST contract's wire types (:mod:`kdf_remote.api`).

The daemon answers its API with these, and the client's local mode (KDF run on this machine by
the same supervisor) returns them too, so an app sees one shape whether KDF runs here or on a
server: one mapping, used by both.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from kdf_remote import api
from kdf_remote.supervisor.models import (
    HealthSample,
    InstanceState,
    InstanceStatus,
    SupervisorEvent,
)

__all__ = ["event_out", "health_out", "status_out"]


def status_out(status: InstanceStatus) -> api.InstanceStatus:
    """An instance's status as ``GET /v1/instances/{name}`` answers it."""
    return msgspec.convert(status, api.InstanceStatus, from_attributes=True)


def event_out(event: SupervisorEvent) -> api.StateEvent:
    """A supervisor event as the streams carry it."""
    return msgspec.convert(event, api.StateEvent, from_attributes=True)


def health_out(status: InstanceStatus, sample: HealthSample | None) -> api.HealthSample:
    """One health reading; ``sample`` None when the instance is not running (unhealthy)."""
    if sample is None:
        return api.HealthSample(
            name=status.name,
            state=status.state.value,
            healthy=False,
            rpc_ok=False,
            kdf_version=status.kdf_version,
            pid=status.pid,
            uptime_s=status.uptime_s,
            restarts=status.restarts,
            at=datetime.now(UTC),
        )
    rtt = sample.rpc_rtt_ms
    return api.HealthSample(
        name=status.name,
        state=sample.state.value,
        healthy=sample.state is InstanceState.RUNNING and rtt is not None,
        rpc_ok=rtt is not None,
        rpc_latency_ms=rtt,
        kdf_version=status.kdf_version,
        pid=sample.pid,
        uptime_s=status.uptime_s,
        restarts=status.restarts,
        cpu_percent=sample.cpu_percent,
        rss_bytes=sample.rss_bytes,
        open_fds=sample.open_fds,
        threads=sample.threads,
        at=sample.at,
    )
