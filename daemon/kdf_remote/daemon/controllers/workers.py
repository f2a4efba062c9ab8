"""Workers and capacity: ``/v1/workers`` (admin to change, viewer to read), ``/v1/capacity``."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from kdf_remote.api import Capacity, InstanceStatus, WorkerList, WorkerRemoved, WorkerRequest
from kdf_remote.daemon.auth import needs
from kdf_remote.daemon.openapi import error_responses
from kdf_remote.daemon.principal import Role
from kdf_remote.daemon.workers import WorkerService

__all__ = ["CapacityController", "WorkersController"]

PurgeQuery = Annotated[
    bool, QueryParameter(description="Also delete the worker's data directory and files")
]


class WorkersController(Controller):
    """``/v1/workers``."""

    path = "/v1/workers"
    tags = ["workers"]  # noqa: RUF012 (Litestar's declared class attribute)

    @get(
        "/",
        operation_id="listWorkers",
        summary="Status of every worker",
        responses=error_responses(401, 403),
        **needs(Role.VIEWER),
    )
    async def list_workers(self, workers: NamedDependency[WorkerService]) -> WorkerList:
        """Every worker's status, by name."""
        return workers.list()

    @post(
        "/",
        operation_id="createWorker",
        summary="Create a worker: its own port, data directory, log and limits",
        description=(
            "Admission: `max_workers`, a free port of `worker_ports`, and the memory limit "
            "against what `max_total_memory` has left (409 saying what is left). With "
            "`start` (the default) the answer comes once KDF answers RPC; a worker that does "
            "not start is not kept (502)."
        ),
        status_code=201,
        responses=error_responses(400, 401, 403, 409, 413, 502),
        **needs(Role.ADMIN),
    )
    async def create_worker(
        self, data: JSONBody[WorkerRequest], workers: NamedDependency[WorkerService]
    ) -> InstanceStatus:
        """Create (and start) a worker."""
        return await workers.create(data)

    @delete(
        "/{name:str}",
        operation_id="removeWorker",
        summary="Stop and remove a worker (its data is kept unless purge=true)",
        status_code=200,
        responses=error_responses(400, 401, 403, 404, 409),
        **needs(Role.ADMIN),
    )
    async def remove_worker(
        self,
        name: FromPath[str],
        workers: NamedDependency[WorkerService],
        purge: PurgeQuery = False,
    ) -> WorkerRemoved:
        """Remove a worker."""
        return await workers.remove(name, purge=purge)


class CapacityController(Controller):
    """``/v1/capacity``."""

    path = "/v1"
    tags = ["workers"]  # noqa: RUF012 (Litestar's declared class attribute)

    @get(
        "/capacity",
        operation_id="capacity",
        summary="Free ports, memory and CPU left for workers, and the enforcement mechanism",
        responses=error_responses(401, 403),
        **needs(Role.VIEWER),
    )
    async def capacity(self, workers: NamedDependency[WorkerService]) -> Capacity:
        """What is left for new workers."""
        return workers.capacity()
