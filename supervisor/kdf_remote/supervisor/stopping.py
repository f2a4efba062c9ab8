"""The stop escalation: ``stop`` RPC, then SIGINT, then SIGKILL to the process group.

Each step waits at most its timeout from :class:`~.spec.Timeouts`.
"""

from __future__ import annotations

import signal

from kdf_remote.kdf import rpc
from kdf_remote.kdf.errors import KdfProtocolError
from kdf_remote.kdf.errors import KdfUnreachable as _TransportUnreachable
from kdf_remote.supervisor.errors import SupervisorError
from kdf_remote.supervisor.instance import MAX_AUTH_FAILURES, Instance
from kdf_remote.supervisor.process import KdfProcess

__all__ = ["terminate"]


async def terminate(inst: Instance, proc: KdfProcess, *, graceful: bool) -> None:
    """Stop escalation: ``stop`` RPC, wait, SIGINT, wait, SIGKILL the group, wait."""
    timeouts = inst.spec.timeouts
    if inst.exit_reason is None:
        inst.exit_reason = "stopped on request" if graceful else "killed"
    if graceful:
        if await _send_stop_rpc(inst) and await proc.wait(timeouts.stop_rpc_s):
            return
        if proc.send_signal(signal.SIGINT) and await proc.wait(timeouts.sigint_s):
            return
    proc.kill_group()
    if await proc.wait(timeouts.sigkill_s):
        return
    raise SupervisorError(
        f"{inst.spec.name}: pid {proc.pid} survived SIGKILL for {timeouts.sigkill_s:g} s"
    )


async def _send_stop_rpc(inst: Instance) -> bool:
    transport, password = inst.transport, inst.password
    if transport is None or password is None or inst.auth_failures >= MAX_AUTH_FAILURES:
        return False
    try:
        response = await transport.post(
            rpc.stop_request(password), timeout=inst.spec.timeouts.probe_s
        )
        rpc.parse_result(response.status, response.body)
    except (_TransportUnreachable, KdfProtocolError):
        return False
    return True
