"""``/v1/instances/{name}/backups``: create (operator), list (viewer), restore (admin)."""

from __future__ import annotations

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from kdf_remote.api import Backup, BackupList, RestoreResult
from kdf_remote.daemon.auth import needs
from kdf_remote.daemon.backups import BackupService
from kdf_remote.daemon.openapi import error_responses
from kdf_remote.daemon.principal import Role

__all__ = ["BackupsController"]


class BackupsController(Controller):
    """Instance backups."""

    path = "/v1/instances"
    tags = ["backups"]  # noqa: RUF012 (Litestar's declared class attribute)

    @post(
        "/{name:str}/backups",
        operation_id="createBackup",
        summary="Snapshot the instance's data directory (running or not)",
        description=(
            "SQLite databases through SQLite's online backup API, other files copied, into a "
            "tar.gz with a manifest of sha256 sums (AES-256-GCM encrypted with `backup.encrypt`)."
            " The oldest backups beyond `backup.retention` are deleted."
        ),
        status_code=201,
        responses=error_responses(400, 401, 403, 404, 409),
        **needs(Role.OPERATOR),
    )
    async def create_backup(
        self, name: FromPath[str], backups: NamedDependency[BackupService]
    ) -> Backup:
        """Create a backup."""
        return await backups.create(name)

    @get(
        "/{name:str}/backups",
        operation_id="listBackups",
        summary="The instance's backups, oldest first",
        responses=error_responses(400, 401, 403, 404, 409),
        **needs(Role.VIEWER),
    )
    async def list_backups(
        self, name: FromPath[str], backups: NamedDependency[BackupService]
    ) -> BackupList:
        """List backups."""
        return backups.list(name)

    @post(
        "/{name:str}/backups/{backup_id:str}/restore",
        operation_id="restoreBackup",
        summary="Replace the instance's data with a backup (the instance must be stopped)",
        description=(
            "409 unless the instance is stopped (or failed). The archive digest, decryption and "
            "every manifest entry are verified before the data directory is swapped; the data "
            "being replaced is snapshotted first (`safety_backup`). A failed restore leaves the "
            "current data untouched."
        ),
        status_code=200,
        responses=error_responses(400, 401, 403, 404, 409),
        **needs(Role.ADMIN),
    )
    async def restore_backup(
        self,
        name: FromPath[str],
        backup_id: FromPath[str],
        backups: NamedDependency[BackupService],
    ) -> RestoreResult:
        """Restore a backup."""
        return await backups.restore(name, backup_id)
