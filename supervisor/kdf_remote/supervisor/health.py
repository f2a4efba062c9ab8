"""Health samples of a running KDF: cpu, rss, open fds, threads and the ``version`` round trip."""

from __future__ import annotations

import time

import psutil

from kdf_remote.kdf import rpc
from kdf_remote.kdf.errors import KdfProtocolError
from kdf_remote.kdf.errors import KdfUnreachable as _TransportUnreachable
from kdf_remote.supervisor.errors import NotRunning
from kdf_remote.supervisor.instance import Instance
from kdf_remote.supervisor.models import HealthSample, InstanceState, now_utc

__all__ = ["lacks_first_sample", "sample_health"]


async def sample_health(inst: Instance) -> HealthSample:
    """Sample the instance's KDF now and keep the sample as its latest."""
    name = inst.spec.name
    proc, ps = inst.process, inst.ps
    if proc is None or ps is None:
        raise NotRunning(f"{name} has no KDF process")
    try:
        with ps.oneshot():
            cpu = ps.cpu_percent(None)
            rss = ps.memory_info().rss
            fds = ps.num_fds()
            threads = ps.num_threads()
    except psutil.Error:
        raise NotRunning(f"{name}: KDF pid {proc.pid} is gone") from None
    rtt_ms: float | None = None
    transport = inst.transport
    if transport is not None and inst.state is InstanceState.RUNNING:
        began = time.perf_counter()
        try:
            response = await transport.post(
                rpc.version_request(), timeout=inst.spec.timeouts.probe_s
            )
            rpc.parse_version(response.status, response.body)
            rtt_ms = (time.perf_counter() - began) * 1000.0
        except (_TransportUnreachable, KdfProtocolError):
            rtt_ms = None
    sample = HealthSample(
        name=name,
        at=now_utc(),
        state=inst.state,
        pid=proc.pid,
        cpu_percent=cpu,
        rss_bytes=rss,
        open_fds=fds,
        threads=threads,
        rpc_rtt_ms=rtt_ms,
    )
    inst.health = sample
    return sample


def lacks_first_sample(inst: Instance) -> bool:
    """A KDF that just reached ``running`` has no sample of its own yet.

    Sampling it on the next monitor pass (not a whole health interval later) gives ``status``
    its rss and open fds within a second of the start.
    """
    proc, sample = inst.process, inst.health
    return (
        proc is not None
        and inst.state is InstanceState.RUNNING
        and (sample is None or sample.pid != proc.pid)
    )
