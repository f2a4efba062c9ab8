"""Prometheus metrics: per-instance gauges from status snapshots, KDF RPC latency, daemon HTTP.

Everything lives on a private :class:`~prometheus_client.CollectorRegistry` (never the global
one), so two daemons in one process (tests) do not collide and nothing registers by import.

Per-instance values are not kept as mutable gauges: :class:`InstanceCollector` reads one status
snapshot per scrape, so a scrape shows exactly what ``GET /v1/instances`` would have shown.

The per-instance label is ``kdf_instance``, not ``instance``: Prometheus sets ``instance`` to the
scrape target and would rename ours to ``exported_instance``.

Label values that come from requests are bounded: RPC method names and HTTP routes beyond a cap
of distinct values are folded into ``other`` so a caller cannot grow the metric set without limit.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from kdf_remote.supervisor.models import InstanceState, InstanceStatus

__all__ = ["DaemonMetrics", "InstanceCollector", "LabelLimiter"]

RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
HTTP_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_LABEL_RE = re.compile(r"^[A-Za-z0-9_:./{}-]{1,100}$")
OTHER = "other"


class LabelLimiter:
    """Maps untrusted label values to themselves until ``cap`` distinct ones were seen."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        """The label to use for ``value``."""
        if not _LABEL_RE.match(value):
            return OTHER
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) >= self._cap:
                return OTHER
            self._seen.add(value)
            return value


class InstanceCollector(Collector):
    """Yields per-instance metric families from a status snapshot at each scrape.

    ``snapshot`` returns the current statuses (e.g. ``[sup.status(n) for n in sup.names()]``).
    With ``worker_metrics_enabled=False`` only ``primary`` is reported.
    """

    def __init__(
        self,
        snapshot: Callable[[], Iterable[InstanceStatus]],
        *,
        worker_metrics_enabled: bool = True,
        primary: str = "main",
    ) -> None:
        self._snapshot = snapshot
        self._workers = worker_metrics_enabled
        self._primary = primary

    def included(self, name: str) -> bool:
        """Whether metrics of instance ``name`` are exported."""
        return self._workers or name == self._primary

    def collect(self) -> Iterator[Metric]:
        """One family per quantity, one sample per included instance."""
        statuses = [s for s in self._snapshot() if self.included(s.name)]
        families = _Families()
        for status in statuses:
            families.add(status)
        yield from families.all()


class _Families:
    def __init__(self) -> None:
        labels = ["kdf_instance"]
        self.state = GaugeMetricFamily(
            "kdf_instance_state",
            "1 for the state the instance is in, 0 for the others",
            labels=["kdf_instance", "state"],
        )
        self.up = GaugeMetricFamily(
            "kdf_instance_up", "1 when KDF is alive and its RPC answered", labels=labels
        )
        self.restarts = CounterMetricFamily(
            "kdf_instance_restarts", "Automatic restarts of the instance", labels=labels
        )
        self.uptime = GaugeMetricFamily(
            "kdf_instance_uptime_seconds", "Seconds since the KDF process started", labels=labels
        )
        self.rss = GaugeMetricFamily(
            "kdf_instance_resident_memory_bytes",
            "Resident memory of the KDF process",
            labels=labels,
        )
        self.cpu = GaugeMetricFamily(
            "kdf_instance_cpu_percent",
            "CPU use of the KDF process in percent of one core",
            labels=labels,
        )
        self.fds = GaugeMetricFamily(
            "kdf_instance_open_fds", "Open file descriptors of the KDF process", labels=labels
        )
        self.exit_code = GaugeMetricFamily(
            "kdf_instance_last_exit_code",
            "Exit code of the last KDF process (negative: killed by that signal)",
            labels=labels,
        )
        self.memory_limit = GaugeMetricFamily(
            "kdf_instance_memory_limit_bytes", "Configured memory limit", labels=labels
        )
        self.info = InfoMetricFamily(
            "kdf_instance", "KDF version and RPC port of the instance", labels=labels
        )

    def add(self, s: InstanceStatus) -> None:
        name = [s.name]
        for state in InstanceState:
            self.state.add_metric([s.name, state.value], 1.0 if s.state is state else 0.0)
        self.up.add_metric(name, 1.0 if s.state is InstanceState.RUNNING else 0.0)
        self.restarts.add_metric(name, float(s.restarts))
        self.info.add_metric(
            name, {"kdf_version": s.kdf_version or "", "rpc_port": str(s.rpc_port)}
        )
        optional: list[tuple[GaugeMetricFamily, float | int | None]] = [
            (self.uptime, s.uptime_s),
            (self.rss, s.rss_bytes),
            (self.cpu, s.cpu_percent),
            (self.fds, s.open_fds),
            (self.memory_limit, s.limits.memory_bytes if s.limits else None),
            (self.exit_code, _exit_code(s)),
        ]
        for family, value in optional:
            if value is not None:
                family.add_metric(name, float(value))

    def all(self) -> list[Metric]:
        return [
            self.state,
            self.up,
            self.restarts,
            self.uptime,
            self.rss,
            self.cpu,
            self.fds,
            self.exit_code,
            self.memory_limit,
            self.info,
        ]


def _exit_code(status: InstanceStatus) -> int | None:
    last = status.last_exit
    if last is None:
        return None
    if last.code is not None:
        return last.code
    if last.signal is not None:
        return -_signal_number(last.signal)
    return None


def _signal_number(name: str) -> int:
    try:
        return int(signal.Signals[name if name.startswith("SIG") else f"SIG{name}"])
    except KeyError:
        return 0


_CHILD_CACHE_CAP = 4096
"""Distinct raw label inputs remembered; callers choose method names, so this is bounded."""


_K = TypeVar("_K")
_V = TypeVar("_V")


def _remember(cache: dict[_K, _V], key: _K, value: _V) -> None:
    if len(cache) < _CHILD_CACHE_CAP:
        cache[key] = value


class DaemonMetrics:
    """The daemon's registry: instance collector, KDF RPC latency and HTTP request metrics."""

    def __init__(
        self,
        *,
        method_label_cap: int = 200,
        route_label_cap: int = 100,
        worker_metrics_enabled: bool = True,
        primary: str = "main",
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._workers = worker_metrics_enabled
        self._primary = primary
        self._method = LabelLimiter(method_label_cap)
        self._route = LabelLimiter(route_label_cap)
        # Label children by raw inputs: the label checks and prometheus_client's labels()
        # lookup (a lock and a dict) run once per distinct call, not on every proxied request.
        self._rpc_children: dict[tuple[str, str, bool], Histogram] = {}
        self._http_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.rpc_latency = Histogram(
            "kdf_rpc_duration_seconds",
            "Round trip of RPC calls proxied to KDF",
            ["kdf_instance", "method", "outcome"],
            buckets=RPC_BUCKETS,
            registry=self.registry,
        )
        self.http_requests = Counter(
            "kdf_remote_http_requests",
            "HTTP requests served by the daemon",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "kdf_remote_http_request_duration_seconds",
            "Time to serve an HTTP request (first byte for streams)",
            ["method", "route"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )

    def add_instances(self, snapshot: Callable[[], Iterable[InstanceStatus]]) -> InstanceCollector:
        """Register the per-instance collector over ``snapshot``."""
        collector = InstanceCollector(
            snapshot, worker_metrics_enabled=self._workers, primary=self._primary
        )
        self.registry.register(collector)
        return collector

    def observe_rpc(self, instance: str, method: str, seconds: float, *, ok: bool) -> None:
        """Record one proxied RPC call (``ok``: KDF answered, whatever the JSON said)."""
        key = (instance, method, ok)
        child = self._rpc_children.get(key)
        if child is None:
            if not (self._workers or instance == self._primary):
                return
            outcome = "ok" if ok else "error"
            child = self.rpc_latency.labels(instance, self._method(method), outcome)
            _remember(self._rpc_children, key, child)
        child.observe(seconds)

    @contextmanager
    def time_rpc(self, instance: str, method: str) -> Iterator[None]:
        """Time the enclosed call; an exception counts as outcome ``error``."""
        start = time.perf_counter()
        ok = False
        try:
            yield
            ok = True
        finally:
            self.observe_rpc(instance, method, time.perf_counter() - start, ok=ok)

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one HTTP request; ``route`` is the route template, never the raw path."""
        key = (method, route, status)
        children = self._http_children.get(key)
        if children is None:
            verb = method.upper() if method.upper() in _HTTP_METHODS else OTHER
            path = self._route(route)
            children = (
                self.http_requests.labels(verb, path, str(status)),
                self.http_latency.labels(verb, path),
            )
            _remember(self._http_children, key, children)
        counter, latency = children
        counter.inc()
        latency.observe(seconds)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition body and its content type (OpenMetrics when ``accept`` asks for it)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
