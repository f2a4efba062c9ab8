"""Consistent, verifiable snapshots of an instance's data directory, and their restore.

A backup is one ``tar.gz`` (optionally encrypted) holding ``manifest.json`` and ``data/``:

* SQLite databases (recognised by their header, whatever their name) are copied through
  sqlite3's online backup API, so a snapshot of a running KDF is a consistent database even
  mid-write; their ``-wal``/``-shm``/``-journal`` companions are not copied (the backup already
  contains the WAL's content).
* Every other regular file is copied; a file that changes while it is copied is copied again.
* The manifest lists every file with its sha256, size and mode.

Encryption (when a key file is configured) is AES-256-GCM in 1 MiB chunks, each chunk
authenticated with its index and a final-chunk flag, so reordering, truncation and any flipped bit
are detected. The key file holds 32 random bytes (raw or hex) and must be mode 0600.

A restore needs the instance stopped, verifies everything first (archive digest, decryption,
safe member paths, every manifest digest, no missing or extra file) in a directory beside the data
directory, then swaps the two directories atomically (``renameat2(RENAME_EXCHANGE)`` where the
filesystem supports it). A failed restore leaves the current data untouched.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import datetime as dt
import fnmatch
import hashlib
import os
import secrets
import shutil
import sqlite3
import stat
import struct
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Literal

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "BackupError",
    "BackupInfo",
    "BackupIntegrityError",
    "BackupManager",
    "InstanceNotStoppedError",
    "Manifest",
    "ManifestEntry",
    "RestoreResult",
    "UnknownBackupError",
    "generate_key_file",
    "load_key",
]

_SQLITE_MAGIC = b"SQLite format 3\x00"
_SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
_MAGIC = b"KDFRBAK1"
_CHUNK = 1 << 20
_TAG = 16
_HEADER = struct.Struct(">8s8sI")
_FORMAT = 1
_COPY_ATTEMPTS = 3


class BackupError(Exception):
    """A backup or restore could not be done; nothing was changed."""


class BackupIntegrityError(BackupError):
    """The backup is corrupt or was tampered with (digest, decryption or manifest mismatch)."""


class InstanceNotStoppedError(BackupError):
    """Restore refused: the instance is not stopped."""


class UnknownBackupError(BackupError):
    """No backup with that id."""


class ManifestEntry(msgspec.Struct, frozen=True):
    """One file of a backup."""

    path: str
    sha256: str
    size: int
    mode: int
    kind: Literal["sqlite", "file"]


class Manifest(msgspec.Struct, frozen=True):
    """What a backup holds; stored as ``manifest.json`` inside the archive."""

    instance: str
    created_at: float
    label: str
    files: tuple[ManifestEntry, ...]
    dirs: tuple[str, ...]
    format: int = _FORMAT


class BackupInfo(msgspec.Struct, frozen=True):
    """A backup as listed (stored beside the archive as ``<id>.json``; no secret in it)."""

    id: str
    instance: str
    created_at: float
    label: str
    encrypted: bool
    size: int
    sha256: str
    """Digest of the archive file as written, checked before every restore."""
    files: int
    path: str


class RestoreResult(msgspec.Struct, frozen=True):
    """What a restore did."""

    backup_id: str
    data_dir: str
    files: int
    safety_backup: str | None
    """Id of the snapshot of the replaced data taken just before the swap, if any."""


# --------------------------------------------------------------------------- keys


def load_key(path: Path) -> bytes:
    """Read a 32-byte key (raw, or 64 hex digits) from a file that only its owner can read."""
    try:
        mode = path.stat().st_mode
        raw = path.read_bytes()
    except OSError as exc:
        raise BackupError(f"key_file: {path} cannot be read ({exc.strerror})") from None
    if mode & 0o077:
        raise BackupError(f"key_file: {path} has mode {oct(mode & 0o777)}, expected 0600")
    if len(raw) == 32:
        return raw
    text = raw.strip()
    if len(text) == 64:
        with contextlib.suppress(ValueError):
            return bytes.fromhex(text.decode("ascii"))
    raise BackupError(f"key_file: {path} must hold 32 random bytes (raw or 64 hex digits)")


def generate_key_file(path: Path) -> None:
    """Create ``path`` (0600, must not exist) holding a fresh random 32-byte key."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(secrets.token_bytes(32))


