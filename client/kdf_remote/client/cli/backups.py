"""Backup commands: create, list, restore (`/v1/instances/{name}/backups`)."""

from __future__ import annotations

from kdf_remote.client.cli._common import (
    DEFAULT,
    EXIT_OK,
    Options,
    console,
    escape,
    print_json,
    progress,
    run,
)
from kdf_remote.client.cli.instances import remote_controller

__all__ = ["create", "list_", "restore"]


def create(instance: str = "main", /, *, options: Options = DEFAULT) -> int:
    """Back up an instance's KDF data directory on the daemon.

    Parameters
    ----------
    instance
        Instance name.
    """

    def body() -> int:
        with remote_controller(options) as kdf, progress(options, f"backing up {instance}..."):
            backup = kdf.create_backup(instance=instance)
        if options.json:
            print_json(backup)
        else:
            console().print(f"backup [bold]{escape(backup.id)}[/] of {escape(instance)} created")
        return EXIT_OK

    return run(options, body)


def list_(instance: str = "main", /, *, options: Options = DEFAULT) -> int:
    """List an instance's backups.

    Parameters
    ----------
    instance
        Instance name.
    """

    def body() -> int:
        with remote_controller(options) as kdf:
            backups = kdf.backups(instance=instance)
        if options.json:
            print_json({"instance": instance, "backups": backups})
            return EXIT_OK
        from rich.table import Table

        from kdf_remote.client.cli.render import human_bytes

        table = Table(header_style="bold")
        for column in ("ID", "CREATED", "LABEL", "SIZE", "FILES", "ENCRYPTED"):
            table.add_column(column)
        for backup in backups:
            table.add_row(
                backup.id,
                backup.created_at.isoformat(timespec="seconds"),
                backup.label or "-",
                human_bytes(backup.size_bytes),
                str(backup.files),
                "yes" if backup.encrypted else "no",
            )
        console().print(table)
        return EXIT_OK

    return run(options, body)


def restore(instance: str, backup_id: str, /, *, options: Options = DEFAULT) -> int:
    """Restore a backup into a stopped instance (the daemon verifies the archive first and
    snapshots the data it replaces).

    Parameters
    ----------
    instance
        Instance name.
    backup_id
        Backup id from `backup list`.
    """

    def body() -> int:
        with remote_controller(options) as kdf, progress(options, f"restoring {backup_id}..."):
            result = kdf.restore_backup(backup_id, instance=instance)
        if options.json:
            print_json(result)
        else:
            undo = f"; undo with backup {result.safety_backup}" if result.safety_backup else ""
            console().print(
                escape(f"{instance} restored from {backup_id} ({result.files} files){undo}")
            )
        return EXIT_OK

    return run(options, body)
