"""The supervisor's readings as the REST wire types (one mapping for the daemon and local mode)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from kdf_remote import api
from kdf_remote.supervisor.models import HealthSample, InstanceState, InstanceStatus
from kdf_remote.supervisor.wire import health_out, status_out

pytestmark = pytest.mark.unit

AT = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _status(state: InstanceState, pid: int | None) -> InstanceStatus:
    return InstanceStatus(
        name="main",
        state=state,
        pid=pid,
        started_at=AT if pid else None,
        uptime_s=12.5 if pid else None,
        restarts=2,
        last_exit=None,
        kdf_version="2.5.1-beta",
        rpc_port=7783,
        cpu_percent=None,
        rss_bytes=None,
        open_fds=None,
        data_dir="/var/lib/kdf",
        limits=None,
    )


def _sample(rtt: float | None) -> HealthSample:
    return HealthSample(
        name="main",
        at=AT,
        state=InstanceState.RUNNING,
        pid=4242,
        cpu_percent=1.5,
        rss_bytes=50_000_000,
        open_fds=12,
        threads=8,
        rpc_rtt_ms=rtt,
    )


def test_a_running_instance_answering_is_healthy() -> None:
    """The sample's figures and the status's version, uptime and restarts, in one reading."""
    reading = health_out(_status(InstanceState.RUNNING, 4242), _sample(0.8))
    assert (reading.healthy, reading.rpc_ok, reading.rpc_latency_ms) == (True, True, 0.8)
    assert (reading.pid, reading.threads, reading.at) == (4242, 8, AT)
    assert (reading.kdf_version, reading.uptime_s, reading.restarts) == ("2.5.1-beta", 12.5, 2)
    assert reading.state == "running"


def test_no_rpc_answer_or_no_sample_is_unhealthy() -> None:
    """A running KDF that did not answer ``version``, and a stopped one, are unhealthy."""
    silent = health_out(_status(InstanceState.RUNNING, 4242), _sample(None))
    assert (silent.healthy, silent.rpc_ok) == (False, False)
    stopped = health_out(_status(InstanceState.STOPPED, None), None)
    assert (stopped.healthy, stopped.rpc_ok, stopped.state, stopped.pid) == (
        False,
        False,
        "stopped",
        None,
    )


def test_status_out_round_trips_through_json() -> None:
    """What the daemon encodes from a status is what a client decodes."""
    wire = status_out(_status(InstanceState.RUNNING, 4242))
    decoded = msgspec.json.decode(msgspec.json.encode(wire), type=api.InstanceStatus)
    assert decoded == wire
    assert (decoded.state, decoded.pid, decoded.rpc_port) == ("running", 4242, 7783)
