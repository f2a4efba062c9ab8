"""Serving the daemon: uvicorn (uvloop + httptools) configured from the settings.

:func:`build_server_config` is the one place server options are decided; the security package
extends it (hardened TLS context, trusted proxies) rather than configuring uvicorn elsewhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import uvicorn

if TYPE_CHECKING:
    from kdf_remote.daemon.asgi import DaemonApp
    from kdf_remote.daemon.settings import Settings

__all__ = ["GRACEFUL_SHUTDOWN_SECONDS", "DaemonServer", "build_server_config", "serve"]

GRACEFUL_SHUTDOWN_SECONDS: Final = 5.0
"""How long in-flight requests may finish after SIGTERM/SIGINT (streams end at once)."""


def build_server_config(settings: Settings, app: DaemonApp) -> uvicorn.Config:
    """The uvicorn configuration for ``app`` under ``settings``.

    Forwarded headers are ignored (``proxy_headers=False``): the client address the auth gate
    sees is the TCP peer, and only the security package may trust a proxy's headers.
    """
    options: dict[str, Any] = {
        "host": settings.daemon.host,
        "port": settings.daemon.port,
        "loop": "uvloop",
        "http": "httptools",
        "ws": "none",
        "lifespan": "on",
        "log_config": None,
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
    }
    if settings.security.ssl is not None:
        options["ssl_certfile"] = str(settings.security.ssl.cert_path)
        options["ssl_keyfile"] = str(settings.security.ssl.key_path)
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
    """Run ``app`` until SIGTERM or SIGINT."""
    server = DaemonServer(build_server_config(settings, app), app)
    server.run()
