"""Serving the daemon: uvicorn (uvloop + httptools) configured from the settings.

:func:`build_server_config` is the one place server options are decided: plain HTTP only on
loopback, and over TLS the security package's Mozilla-intermediate context (uvicorn's own would
admit CBC suites).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import uvicorn

from kdf_remote.daemon.http_protocol import daemon_protocol
from kdf_remote.daemon.proxy import is_rpc_route
from kdf_remote.daemon.security.tls import check_listen_address, ssl_context_factory

if TYPE_CHECKING:
    from kdf_remote.daemon.asgi import DaemonApp
    from kdf_remote.daemon.settings import Settings

__all__ = ["GRACEFUL_SHUTDOWN_SECONDS", "DaemonServer", "build_server_config", "serve"]

GRACEFUL_SHUTDOWN_SECONDS: Final = 5.0
"""How long in-flight requests may finish after SIGTERM/SIGINT (streams end at once)."""


def build_server_config(settings: Settings, app: DaemonApp) -> uvicorn.Config:
    """The uvicorn configuration for ``app`` under ``settings``.

    Forwarded headers are ignored (``proxy_headers=False``): the client address the security
    gate sees is the TCP peer, and only the gate may trust a proxy's headers
    (``security.trusted_proxies``).

    Raises:
        SecurityConfigError: plain HTTP (no ``security.ssl``) on a host other than loopback.
    """
    ssl = settings.security.ssl
    check_listen_address(settings.daemon.host, tls=ssl is not None)
    options: dict[str, Any] = {
        "host": settings.daemon.host,
        "port": settings.daemon.port,
        "loop": "uvloop",
        # httptools, with the RPC route served by the daemon's RPC lane (the hot path).
        "http": daemon_protocol(lane=app.lane, is_single_body=is_rpc_route),
        "ws": "none",
        "lifespan": "on",
        "log_config": None,
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
    }
    if ssl is not None:
        # Built when the server starts: a bad or world-readable key stops it there.
        options["ssl_context_factory"] = ssl_context_factory(ssl.cert_path, ssl.key_path)
    return uvicorn.Config(app, **options)


class DaemonServer(uvicorn.Server):
    """uvicorn's server, ending the daemon's streams as soon as shutdown begins."""

    def __init__(self, config: uvicorn.Config, app: DaemonApp) -> None:
        super().__init__(config)
        self.daemon_app = app

    async def shutdown(self, sockets: Any = None) -> None:
        # Streams would otherwise hold the graceful shutdown for its whole timeout.
        self.daemon_app.begin_shutdown()
        await super().shutdown(sockets)


def serve(settings: Settings, app: DaemonApp) -> None:
    """Run ``app`` until SIGTERM or SIGINT, with the ``kdf_compat`` listener when enabled."""
    from kdf_remote.daemon.compat.server import build_compat_server, run_with_compat

    server = DaemonServer(build_server_config(settings, app), app)
    compat = build_compat_server(settings, app, leader=server)
    if compat is None:
        server.run()
    else:
        run_with_compat(server, compat)
