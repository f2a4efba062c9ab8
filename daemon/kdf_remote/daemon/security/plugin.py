"""Wiring the security layer into a Litestar app.

The daemon (:func:`kdf_remote.daemon.app.create_app`) passes the plugin to its Litestar app, and
its :class:`~kdf_remote.daemon.asgi.DaemonApp` puts
:class:`~kdf_remote.daemon.security.middleware.SecurityMiddleware` in front of everything it
serves, the RPC fast path included. A bare Litestar app (tests, tools) uses ``install`` instead:

.. code-block:: python

    runtime = SecurityRuntime.from_settings(settings.security)
    security = SecurityPlugin(runtime)
    app = Litestar(route_handlers=[...], plugins=[security], ...)
    security.install(app)  # the gate in front of the router

The plugin adds the ``/v1/auth`` and ``/v1/audit`` controllers, makes
:func:`~kdf_remote.daemon.security.guards.enforce_declared_roles` the first app-level guard and
closes the runtime on shutdown. Forgetting the gate fails closed: the app-level guard refuses
every request the gate did not pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from litestar import Router
from litestar.plugins import InitPlugin

from kdf_remote.daemon.security.controllers import AuditController, AuthController
from kdf_remote.daemon.security.guards import enforce_declared_roles
from kdf_remote.daemon.security.middleware import SecurityMiddleware

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.config.app import AppConfig

    from kdf_remote.daemon.security.runtime import SecurityRuntime

__all__ = ["SecurityPlugin"]


class SecurityPlugin(InitPlugin):
    """Registers the security controllers and the deny-by-default guard."""

    def __init__(self, runtime: SecurityRuntime) -> None:
        self.runtime = runtime

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        """Add controllers, the app-level guard and the shutdown hook."""
        app_config.route_handlers.append(
            Router(
                path=self.runtime.policy.api_prefix,
                route_handlers=[AuthController, AuditController],
            )
        )
        app_config.guards = [enforce_declared_roles, *app_config.guards]
        app_config.on_shutdown.append(self._close)
        return app_config

    def _close(self) -> None:
        self.runtime.close()

    def install(self, app: Litestar) -> Litestar:
        """Put the security gate in front of ``app``'s router; returns ``app``."""
        if not isinstance(app.asgi_handler, SecurityMiddleware):
            app.asgi_handler = SecurityMiddleware(app.asgi_handler, self.runtime)  # type: ignore[assignment]
        return app
