"""Prometheus exposition of instance status, RPC latency and daemon HTTP requests."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kdf_remote.supervisor.metrics import DaemonMetrics, LabelLimiter
from kdf_remote.supervisor.models import ExitInfo, InstanceLimits, InstanceState, InstanceStatus
from kdf_remote.supervisor.resource_limits import Mechanism

pytestmark = pytest.mark.unit


def _status(name: str, state: InstanceState, **fields: object) -> InstanceStatus:
    base: dict[str, object] = {
        "name": name,
        "state": state,
        "pid": None,
        "started_at": None,
        "uptime_s": None,
        "restarts": 0,
        "last_exit": None,
        "kdf_version": None,
        "rpc_port": 7783,
        "cpu_percent": None,
        "rss_bytes": None,
        "open_fds": None,
        "data_dir": f"/var/lib/kdf/{name}",
        "limits": None,
    }
    base.update(fields)
    return InstanceStatus(**base)  # type: ignore[arg-type]


STATUSES = [
    _status(
        "main",
        InstanceState.RUNNING,
        pid=100,
        uptime_s=12.5,
        restarts=2,
        kdf_version="2.5.1-beta_a9fbf60",
        cpu_percent=3.5,
        rss_bytes=150_000_000,
        open_fds=42,
        limits=InstanceLimits(
            memory_bytes=512 * 1024 * 1024,
            mechanism=Mechanism.CGROUP2,
            in_force=True,
            memory_enforced=True,
            detail="cgroup v2 memory.max / cpu.max",
        ),
        last_exit=ExitInfo(
            code=None, signal="SIGKILL", at=datetime.now(UTC), reason="memory_limit"
        ),
    ),
    _status(
        "w1",
        InstanceState.BACKOFF,
        rpc_port=9001,
        restarts=5,
        last_exit=ExitInfo(code=101, signal=None, at=datetime.now(UTC), reason="crashed"),
    ),
]


def _samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_instance_metrics_follow_the_snapshot() -> None:
    """Each scrape reads the statuses: state one-hot, up, restarts, rss, cpu, fds, exit code."""
    metrics = DaemonMetrics()
    metrics.add_instances(lambda: STATUSES)
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    samples = _samples(body)
    main = (("kdf_instance", "main"),)
    assert samples[("kdf_instance_state", (("kdf_instance", "main"), ("state", "running")))] == 1
    assert samples[("kdf_instance_state", (("kdf_instance", "main"), ("state", "backoff")))] == 0
    assert samples[("kdf_instance_state", (("kdf_instance", "w1"), ("state", "backoff")))] == 1
    assert samples[("kdf_instance_up", main)] == 1
    assert samples[("kdf_instance_up", (("kdf_instance", "w1"),))] == 0
    assert samples[("kdf_instance_restarts_total", main)] == 2
    assert samples[("kdf_instance_resident_memory_bytes", main)] == 150_000_000
    assert samples[("kdf_instance_cpu_percent", main)] == 3.5
    assert samples[("kdf_instance_open_fds", main)] == 42
    assert samples[("kdf_instance_uptime_seconds", main)] == 12.5
    assert samples[("kdf_instance_memory_limit_bytes", main)] == 512 * 1024 * 1024
    assert samples[("kdf_instance_last_exit_code", main)] == -9
    assert samples[("kdf_instance_last_exit_code", (("kdf_instance", "w1"),))] == 101
    assert ("kdf_instance_resident_memory_bytes", (("kdf_instance", "w1"),)) not in samples
    info = (("kdf_instance", "main"), ("kdf_version", "2.5.1-beta_a9fbf60"), ("rpc_port", "7783"))
    assert samples[("kdf_instance_info", info)] == 1


def test_worker_metrics_disabled_keeps_only_main() -> None:
    """worker_metrics_enabled=False omits workers from instance and RPC metrics."""
    metrics = DaemonMetrics(worker_metrics_enabled=False)
    metrics.add_instances(lambda: STATUSES)
    metrics.observe_rpc("w1", "my_balance", 0.01, ok=True)
    metrics.observe_rpc("main", "my_balance", 0.01, ok=True)
    body = metrics.render()[0].decode()
    assert 'kdf_instance="main"' in body
    assert 'kdf_instance="w1"' not in body


def test_rpc_latency_histogram_and_timer() -> None:
    """Observed calls land in the histogram with method and outcome; an exception is an error."""
    metrics = DaemonMetrics()
    metrics.observe_rpc("main", "version", 0.003, ok=True)
    with pytest.raises(RuntimeError), metrics.time_rpc("main", "my_balance"):
        raise RuntimeError("KDF did not answer")
    samples = _samples(metrics.render()[0])
    ok = (("kdf_instance", "main"), ("method", "version"), ("outcome", "ok"))
    assert samples[("kdf_rpc_duration_seconds_count", ok)] == 1
    bucket = "kdf_rpc_duration_seconds_bucket"
    assert samples[(bucket, tuple(sorted((*ok, ("le", "0.005")))))] == 1
    assert samples[(bucket, tuple(sorted((*ok, ("le", "0.0025")))))] == 0
    err = (("kdf_instance", "main"), ("method", "my_balance"), ("outcome", "error"))
    assert samples[("kdf_rpc_duration_seconds_count", err)] == 1


def test_http_helpers_bound_label_values() -> None:
    """Unknown verbs, odd routes and routes beyond the cap are folded into ``other``."""
    metrics = DaemonMetrics(route_label_cap=2)
    metrics.observe_http("GET", "/v1/instances/{name}", 200, 0.002)
    metrics.observe_http("BREW", "/v1/instances", 200, 0.002)
    metrics.observe_http("POST", "/v1/kdf/update", 409, 0.002)
    metrics.observe_http("GET", "/v1/audit", 200, 0.002)
    metrics.observe_http("GET", "/v1/x\nforged 1", 404, 0.002)
    samples = _samples(metrics.render()[0])
    routes = {
        dict(labels)["route"]
        for (name, labels) in samples
        if name.startswith("kdf_remote_http_requests")
    }
    methods = {
        dict(labels)["method"]
        for (name, labels) in samples
        if name.startswith("kdf_remote_http_requests")
    }
    assert routes == {"/v1/instances/{name}", "/v1/instances", "other"}
    assert methods == {"GET", "POST", "other"}
    key = (("method", "POST"), ("route", "other"), ("status", "409"))
    assert samples[("kdf_remote_http_requests_total", key)] == 1


def test_label_limiter_caps_distinct_values() -> None:
    """The limiter passes values through until its cap, then answers ``other``."""
    limit = LabelLimiter(2)
    assert [limit(v) for v in ("a", "b", "c", "a", "bad value")] == [
        "a",
        "b",
        "other",
        "a",
        "other",
    ]


def test_openmetrics_on_request() -> None:
    """An OpenMetrics Accept header gets the OpenMetrics format."""
    metrics = DaemonMetrics()
    metrics.add_instances(lambda: STATUSES)
    body, content_type = metrics.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


def test_registries_are_private() -> None:
    """Two DaemonMetrics never share series (no global registry)."""
    first, second = DaemonMetrics(), DaemonMetrics()
    first.observe_rpc("main", "version", 0.1, ok=True)
    assert b"kdf_rpc_duration_seconds_count" in first.render()[0]
    assert b'method="version"' not in second.render()[0]
