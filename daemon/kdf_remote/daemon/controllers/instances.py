"""Instance status and lifecycle: list, show, start, stop, restart, store a config."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath

from kdf_remote.api import InstanceList, InstanceStatus
from kdf_remote.daemon.auth import needs
from kdf_remote.daemon.openapi import ConfigOperation, StartupConfigOperation, error_responses
from kdf_remote.daemon.principal import Role
from kdf_remote.daemon.schemas import StoredConfigOut
from kdf_remote.daemon.services import InstanceService

__all__ = ["InstancesController"]

_MUTATION_ERRORS = (400, 401, 403, 404, 409, 413, 502)


class InstancesController(Controller):
    """``/v1/instances``."""

    path = "/v1/instances"
    tags = ["instances"]  # noqa: RUF012 (Litestar's declared class attribute)

    @get(
        "/",
        operation_id="listInstances",
        summary="Status of every instance",
        responses=error_responses(401, 403),
        **needs(Role.VIEWER),
    )
    async def list_instances(self, service: NamedDependency[InstanceService]) -> InstanceList:
        """Status of every instance, ``main`` first."""
        return service.statuses()

    @get(
        "/{name:str}",
        operation_id="getInstance",
        summary="Status of one instance",
        responses=error_responses(400, 401, 403, 404),
        **needs(Role.VIEWER),
    )
    async def get_instance(
        self, name: FromPath[str], service: NamedDependency[InstanceService]
    ) -> InstanceStatus:
        """Status of one instance."""
        return service.status(name)

    @post(
        "/{name:str}/start",
        operation_id="startInstance",
        summary="Start with a KDF startup config (body) or the stored one",
        status_code=200,
        responses=error_responses(*_MUTATION_ERRORS),
        operation_class=StartupConfigOperation,
        **needs(Role.OPERATOR),
    )
    async def start(
        self,
        name: FromPath[str],
        request: Request[Any, Any, Any],
        service: NamedDependency[InstanceService],
    ) -> InstanceStatus:
        """Start the instance; answers once KDF is running (or failed to start)."""
        service.status(name)
        return await service.start(name, await request.body())

    @post(
        "/{name:str}/stop",
        operation_id="stopInstance",
        summary="Graceful stop (KDF stop RPC, then SIGINT, then SIGKILL)",
        status_code=200,
        responses=error_responses(400, 401, 403, 404, 409, 502),
        **needs(Role.OPERATOR),
    )
    async def stop(
        self, name: FromPath[str], service: NamedDependency[InstanceService]
    ) -> InstanceStatus:
        """Stop the instance; stopping a stopped instance is a no-op."""
        return await service.stop(name)

    @post(
        "/{name:str}/restart",
        operation_id="restartInstance",
        summary="Stop then start, optionally with a new config",
        status_code=200,
        responses=error_responses(*_MUTATION_ERRORS),
        operation_class=StartupConfigOperation,
        **needs(Role.OPERATOR),
    )
    async def restart(
        self,
        name: FromPath[str],
        request: Request[Any, Any, Any],
        service: NamedDependency[InstanceService],
    ) -> InstanceStatus:
        """Restart the instance."""
        service.status(name)
        return await service.restart(name, await request.body())

    @put(
        "/{name:str}/config",
        operation_id="putInstanceConfig",
        summary="Replace the stored startup config (secrets write-only)",
        responses=error_responses(400, 401, 403, 404, 409, 413),
        operation_class=ConfigOperation,
        **needs(Role.OPERATOR),
    )
    async def put_config(
        self,
        name: FromPath[str],
        request: Request[Any, Any, Any],
        service: NamedDependency[InstanceService],
    ) -> StoredConfigOut:
        """Store a new startup config; a running instance uses it from its next start."""
        service.status(name)
        return await service.put_config(name, await request.body())
