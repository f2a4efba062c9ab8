"""``/v1/kdf/update``: start a verified KDF update (admin, 202) and watch it (viewer)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from kdf_remote.api import UpdateRequest, UpdateResult
from kdf_remote.daemon.auth import needs, principal_of
from kdf_remote.daemon.openapi import error_responses
from kdf_remote.daemon.principal import Role
from kdf_remote.daemon.security.middleware import note_audit
from kdf_remote.daemon.updates import UpdateService

__all__ = ["KdfUpdateController"]


class KdfUpdateController(Controller):
    """KDF updates."""

    path = "/v1/kdf"
    tags = ["kdf"]  # noqa: RUF012 (Litestar's declared class attribute)

    @post(
        "/update",
        operation_id="startKdfUpdate",
        summary="Install a KDF release, restart every instance on it, roll back on failure",
        description=(
            "The zip (from an origin of `kdf.release_origins`; redirects may not leave it) is "
            "size-capped and its sha256 verified before anything changes. Every instance's "
            "data is snapshotted, then the instances restart one at a time; one that does not "
            "reach `running` rolls the whole update back. Answers 202 with the update's id; "
            "`GET /v1/kdf/update` shows the progress, then the outcome and reason (also in the "
            "audit log). 409 while another update runs or when updates are not configured."
        ),
        status_code=202,
        responses=error_responses(400, 401, 403, 409, 413),
        **needs(Role.ADMIN),
    )
    async def start_update(
        self,
        data: JSONBody[UpdateRequest],
        request: Request[Any, Any, Any],
        updates: NamedDependency[UpdateService],
    ) -> UpdateResult:
        """Start an update."""
        principal = principal_of(request.scope)
        started = await updates.start(data, principal.name if principal is not None else None)
        note_audit(request, target=f"kdf {data.version}", detail=f"update {started.id} started")
        return started

    @get(
        "/update",
        operation_id="getKdfUpdate",
        summary="Progress of the running KDF update, or the outcome of the last one",
        responses=error_responses(401, 403, 404),
        **needs(Role.VIEWER),
    )
    async def get_update(self, updates: NamedDependency[UpdateService]) -> UpdateResult:
        """The running or last update."""
        return updates.current()
