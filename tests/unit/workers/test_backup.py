"""Backups of a data directory: SQLite through the online backup API, manifest digests,
encryption, retention, and restores that either fully succeed or change nothing."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import tarfile
from pathlib import Path

import pytest

from kdf_remote.supervisor.backup import (
    BackupError,
    BackupIntegrityError,
    BackupManager,
    InstanceNotStoppedError,
    generate_key_file,
)

pytestmark = pytest.mark.unit


def _make_data(root: Path) -> sqlite3.Connection:
    """A KDF-like data dir; returns an open WAL connection holding uncheckpointed rows."""
    wallet = root / "DB" / "0123abcd"
    (wallet / "SWAPS" / "MY").mkdir(parents=True)
    (wallet / "GTC").mkdir()
    (wallet / "GTC" / "orders").write_text("gtc")
    (wallet / "SWAPS" / "MY" / "swap-1.json").write_text('{"uuid": "swap-1"}')
    (root / "DB" / "wallet.json").write_bytes(b"encrypted-mnemonic")
    db = sqlite3.connect(wallet / "MM2.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE my_swaps (uuid TEXT PRIMARY KEY, started_at INTEGER)")
    with db:
        db.executemany("INSERT INTO my_swaps VALUES (?, ?)", [(f"s{i}", i) for i in range(50)])
    return db


def _rows(db_path: Path) -> list[tuple[str, int]]:
    db = sqlite3.connect(db_path)
    try:
        return list(db.execute("SELECT uuid, started_at FROM my_swaps ORDER BY started_at"))
    finally:
        db.close()


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    }


def _stopped() -> bool:
    return True


def test_round_trip_with_live_sqlite_writer(tmp_path: Path) -> None:
    """A snapshot taken while a WAL writer is open restores every row and every file."""
    data = tmp_path / "data"
    db = _make_data(data)
    try:
        assert (data / "DB/0123abcd/MM2.db-wal").exists()
        manager = BackupManager(tmp_path / "backups")
        info = manager.create("main", data, label="pre-update")
    finally:
        db.close()
    before_files = _tree(data)
    before_rows = _rows(data / "DB/0123abcd/MM2.db")
    # Damage the data after the backup: the restore must bring the snapshot back.
    (data / "DB/wallet.json").write_bytes(b"lost")
    (data / "DB/0123abcd/GTC/orders").unlink()
    (data / "stray").write_text("created after the backup")
    result = manager.restore(info.id, data, is_stopped=_stopped, safety_backup=False)
    assert result.files == info.files
    assert _rows(data / "DB/0123abcd/MM2.db") == before_rows
    restored = _tree(data)
    assert set(restored) == set(before_files)
    for rel, content in before_files.items():
        if not rel.endswith("MM2.db"):
            assert restored[rel] == content
    assert not (data / "stray").exists()
    manifest = manager.verify(info.id)
    kinds = {entry.path: entry.kind for entry in manifest.files}
    assert kinds["DB/0123abcd/MM2.db"] == "sqlite"
    assert "DB/0123abcd/MM2.db-wal" not in kinds
    assert info.label == "pre-update"


def test_backup_files_are_private(tmp_path: Path) -> None:
    """Archives and their listing entries are 0600 inside a 0700 directory."""
    data = tmp_path / "data"
    _make_data(data).close()
    info = BackupManager(tmp_path / "backups").create("main", data)
    assert Path(info.path).stat().st_mode & 0o777 == 0o600
    assert Path(info.path).parent.stat().st_mode & 0o777 == 0o700


def test_encrypted_round_trip_and_key_rules(tmp_path: Path) -> None:
    """With a 0600 key file the archive is ciphertext and restores; a loose key is refused."""
    data = tmp_path / "data"
    _make_data(data).close()
    key = tmp_path / "backup.key"
    generate_key_file(key)
    manager = BackupManager(tmp_path / "backups", key_file=key)
    info = manager.create("w1", data)
    assert info.encrypted and info.path.endswith(".enc")
    blob = Path(info.path).read_bytes()
    assert b"encrypted-mnemonic" not in blob and not blob.startswith(b"\x1f\x8b")
    target = tmp_path / "restored"
    manager.restore(info.id, target, is_stopped=_stopped)
    assert _rows(target / "DB/0123abcd/MM2.db") == _rows(data / "DB/0123abcd/MM2.db")
    with pytest.raises(BackupError, match="no key_file"):
        BackupManager(tmp_path / "backups").restore(info.id, target, is_stopped=_stopped)
    key.chmod(0o644)
    with pytest.raises(BackupError, match="expected 0600"):
        BackupManager(tmp_path / "backups", key_file=key)


def _rewrite_sidecar(archive: Path) -> None:
    """Update the recorded archive digest, as an attacker with write access could."""
    import hashlib

    sidecar = archive.parent / (archive.name.split(".tar.gz")[0] + ".json")
    record = json.loads(sidecar.read_text())
    record["sha256"] = hashlib.sha256(archive.read_bytes()).hexdigest()
    sidecar.write_text(json.dumps(record))


def test_tampered_archive_is_refused_and_data_untouched(tmp_path: Path) -> None:
    """A flipped byte fails the archive digest; the data dir is left exactly as it was."""
    data = tmp_path / "data"
    _make_data(data).close()
    manager = BackupManager(tmp_path / "backups")
    info = manager.create("main", data)
    (data / "DB/wallet.json").write_bytes(b"current state")
    before = _tree(data)
    archive = Path(info.path)
    blob = bytearray(archive.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    archive.write_bytes(bytes(blob))
    with pytest.raises(BackupIntegrityError, match="sha256"):
        manager.restore(info.id, data, is_stopped=_stopped)
    assert _tree(data) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".data.restore")] == []


def test_consistently_rewritten_archive_fails_manifest(tmp_path: Path) -> None:
    """A file swapped inside the archive (record digest updated too) fails the manifest check."""
    data = tmp_path / "data"
    _make_data(data).close()
    manager = BackupManager(tmp_path / "backups")
    info = manager.create("main", data)
    archive = Path(info.path)
    members: list[tuple[tarfile.TarInfo, bytes | None]] = []
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            content = tar.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
            if member.name == "data/DB/wallet.json":
                content = b"attacker-controlled"
                member.size = len(content)
            members.append((member, content))
    with tarfile.open(archive, "w:gz") as tar:
        for member, content in members:
            tar.addfile(member, io.BytesIO(content) if content is not None else None)
    _rewrite_sidecar(archive)
    before = _tree(data)
    with pytest.raises(BackupIntegrityError, match=r"wallet\.json: sha256"):
        manager.restore(info.id, data, is_stopped=_stopped)
    assert _tree(data) == before


def test_traversal_member_in_backup_is_refused(tmp_path: Path) -> None:
    """A backup whose tar climbs out of the restore dir is refused before extraction."""
    data = tmp_path / "data"
    _make_data(data).close()
    manager = BackupManager(tmp_path / "backups")
    info = manager.create("main", data)
    archive = Path(info.path)
    with tarfile.open(archive, "w:gz") as tar:
        evil = tarfile.TarInfo("data/../../escaped")
        evil.size = 4
        tar.addfile(evil, io.BytesIO(b"evil"))
    _rewrite_sidecar(archive)
    with pytest.raises(BackupIntegrityError, match="unexpected member"):
        manager.restore(info.id, data, is_stopped=_stopped)
    assert not (tmp_path / "escaped").exists()


def test_encrypted_tamper_fails_authentication(tmp_path: Path) -> None:
    """Flipping a ciphertext byte (record digest updated) fails AES-GCM authentication."""
    data = tmp_path / "data"
    _make_data(data).close()
    key = tmp_path / "k"
    key.write_text(os.urandom(32).hex())
    key.chmod(0o600)
    manager = BackupManager(tmp_path / "backups", key_file=key)
    info = manager.create("main", data)
    archive = Path(info.path)
    blob = bytearray(archive.read_bytes())
    blob[-5] ^= 0x80
    archive.write_bytes(bytes(blob))
    _rewrite_sidecar(archive)
    with pytest.raises(BackupIntegrityError, match="authentication"):
        manager.verify(info.id)
    archive.write_bytes(bytes(blob[:-20]))
    _rewrite_sidecar(archive)
    with pytest.raises(BackupIntegrityError):
        manager.verify(info.id)


def test_restore_refused_unless_stopped(tmp_path: Path) -> None:
    """A running instance refuses the restore, also when it starts while the restore runs."""
    data = tmp_path / "data"
    _make_data(data).close()
    manager = BackupManager(tmp_path / "backups")
    info = manager.create("main", data)
    before = _tree(data)
    with pytest.raises(InstanceNotStoppedError):
        manager.restore(info.id, data, is_stopped=lambda: False)
    answers = iter([True, False])
    with pytest.raises(InstanceNotStoppedError, match="during the restore"):
        manager.restore(info.id, data, is_stopped=lambda: next(answers), safety_backup=False)
    assert _tree(data) == before


def test_restore_takes_safety_backup_and_retention_keeps_newest(tmp_path: Path) -> None:
    """Restoring snapshots the replaced data first; retention keeps the newest N per instance."""
    data = tmp_path / "data"
    _make_data(data).close()
    manager = BackupManager(tmp_path / "backups", retention=2)
    first = manager.create("main", data, label="a")
    (data / "DB/wallet.json").write_bytes(b"second")
    second = manager.create("main", data, label="b")
    (data / "DB/wallet.json").write_bytes(b"third")
    third = manager.create("main", data, label="c")
    assert [i.id for i in manager.list("main")] == [second.id, third.id]
    assert not Path(first.path).exists()
    result = manager.restore(second.id, data, is_stopped=_stopped)
    assert (data / "DB/wallet.json").read_bytes() == b"second"
    assert result.safety_backup is not None
    ids = [i.id for i in manager.list("main")]
    assert second.id in ids and result.safety_backup in ids
    manager.restore(result.safety_backup, data, is_stopped=_stopped, safety_backup=False)
    assert (data / "DB/wallet.json").read_bytes() == b"third"


def test_exclude_patterns_and_symlinks_are_skipped(tmp_path: Path) -> None:
    """Excluded globs and symlinks never enter a backup."""
    data = tmp_path / "data"
    _make_data(data).close()
    (data / "MM2.json").write_text('{"passphrase": "never in a backup"}')
    (data / "link").symlink_to("/etc/hostname")
    manager = BackupManager(tmp_path / "backups", exclude=("MM2.json", "DB/*/SWAPS/*"))
    manifest = manager.verify(manager.create("main", data).id)
    paths = {entry.path for entry in manifest.files}
    assert "MM2.json" not in paths and "link" not in paths
    assert not any(p.startswith("DB/0123abcd/SWAPS/") for p in paths)
    assert "DB/wallet.json" in paths
