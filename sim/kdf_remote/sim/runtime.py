"""The running node: RPC binding, readiness line, stop and SIGINT handling, failure modes.

Shutdown mirrors KDF: the ``stop`` RPC answers first, the context stops 50 ms later, and the main
loop, which polls every 200 ms, then returns, so the process exits 0 about 50-250 ms after ``stop``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import time

import msgspec

from kdf_remote.sim.config import PanicError, resolve_rpc_addr
from kdf_remote.sim.failure_modes import FailureModes
from kdf_remote.sim.kdflog import KdfLog
from kdf_remote.sim.node import Node
from kdf_remote.sim.server import RpcServerProtocol, ServerContext

__all__ = ["PANIC_EXIT_CODE", "RequestLog", "format_panic", "run_node"]

PANIC_EXIT_CODE = 101
STOP_DELAY_S = 0.05
MAIN_LOOP_TICK_S = 0.2
_TICK_S = 0.1


def format_panic(panic: PanicError) -> str:
    """KDF's panic-hook text for a main-thread panic."""
    return f"panicked at {panic.location}:\n{panic}"


class RequestLog:
    """``KDF_SIM_REQUEST_LOG``: one JSON line per RPC received (method, mmrpc, peer)."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def __call__(self, request: object, peer: tuple[str, int]) -> None:
        fields = request if isinstance(request, dict) else {}
        method = fields.get("method")
        mmrpc = fields.get("mmrpc")
        line = msgspec.json.encode(
            {
                "method": method if isinstance(method, str) else None,
                "mmrpc": mmrpc if isinstance(mmrpc, str) else None,
                "peer": f"{peer[0]}:{peer[1]}",
            }
        )
        os.write(self._fd, line + b"\n")


class NodeRuntime:
    """Owns the event-loop side of one node until it exits."""

    def __init__(
        self,
        node: Node,
        modes: FailureModes,
        log: KdfLog,
        tls: ssl.SSLContext | None,
        request_log: RequestLog | None,
    ) -> None:
        self.node = node
        self.tls = tls
        self.request_log = request_log
        self.modes = modes
        self.log = log
        self.started = time.monotonic()
        self._loop = asyncio.get_running_loop()
        self._exit: asyncio.Future[int] = self._loop.create_future()
        self._server: asyncio.Server | None = None
        self._stopping = False
        self._ballast: list[bytes] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def run(self) -> int:
        """Bind the RPC (unless hanging), announce readiness, and wait for the exit code."""
        self._install_sigint()
        self.node.request_stop = self._on_stop_rpc
        if self.modes.log_rate > 0:
            self._tasks.append(self._loop.create_task(self._flood_logs()))
        if self.modes.grow_memory > 0:
            self._tasks.append(self._loop.create_task(self._grow_memory()))
        if not self.modes.hang:
            self._tasks.append(self._loop.create_task(self._start_rpc()))
        try:
            return await self._exit
        finally:
            for task in self._tasks:
                task.cancel()
            if self._server is not None:
                self._server.close()

    # -- start-up ---------------------------------------------------------------------------
    async def _start_rpc(self) -> None:
        if self.modes.start_delay > 0:
            await asyncio.sleep(self.modes.start_delay)
        try:
            host, port = resolve_rpc_addr(self.node.config)
            self._server = await self._bind(host, port)
        except PanicError as panic:
            self.log.log("common:203", format_panic(panic))
            self._finish(PANIC_EXIT_CODE)
            return
        bound_port = self._server.sockets[0].getsockname()[1]
        self.log.dashboard(
            "\U0001f609",
            "",
            "rpc:322",
            f">>>>>>>>>> DEX stats {_join(host, bound_port)} DEX stats API enabled at "
            f"unixtime.{int(time.time())} <<<<<<<<<",
        )
        if self.modes.exit_after is not None:
            self._loop.call_later(self.modes.exit_after, self._crash)

    async def _bind(self, host: str, port: int) -> asyncio.Server:
        context = ServerContext(self.node, self.request_log)
        try:
            return await self._loop.create_server(
                lambda: RpcServerProtocol(context),
                host,
                port,
                backlog=1024,
                reuse_address=True,
                ssl=self.tls,
            )
        except OSError as err:
            # Rust's io::Error display: the OS message and the errno.
            text = os.strerror(err.errno) if err.errno else str(err)
            reason = f"{text} (os error {err.errno})"
            raise PanicError(
                f"Failed to bind rpc server on {_join(host, port)}: {reason}",
                "mm2src/mm2_main/src/rpc.rs:449:29",
            ) from None

    # -- stopping ---------------------------------------------------------------------------
    def _install_sigint(self) -> None:
        if self.modes.ignore_sigint:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            return
        self._loop.add_signal_handler(signal.SIGINT, self._on_sigint)

    def _on_sigint(self) -> None:
        self.log.log("mm2:119", "Wrapping things up and shutting down...")
        self._stop_ctx()

    def _on_stop_rpc(self) -> None:
        if self.modes.ignore_stop:
            return
        self._loop.call_later(STOP_DELAY_S, self._stop_ctx)

    def _stop_ctx(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        if self._server is not None:
            self._server.close()
        # The main loop notices the stopped context on its next 200 ms poll.
        elapsed = time.monotonic() - self.started
        next_tick = MAIN_LOOP_TICK_S - (elapsed % MAIN_LOOP_TICK_S)
        self._loop.call_later(next_tick, self._finish, 0)

    def _finish(self, code: int) -> None:
        if not self._exit.done():
            self._exit.set_result(code)

    def _crash(self) -> None:
        """``KDF_SIM_EXIT_AFTER``: an abrupt exit, no shutdown work, like a crash."""
        os._exit(self.modes.exit_code)

    # -- failure modes ----------------------------------------------------------------------
    async def _flood_logs(self) -> None:
        rate = self.modes.log_rate
        size = self.modes.log_line_bytes
        begin = time.monotonic()
        written = 0
        while True:
            due = int((time.monotonic() - begin) * rate) - written
            if due > 0:
                self.log.raw(b"".join(_flood_line(written + i, size) for i in range(due)))
                written += due
            await asyncio.sleep(_TICK_S)

    async def _grow_memory(self) -> None:
        rate = self.modes.grow_memory
        begin = time.monotonic()
        grown = 0
        while True:
            target = int((time.monotonic() - begin) * rate)
            if target > grown:
                # Filled (not zeroed) bytes, so the pages are really resident.
                self._ballast.append(b"\xa5" * (target - grown))
                grown = target
            await asyncio.sleep(_TICK_S)


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _flood_line(sequence: int, size: int) -> bytes:
    t = time.gmtime()
    head = (
        f"{t.tm_mday:02d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}, "
        f"kdf_sim_flood:1] line {sequence} "
    ).encode()
    filler = max(size - len(head) - 1, 0)
    return head + b"x" * filler + b"\n"


async def run_node(
    node: Node,
    modes: FailureModes,
    log: KdfLog,
    *,
    tls: ssl.SSLContext | None = None,
    request_log: RequestLog | None = None,
) -> int:
    """Run ``node`` until it stops; returns the process exit code."""
    return await NodeRuntime(node, modes, log, tls, request_log).run()
