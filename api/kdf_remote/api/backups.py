"""Backups of an instance's data directory: ``/v1/instances/{name}/backups``."""

from __future__ import annotations

from datetime import datetime

import msgspec

__all__ = ["Backup", "BackupList", "RestoreResult"]


class Backup(msgspec.Struct, frozen=True, kw_only=True):
    """One snapshot of an instance's data directory (tar.gz with a sha256 manifest)."""

    id: str
    instance: str
    created_at: datetime
    label: str
    """``manual``, ``pre-update-<version>`` or ``pre-restore``."""
    encrypted: bool
    size_bytes: int
    sha256: str
    """sha256 of the archive as written, checked before a restore."""
    files: int


class BackupList(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/instances/{name}/backups``: oldest first."""

    instance: str
    backups: list[Backup]


class RestoreResult(msgspec.Struct, frozen=True, kw_only=True):
    """``POST .../backups/{id}/restore``: the data directory now holds the backup."""

    instance: str
    backup_id: str
    files: int
    safety_backup: str | None = None
    """Id of the snapshot of the replaced data, taken just before the swap (restore it to undo)."""