def _encrypt(src: Path, dst: Path, key: bytes) -> None:
    aead = AESGCM(key)
    header = _HEADER.pack(_MAGIC, secrets.token_bytes(8), _CHUNK)
    prefix = header[8:16]
    with src.open("rb") as inp, _private_file(dst) as out:
        out.write(header)
        index = 0
        chunk = inp.read(_CHUNK)
        while True:
            following = inp.read(_CHUNK)
            final = not following
            out.write(aead.encrypt(_nonce(prefix, index), chunk, header + bytes([final])))
            if final:
                break
            chunk, index = following, index + 1


def _decrypt(src: Path, dst: Path, key: bytes) -> None:
    aead = AESGCM(key)
    size = src.stat().st_size
    with src.open("rb") as inp, _private_file(dst) as out:
        header = inp.read(_HEADER.size)
        if len(header) != _HEADER.size:
            raise BackupIntegrityError("encrypted backup is truncated")
        magic, prefix, chunk_size = _HEADER.unpack(header)
        if magic != _MAGIC or not 0 < chunk_size <= 64 * _CHUNK:
            raise BackupIntegrityError("not an encrypted kdf-remote backup")
        index = 0
        while True:
            sealed = inp.read(chunk_size + _TAG)
            final = inp.tell() >= size
            try:
                out.write(aead.decrypt(_nonce(prefix, index), sealed, header + bytes([final])))
            except InvalidTag:
                raise BackupIntegrityError(
                    "encrypted backup failed authentication (tampered, truncated or wrong key)"
                ) from None
            if final:
                return
            index += 1


def _nonce(prefix: bytes, index: int) -> bytes:
    return prefix + index.to_bytes(4, "big")


@contextlib.contextmanager
def _private_file(path: Path) -> Iterator[BinaryIO]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        yield out
        out.flush()
        os.fsync(out.fileno())


