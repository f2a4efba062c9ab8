"""Backups of instance data directories (``/v1/instances/{name}/backups``).

Archives live under ``backup.dir`` (default ``<state_dir>/backups``), ``backup.retention`` per
instance. With ``backup.encrypt`` they are AES-256-GCM encrypted with the key in
``<state_dir>/backup.key``: 32 random bytes, 0600, made the first time a backup needs it. The
same manager takes the snapshot the updater makes before every update.

A restore needs the instance stopped (409 otherwise, asked again right before the swap), and
verifies the archive digest, decryption and every manifest entry before the data directory is
swapped; a failed restore leaves the current data untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from kdf_remote.api import Backup, BackupList, RestoreResult
from kdf_remote.daemon.errors import ConflictError, NotFoundError
from kdf_remote.supervisor.backup import (
    BackupError,
    BackupInfo,
    BackupIntegrityError,
    BackupManager,
    InstanceNotStoppedError,
    UnknownBackupError,
    generate_key_file,
)
from kdf_remote.supervisor.models import InstanceState

if TYPE_CHECKING:
    from kdf_remote.daemon.services import InstanceService
    from kdf_remote.daemon.settings import Settings

__all__ = ["KEY_FILE", "BackupService", "backup_out"]

KEY_FILE = "backup.key"
_STOPPED = (InstanceState.STOPPED, InstanceState.FAILED)


def backup_out(info: BackupInfo) -> Backup:
    """The API's view of a backup (its path on the server is left out)."""
    return Backup(
        id=info.id,
        instance=info.instance,
        created_at=datetime.fromtimestamp(info.created_at, UTC),
        label=info.label,
        encrypted=info.encrypted,
        size_bytes=info.size,
        sha256=info.sha256,
        files=info.files,
    )


@contextlib.contextmanager
def _backup_errors(name: str) -> Iterator[None]:
    try:
        yield
    except InstanceNotStoppedError as exc:
        raise ConflictError(
            f"instance {name!r} must be stopped to restore: {exc}", code="instance_running"
        ) from None
    except UnknownBackupError as exc:
        raise NotFoundError(str(exc)) from None
    except BackupIntegrityError as exc:
        raise ConflictError(f"backup refused: {exc}", code="backup_corrupt") from None
    except (BackupError, OSError) as exc:
        raise ConflictError(f"backup failed: {exc}", code="backup_failed") from None


class BackupService:
    """Create, list and restore snapshots of instance data directories."""

    def __init__(self, settings: Settings, instances: InstanceService) -> None:
        self.settings = settings
        self.instances = instances
        self.backup_dir = settings.backup.dir or settings.daemon.state_dir / "backups"
        self.key_file = settings.daemon.state_dir / KEY_FILE if settings.backup.encrypt else None
        self._manager: BackupManager | None = None
        self._lock = asyncio.Lock()

    @property
    def manager(self) -> BackupManager:
        """The backup manager (the encryption key is generated here on first use)."""
        if self._manager is None:
            if self.key_file is not None and not self.key_file.exists():
                self.key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                generate_key_file(self.key_file)
            self._manager = BackupManager(
                self.backup_dir, retention=self.settings.backup.retention, key_file=self.key_file
            )
        return self._manager

    def _data_dir(self, name: str) -> Path:
        return Path(self.instances.status(name).data_dir)

    async def create(self, name: str) -> Backup:
        """A consistent snapshot of ``name``'s data directory (running or not)."""
        data_dir = self._data_dir(name)
        async with self._lock:
            with _backup_errors(name):
                manager = self.manager
                info = await asyncio.to_thread(manager.create, name, data_dir)
        return backup_out(info)

    def list(self, name: str) -> BackupList:
        """Backups of ``name``, oldest first (404 for an unknown instance)."""
        self.instances.status(name)
        with _backup_errors(name):
            infos = self.manager.list(name)
        return BackupList(instance=name, backups=[backup_out(i) for i in infos])

    async def restore(self, name: str, backup_id: str) -> RestoreResult:
        """Replace ``name``'s data with backup ``backup_id`` (the instance must be stopped)."""
        data_dir = self._data_dir(name)
        if self.instances.status(name).state not in _STOPPED:
            raise ConflictError(
                f"instance {name!r} must be stopped to restore a backup", code="instance_running"
            )
        async with self._lock:
            with _backup_errors(name):
                manager = self.manager
                info = manager.get(backup_id)
                if info.instance != name:
                    raise NotFoundError(f"instance {name!r} has no backup {backup_id!r}")
                result = await asyncio.to_thread(
                    manager.restore,
                    backup_id,
                    data_dir,
                    is_stopped=lambda: self.instances.status(name).state in _STOPPED,
                    instance=name,
                )
        return RestoreResult(
            instance=name,
            backup_id=result.backup_id,
            files=result.files,
            safety_backup=result.safety_backup,
        )
