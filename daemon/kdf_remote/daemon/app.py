"""``create_app(settings)``: the daemon's application factory. Nothing is wired at import time.

The factory builds the security layer from ``security:`` (refusing weak key material), the
Litestar app (controllers by area, the security plugin's controllers and deny-by-default guard,
the one error shape, OpenAPI), the instance service over the supervisor, the stream limiter, and
the ASGI entry point with the security gate in front of it all
(:class:`~kdf_remote.daemon.asgi.DaemonApp`). The supervisor's instances are registered (and a
KDF left running is re-adopted) when the server starts; on shutdown KDF keeps running unless
``daemon.stop_instances_on_exit`` (or the ``--stop-instances-on-exit`` flag) asks otherwise.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from litestar import Litestar
from litestar.di import Provide

from kdf_remote.daemon.asgi import DaemonApp
from kdf_remote.daemon.backups import BackupService
from kdf_remote.daemon.compat.controller import KdfCompatController
from kdf_remote.daemon.controllers import (
    BackupsController,
    CapacityController,
    HealthController,
    InstancesController,
    KdfUpdateController,
    MetricsController,
    RpcController,
    SystemController,
    WorkersController,
    logs_controller,
)
from kdf_remote.daemon.errors import exception_handlers
from kdf_remote.daemon.metrics import make_metrics
from kdf_remote.daemon.openapi import openapi_config
from kdf_remote.daemon.proxy import RpcFastPath, RpcForwarder
from kdf_remote.daemon.rpc_lane import RpcLane
from kdf_remote.daemon.security.plugin import SecurityPlugin
from kdf_remote.daemon.security.runtime import SecurityRuntime
from kdf_remote.daemon.services import InstanceService
from kdf_remote.daemon.streams import StreamLimiter
from kdf_remote.daemon.updates import UpdateService
from kdf_remote.daemon.version import daemon_version
from kdf_remote.daemon.workers import WorkerService

if TYPE_CHECKING:
    from kdf_remote.daemon.settings import Settings
    from kdf_remote.supervisor.supervisor import Supervisor

__all__ = ["create_app"]


def _provide(value: object) -> Provide:
    return Provide(lambda: value, use_cache=True, sync_to_thread=False)


def create_app(
    settings: Settings,
    *,
    supervisor_factory: Callable[[], Supervisor] | None = None,
    security: SecurityRuntime | None = None,
    fast_rpc: bool = True,
    stop_instances_on_exit: bool | None = None,
) -> DaemonApp:
    """Build the daemon's ASGI application.

    Args:
        settings: the validated configuration.
        supervisor_factory: makes the supervisor of each server run (``Supervisor()`` by
            default); it is created when the server starts and closed when it stops.
        security: the security layer (built from ``settings.security`` by default; tests pass
            one with a fake clock).
        fast_rpc: serve the RPC proxy on the raw ASGI fast path (False: through Litestar).
        stop_instances_on_exit: overrides ``daemon.stop_instances_on_exit``.

    Raises:
        SecurityConfigError: missing or weak JWT key, unsafe keys file or audit log, bad limits.
    """
    if security is None:
        security = SecurityRuntime.from_settings(settings.security)
    if supervisor_factory is None:
        from kdf_remote.supervisor.supervisor import Supervisor

        supervisor_factory = Supervisor
    metrics = make_metrics(settings)
    service = InstanceService(settings, supervisor_factory, metrics=metrics)
    metrics.add_instances(service.snapshots)
    backups = BackupService(settings, service)
    updates = UpdateService(settings, service, backups, audit=security.audit)
    workers = WorkerService(settings, service, update_running=lambda: updates.running)
    limiter = StreamLimiter(settings.security.max_streams, settings.security.max_stream_duration)
    forwarder = RpcForwarder(service)
    stop_on_exit = (
        settings.daemon.stop_instances_on_exit
        if stop_instances_on_exit is None
        else stop_instances_on_exit
    )

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await service.open()
        try:
            yield
        finally:
            limiter.close()
            await updates.close()
            await service.close(stop_instances=stop_on_exit)

    litestar = Litestar(
        route_handlers=[
            SystemController,
            InstancesController,
            logs_controller(settings.security.max_log_tail),
            HealthController,
            RpcController,
            KdfCompatController,
            WorkersController,
            CapacityController,
            MetricsController,
            KdfUpdateController,
            BackupsController,
        ],
        dependencies={
            "service": _provide(service),
            "limiter": _provide(limiter),
            "forwarder": _provide(forwarder),
            "workers": _provide(workers),
            "metrics": _provide(metrics),
            "updates": _provide(updates),
            "backups": _provide(backups),
        },
        exception_handlers=exception_handlers(),
        openapi_config=openapi_config(daemon_version()),
        request_max_body_size=settings.security.max_body_size,
        plugins=[SecurityPlugin(security)],
        lifespan=[lifespan],
        logging_config=None,
        debug=False,
    )
    app = DaemonApp(
        litestar=litestar,
        security=security,
        service=service,
        limiter=limiter,
        fast_path=(
            RpcFastPath(forwarder, max_body=settings.security.max_body_size) if fast_rpc else None
        ),
        max_body=settings.security.max_body_size,
        metrics=metrics,
    )
    if fast_rpc:
        app.lane = RpcLane(
            gate=app.gate,
            forwarder=forwarder,
            metrics=metrics,
            max_body=settings.security.max_body_size,
        )
    return app