# --------------------------------------------------------------------------- snapshot


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        for chunk in iter(lambda: src.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as src:
            return src.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
    except OSError:
        return False


def _backup_sqlite(src: Path, dst: Path) -> None:
    # Read-only first so a stopped instance's WAL is not checkpointed by our closing connection.
    try:
        source = sqlite3.connect(f"{src.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        source.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error:
        source = sqlite3.connect(src, timeout=30)
    try:
        target = sqlite3.connect(dst)
        try:
            source.backup(target)
        finally:
            target.close()
    finally:
        source.close()


def _copy_stable(src: Path, dst: Path) -> None:
    # A file KDF rewrites while we copy it is copied again; the last attempt is kept as is.
    for _ in range(_COPY_ATTEMPTS):
        before = src.stat()
        shutil.copy2(src, dst, follow_symlinks=False)
        after = src.stat()
        if (before.st_mtime_ns, before.st_size) == (after.st_mtime_ns, after.st_size):
            return


class _Walked(msgspec.Struct, frozen=True):
    files: tuple[str, ...]
    dirs: tuple[str, ...]
    sqlite: frozenset[str]


def _walk(data_dir: Path, exclude: tuple[str, ...]) -> _Walked:
    files: list[str] = []
    dirs: list[str] = []
    for root, dirnames, filenames in os.walk(data_dir, followlinks=False):
        base = Path(root)
        rel_root = base.relative_to(data_dir)
        kept = [
            name
            for name in sorted(dirnames)
            if not (base / name).is_symlink()
            and not _excluded((rel_root / name).as_posix(), exclude)
        ]
        dirs.extend((rel_root / name).as_posix() for name in kept)
        dirnames[:] = kept
        for name in sorted(filenames):
            rel = (rel_root / name).as_posix()
            mode = (base / name).lstat().st_mode
            # Symlinks, sockets and FIFOs are not data; a restored symlink could point anywhere.
            if stat.S_ISREG(mode) and not _excluded(rel, exclude):
                files.append(rel)
    sqlite = frozenset(f for f in files if _is_sqlite(data_dir / f))
    companions = {db + suffix for db in sqlite for suffix in _SQLITE_COMPANIONS}
    return _Walked(
        files=tuple(f for f in files if f not in companions), dirs=tuple(dirs), sqlite=sqlite
    )


def _excluded(rel: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(rel, pattern) for pattern in patterns)


def _stage(data_dir: Path, staged: Path, walked: _Walked) -> tuple[ManifestEntry, ...]:
    staged.mkdir(mode=0o700)
    for rel in walked.dirs:
        (staged / rel).mkdir(mode=0o700, exist_ok=True)
    entries: list[ManifestEntry] = []
    for rel in walked.files:
        src, dst = data_dir / rel, staged / rel
        kind: Literal["sqlite", "file"] = "sqlite" if rel in walked.sqlite else "file"
        try:
            if kind == "sqlite":
                _backup_sqlite(src, dst)
            else:
                _copy_stable(src, dst)
        except FileNotFoundError:
            continue  # deleted by KDF between the walk and the copy: not part of this snapshot
        mode = stat.S_IMODE(src.stat().st_mode) if src.exists() else 0o600
        dst.chmod(mode | stat.S_IRUSR | stat.S_IWUSR)
        entries.append(ManifestEntry(rel, _sha256(dst), dst.stat().st_size, mode, kind))
    return tuple(entries)


def _write_tar(staging: Path, manifest: Manifest, archive: Path) -> None:
    (staging / "manifest.json").write_bytes(msgspec.json.encode(manifest))

    def anonymous(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    fd = os.open(archive, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        tar.add(staging / "manifest.json", "manifest.json", filter=anonymous)
        tar.add(staging / "data", "data", recursive=False, filter=anonymous)
        for rel in manifest.dirs:
            tar.add(staging / "data" / rel, f"data/{rel}", recursive=False, filter=anonymous)
        for entry in manifest.files:
            tar.add(staging / "data" / entry.path, f"data/{entry.path}", filter=anonymous)


# --------------------------------------------------------------------------- restore helpers


def _safe_member(info: tarfile.TarInfo) -> bool:
    parts = PurePosixPath(info.name).parts
    if info.name.startswith("/") or ".." in parts or "\x00" in info.name:
        return False
    if info.name == "manifest.json":
        return info.isfile()
    return bool(parts) and parts[0] == "data" and (info.isfile() or info.isdir())


def _extract(archive: Path, into: Path, max_bytes: int) -> Manifest:
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            members = tar.getmembers()
            for info in members:
                if not _safe_member(info):
                    raise BackupIntegrityError(f"unexpected member in backup: {info.name!r}")
            if sum(m.size for m in members) > max_bytes:
                raise BackupIntegrityError(f"backup unpacks to more than {max_bytes} bytes")
            tar.extractall(into, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, BackupError):
            raise
        raise BackupIntegrityError(f"backup archive is unreadable: {exc}") from None
    try:
        return msgspec.json.decode((into / "manifest.json").read_bytes(), type=Manifest)
    except (OSError, msgspec.DecodeError) as exc:
        raise BackupIntegrityError(f"backup manifest is missing or invalid: {exc}") from None


def _check_manifest(manifest: Manifest, data: Path) -> None:
    if manifest.format != _FORMAT:
        raise BackupIntegrityError(f"backup format {manifest.format} is not supported")
    expected = {entry.path: entry for entry in manifest.files}
    found = {
        p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_file() or p.is_symlink()
    }
    if found != set(expected):
        extra, missing = sorted(found - set(expected)), sorted(set(expected) - found)
        raise BackupIntegrityError(
            f"backup content differs from its manifest: extra {extra}, missing {missing}"
        )
    for path, entry in expected.items():
        if _sha256(data / path) != entry.sha256:
            raise BackupIntegrityError(f"{path}: sha256 differs from the manifest")
        (data / path).chmod(entry.mode | stat.S_IRUSR | stat.S_IWUSR)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False when unsupported here."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: this filesystem or kernel cannot
        return False
    raise OSError(err, os.strerror(err), str(a))


def _swap_in(new: Path, data_dir: Path, parking: Path) -> None:
    """Put ``new`` at ``data_dir``; the old data ends up at ``new`` (exchange) or ``parking``."""
    if not data_dir.exists():
        new.rename(data_dir)
        return
    if _exchange(new, data_dir):
        return
    data_dir.rename(parking)
    try:
        new.rename(data_dir)
    except OSError:
        parking.rename(data_dir)
        raise


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.lchown(root, uid, gid)
    for path in root.rglob("*"):
        os.lchown(path, uid, gid)


# --------------------------------------------------------------------------- the manager


class BackupManager:
    """Backups of instance data directories under ``backup_dir/<instance>/``."""

    def __init__(
        self,
        backup_dir: Path,
        *,
        retention: int = 5,
        key_file: Path | None = None,
        exclude: tuple[str, ...] = (),
        max_restore_bytes: int = 64 * 1024**3,
    ) -> None:
        """``retention`` backups are kept per instance; ``exclude`` holds glob patterns of paths
        relative to the data dir that are never backed up; with ``key_file`` backups are
        encrypted (and restoring an encrypted backup needs it)."""
        if retention < 1:
            raise BackupError(f"retention: {retention!r} is invalid, expected >= 1")
        self.backup_dir = backup_dir
        self.retention = retention
        self._key = load_key(key_file) if key_file is not None else None
        self._exclude = exclude
        self._max_restore_bytes = max_restore_bytes

    @property
    def encrypted(self) -> bool:
        """Whether new backups are encrypted."""
        return self._key is not None

    def _instance_dir(self, instance: str) -> Path:
        if not instance or "/" in instance or instance.startswith("."):
            raise BackupError(f"instance: {instance!r} is not a valid instance name")
        path = self.backup_dir / instance
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def create(self, instance: str, data_dir: Path, *, label: str = "manual") -> BackupInfo:
        """Snapshot ``data_dir`` of ``instance`` (running or not) and apply retention."""
        return self._create(instance, data_dir, label, protect=frozenset())

    def _create(
        self, instance: str, data_dir: Path, label: str, *, protect: frozenset[str]
    ) -> BackupInfo:
        if not data_dir.is_dir():
            raise BackupError(f"data_dir: {data_dir} is not a directory")
        target_dir = self._instance_dir(instance)
        created = time.time()
        stamp = dt.datetime.fromtimestamp(created, dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        backup_id = f"{instance}-{stamp}-{secrets.token_hex(2)}"
        suffix = ".tar.gz.enc" if self._key is not None else ".tar.gz"
        staging = target_dir / f".staging-{uuid.uuid4().hex}"
        staging.mkdir(mode=0o700)
        try:
            walked = _walk(data_dir, self._exclude)
            entries = _stage(data_dir, staging / "data", walked)
            manifest = Manifest(instance, created, label, entries, walked.dirs)
            tar_path = staging / "archive.tar.gz"
            _write_tar(staging, manifest, tar_path)
            final_src = tar_path
            if self._key is not None:
                final_src = staging / "archive.enc"
                _encrypt(tar_path, final_src, self._key)
            archive = target_dir / f"{backup_id}{suffix}"
            info = BackupInfo(
                id=backup_id,
                instance=instance,
                created_at=created,
                label=label,
                encrypted=self._key is not None,
                size=final_src.stat().st_size,
                sha256=_sha256(final_src),
                files=len(entries),
                path=str(archive),
            )
            final_src.rename(archive)
            sidecar = target_dir / f"{backup_id}.json"
            with _private_file(sidecar.with_suffix(".tmp")) as out:
                out.write(msgspec.json.encode(info))
            sidecar.with_suffix(".tmp").rename(sidecar)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._apply_retention(instance, protect | {info.id})
        return info

    def list(self, instance: str | None = None) -> list[BackupInfo]:
        """Backups, oldest first, of one instance or of all."""
        if not self.backup_dir.is_dir():
            return []
        dirs = [self.backup_dir / instance] if instance else sorted(self.backup_dir.iterdir())
        found: list[BackupInfo] = []
        for folder in dirs:
            for sidecar in folder.glob("*.json") if folder.is_dir() else ():
                with contextlib.suppress(OSError, msgspec.DecodeError):
                    found.append(msgspec.json.decode(sidecar.read_bytes(), type=BackupInfo))
        return sorted(found, key=lambda info: (info.created_at, info.id))

    def get(self, backup_id: str) -> BackupInfo:
        """The backup ``backup_id``."""
        for info in self.list():
            if info.id == backup_id:
                return info
        raise UnknownBackupError(f"no backup {backup_id!r}")

    def delete(self, backup_id: str) -> None:
        """Delete a backup (archive and listing entry)."""
        info = self.get(backup_id)
        Path(info.path).unlink(missing_ok=True)
        (Path(info.path).parent / f"{info.id}.json").unlink(missing_ok=True)

    def _apply_retention(self, instance: str, protect: frozenset[str]) -> None:
        backups = self.list(instance)
        removable = [info for info in backups if info.id not in protect]
        excess = len(backups) - self.retention
        for info in removable[: max(excess, 0)]:
            self.delete(info.id)

    def _unpack_verified(self, info: BackupInfo, work: Path) -> Manifest:
        archive = Path(info.path)
        try:
            actual = _sha256(archive)
        except OSError as exc:
            raise BackupIntegrityError(f"backup {info.id} cannot be read: {exc}") from None
        if actual != info.sha256:
            raise BackupIntegrityError(f"backup {info.id}: archive sha256 differs from its record")
        tar_path = archive
        if info.encrypted:
            if self._key is None:
                raise BackupError(f"backup {info.id} is encrypted and no key_file is configured")
            tar_path = work / "archive.tar.gz"
            _decrypt(archive, tar_path, self._key)
        manifest = _extract(tar_path, work / "unpacked", self._max_restore_bytes)
        _check_manifest(manifest, work / "unpacked" / "data")
        return manifest

    def verify(self, backup_id: str) -> Manifest:
        """Check a backup completely (digest, decryption, manifest) without restoring it."""
        info = self.get(backup_id)
        work = self.backup_dir / f".verify-{uuid.uuid4().hex}"
        work.mkdir(mode=0o700)
        try:
            return self._unpack_verified(info, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def restore(
        self,
        backup_id: str,
        data_dir: Path,
        *,
        is_stopped: Callable[[], bool],
        safety_backup: bool = True,
        instance: str | None = None,
    ) -> RestoreResult:
        """Replace ``data_dir`` with the content of ``backup_id``.

        ``is_stopped`` is asked before anything is read and again right before the swap; a
        running instance makes the restore fail. With ``safety_backup`` the data being replaced is
        snapshotted first (label ``pre-restore``, filed under ``instance``, by default the
        backup's own instance) so a restore can itself be undone.
        """
        if not is_stopped():
            raise InstanceNotStoppedError("restore needs the instance stopped")
        info = self.get(backup_id)
        data_dir = data_dir.absolute()
        work = data_dir.parent / f".{data_dir.name}.restore-{uuid.uuid4().hex[:12]}"
        work.mkdir(mode=0o700)
        try:
            manifest = self._unpack_verified(info, work)
            fresh = work / "unpacked" / "data"
            safety: str | None = None
            if data_dir.exists():
                fresh.chmod(stat.S_IMODE(data_dir.stat().st_mode))
                if os.geteuid() == 0:
                    owner = data_dir.stat()
                    _chown_tree(fresh, owner.st_uid, owner.st_gid)
                if safety_backup and any(data_dir.iterdir()):
                    owner_name = instance or info.instance
                    protect = frozenset({info.id})
                    safety = self._create(owner_name, data_dir, "pre-restore", protect=protect).id
            if not is_stopped():
                raise InstanceNotStoppedError("the instance was started during the restore")
            _swap_in(fresh, data_dir, work / "previous")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return RestoreResult(
            backup_id=info.id,
            data_dir=str(data_dir),
            files=len(manifest.files),
            safety_backup=safety,
        )
