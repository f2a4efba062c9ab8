"""The ``kdf_compat`` listener's uvicorn server, run beside the REST API's in one event loop.

The listener serves the same daemon: the same supervisor, allow-list, audit log and TLS
certificate (the security package's Mozilla-intermediate context, built from ``security.ssl``),
on ``kdf_compat.port``. It opens once the REST server is up (so the supervisor is ready), and it
follows the REST server's lifetime: the REST server owns SIGTERM/SIGINT, and when it begins to
shut down so does the listener. The process re-raises the signal only after both have stopped,
as a lone uvicorn server does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any, Final

import uvicorn

from kdf_remote.daemon.compat.app import CompatApp
from kdf_remote.daemon.http_protocol import daemon_protocol
from kdf_remote.daemon.security.tls import check_listen_address, ssl_context_factory

if TYPE_CHECKING:
    from kdf_remote.daemon.asgi import DaemonApp
    from kdf_remote.daemon.settings import Settings

__all__ = ["CompatServer", "build_compat_config", "build_compat_server", "run_with_compat"]

log = logging.getLogger("kdf_remote.daemon.compat")

GRACEFUL_SHUTDOWN_SECONDS: Final = 5.0
_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)
_POLL_SECONDS: Final = 0.05


def build_compat_config(settings: Settings, app: CompatApp) -> uvicorn.Config:
    """uvicorn's configuration of the listener: like the REST API's, on ``kdf_compat.port``.

    Raises:
        SecurityConfigError: plain HTTP (no ``security.ssl``) on a host other than loopback.
    """
    port = settings.kdf_compat.port
    if port is None:
        raise ValueError("kdf_compat.port is required when kdf_compat is enabled")
    ssl = settings.security.ssl
    check_listen_address(settings.daemon.host, tls=ssl is not None)
    options: dict[str, Any] = {
        "host": settings.daemon.host,
        "port": port,
        "loop": "uvloop",
        # httptools, KDF calls (POSTs) answered on the listener's lane, in one write each.
        "http": daemon_protocol(lane=app, is_single_body=_is_kdf_call),
        "ws": "none",
        # The REST server's lifespan opens and closes the supervisor for both listeners.
        "lifespan": "off",
        "log_config": None,
        "access_log": False,
        # The client address is the TCP peer; only the listener's own check may trust a proxy.
        "proxy_headers": False,
        "server_header": False,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
    }
    if ssl is not None:
        options["ssl_context_factory"] = ssl_context_factory(ssl.cert_path, ssl.key_path)
    return uvicorn.Config(app, **options)


def _is_kdf_call(method: str, path: str) -> bool:
    return method == "POST"


class CompatServer(uvicorn.Server):
    """The listener's server: no signal handlers of its own, stops when ``leader`` stops."""

    def __init__(self, config: uvicorn.Config, app: CompatApp, leader: uvicorn.Server) -> None:
        super().__init__(config)
        self.compat_app = app
        self.leader = leader

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The REST server owns the process's signals (see run_with_compat).
        yield

    async def on_tick(self, counter: int) -> bool:
        if self.leader.should_exit:
            self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: Any = None) -> None:
        # Event streams would otherwise hold the graceful shutdown for its whole timeout.
        self.compat_app.begin_shutdown()
        await super().shutdown(sockets)


def build_compat_server(
    settings: Settings, daemon: DaemonApp, leader: uvicorn.Server
) -> CompatServer | None:
    """The listener's server for ``daemon``, or None when ``kdf_compat`` is disabled.

    Raises:
        SecurityConfigError: plain HTTP (no ``security.ssl``) on a host other than loopback.
    """
    if not settings.kdf_compat.enabled:
        return None
    app = CompatApp.for_daemon(settings, daemon)
    config = build_compat_config(settings, app)
    log.info(
        "kdf_compat: KDF-compatible listener for instance %r on port %d (deny: %s)",
        settings.kdf_compat.instance,
        config.port,
        ", ".join(sorted(app.config.deny_methods)),
    )
    return CompatServer(config, app, leader)


async def _serve_both(leader: uvicorn.Server, compat: CompatServer) -> None:
    leading = asyncio.create_task(leader.serve())
    while not leader.started:
        if leading.done():
            await leading  # it failed to start (uvicorn exits): let that propagate
            return
        await asyncio.sleep(_POLL_SECONDS)
    try:
        await compat.serve()
    except BaseException:
        # The listener could not start (port taken, bad TLS files): stop the REST server too.
        leader.should_exit = True
        with contextlib.suppress(Exception, SystemExit):
            await leading
        raise
    await leading


def run_with_compat(leader: uvicorn.Server, compat: CompatServer) -> None:
    """Run both servers until SIGTERM or SIGINT, then re-raise the signal like uvicorn does."""
    received: list[int] = []

    def remember(signum: int, frame: FrameType | None) -> None:
        # Installed under the leader's own handlers: the leader restores it when it stops and
        # re-raises its signals into it, so the process lives until the listener stopped too.
        if signum not in received:
            received.append(signum)
        leader.handle_exit(signum, frame)

    originals = {signum: signal.signal(signum, remember) for signum in _SIGNALS}
    try:
        with asyncio.Runner(loop_factory=leader.config.get_loop_factory()) as runner:
            runner.run(_serve_both(leader, compat))
    finally:
        for signum, handler in originals.items():
            signal.signal(signum, handler)
    for number in reversed(received):
        signal.raise_signal(number)
