"""Backup and restore of a data directory written by a running kdf-sim (its ``MM2.db`` and the
wallet directory tree KDF creates under ``dbdir``)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from kdf_remote.sim.harness import offline_config, start_sim
from kdf_remote.supervisor.backup import BackupManager, InstanceNotStoppedError

pytestmark = pytest.mark.integration


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def test_snapshot_of_running_sim_restores_its_database(tmp_path: Path) -> None:
    """Snapshot while kdf-sim runs; restore is refused until it stops, then brings MM2.db and
    the directory tree back intact."""
    data = tmp_path / "data"
    data.mkdir()
    config = offline_config(
        "Backup-Sim-Pass-5!", passphrase="backup test seed words only", dbdir=str(data)
    )
    manager = BackupManager(tmp_path / "backups")
    with start_sim(config, cwd=tmp_path) as sim:
        db_path = next(data.rglob("MM2.db"))
        info = manager.create("main", data, label="while-running")
        with pytest.raises(InstanceNotStoppedError):
            manager.restore(info.id, data, is_stopped=lambda: sim.process.poll() is not None)
        sim.rpc({"userpass": "Backup-Sim-Pass-5!", "method": "stop"})
        sim.wait_exit()
        assert sim.process.poll() is not None
        expected = _tree(data)
        db_path.write_bytes(b"corrupted by a bad migration")
        result = manager.restore(info.id, data, is_stopped=lambda: sim.process.poll() is not None)
    assert result.files == info.files
    assert _tree(data) >= {p for p in expected if not p.endswith(("-wal", "-shm"))}
    db = sqlite3.connect(db_path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        assert {"migration", "my_swaps", "my_orders"} <= tables
    finally:
        db.close()
    safety = manager.verify(result.safety_backup or "")
    assert any(e.path.endswith("MM2.db") and e.kind == "file" for e in safety.files)
