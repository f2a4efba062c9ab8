"""Readiness probing: when a spawned (or re-adopted) KDF counts as ``running``.

Ready means KDF answers ``version`` on its RPC port *and* accepts the configured rpc_password
(an authenticated ``get_enabled_coins``), while the process we started is still alive.
"""

from __future__ import annotations

from collections.abc import Callable

from kdf_remote.kdf import rpc
from kdf_remote.kdf.errors import KdfProtocolError, KdfRpcError
from kdf_remote.kdf.errors import KdfUnreachable as _TransportUnreachable
from kdf_remote.kdf.transport import KdfTransport
from kdf_remote.supervisor.instance import Instance
from kdf_remote.supervisor.machine import Action
from kdf_remote.supervisor.process import KdfProcess

__all__ = ["NotReadyError", "wait_ready"]

# Readiness polling: fast at first (a healthy KDF binds within tens of ms, and every ms counts
# towards recovery time), then slower so a long start does not spin.
_READY_POLL_FIRST_S = 0.002
_READY_POLL_FAST_PHASE_S = 1.0
_READY_POLL_MAX_S = 0.1


class NotReadyError(Exception):
    """KDF did not become ready; ``credentials_refused`` when it rejected the rpc_password."""

    def __init__(self, reason: str, *, credentials_refused: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.credentials_refused = credentials_refused


async def wait_ready(inst: Instance, proc: KdfProcess, clock: Callable[[], float]) -> None:
    """Poll until ``proc`` is ready, or raise :class:`NotReadyError` (exit or start timeout)."""
    transport = inst.transport
    assert transport is not None
    timeouts = inst.spec.timeouts
    began = clock()
    interval = _READY_POLL_FIRST_S
    while True:
        if proc.has_exited:
            raise NotReadyError(f"{_exit_text(inst)} during start")
        if inst.machine.tick(clock()) is Action.START_TIMEOUT:
            raise NotReadyError(f"not ready within {timeouts.start_s:g} s")
        deadline = inst.machine.start_deadline or clock()
        remaining = max(0.001, deadline - clock())
        try:
            response = await transport.post(
                rpc.version_request(), timeout=min(timeouts.probe_s, remaining)
            )
            inst.kdf_version = rpc.parse_version(response.status, response.body).result
            break
        except (_TransportUnreachable, KdfProtocolError):
            pass
        await proc.wait(min(interval, remaining))
        if clock() - began > _READY_POLL_FAST_PHASE_S:
            interval = min(interval * 1.5, _READY_POLL_MAX_S)
    await _check_credentials(inst, transport)
    if proc.has_exited:
        # Something else answered on the port (ours died, e.g. exit 101: port busy).
        raise NotReadyError(f"{_exit_text(inst)} during start")


async def _check_credentials(inst: Instance, transport: KdfTransport) -> None:
    if inst.password is None:
        raise NotReadyError("no rpc_password known for this KDF", credentials_refused=True)
    try:
        response = await transport.post(
            rpc.get_enabled_coins_request(inst.password), timeout=inst.spec.timeouts.probe_s
        )
        rpc.parse_enabled_coins(response.status, response.body)
    except KdfRpcError as exc:
        if exc.is_auth_failure:
            raise NotReadyError(
                "KDF refused the configured rpc_password", credentials_refused=True
            ) from None
        raise NotReadyError(f"authenticated check failed: {exc.message}") from None
    except (_TransportUnreachable, KdfProtocolError) as exc:
        raise NotReadyError(f"authenticated check failed: {exc}") from None


def _exit_text(inst: Instance) -> str:
    return inst.last_exit.reason if inst.last_exit is not None else "exited"
