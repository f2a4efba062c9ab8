"""Private files: created 0600 atomically, and refused when others can read or change them.

Key material (the JWT key, the keys file with its signing keys, TLS private keys) is written to a
temporary file in the target directory, flushed, then renamed or linked into place, so a reader
never sees a half-written key and a crash never leaves one behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from kdf_remote.daemon.security.errors import SecurityConfigError

__all__ = [
    "PRIVATE_MODE",
    "check_private_file",
    "locked",
    "read_private_file",
    "write_private_file",
]

PRIVATE_MODE = 0o600


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private_file(
    path: Path, data: bytes, *, overwrite: bool = True, mode: int = PRIVATE_MODE
) -> None:
    """Write ``data`` to ``path`` (mode 0600 by default), atomically.

    Args:
        path: the destination; its directory is created (0700) when missing.
        data: the whole content.
        overwrite: replace an existing file; when False an existing file raises
            ``FileExistsError`` and is left untouched.
        mode: permission bits of the new file.
    """
    directory = path.parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = directory / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.chmod(mode)  # the umask may have narrowed the bits asked for at creation
        if overwrite:
            tmp.replace(path)
        else:
            # link() fails when the name exists: no window in which a file could be clobbered.
            os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(directory)


def check_private_file(path: Path, *, field: str) -> os.stat_result:
    """Refuse a file that group or others can access, or that another user owns.

    Args:
        path: the file to check.
        field: the setting naming it, for the error.

    Raises:
        SecurityConfigError: missing, not a regular file, too open, or foreign owner.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        raise SecurityConfigError(field, str(path), "an existing file") from None
    except OSError as exc:
        raise SecurityConfigError(field, str(path), f"a readable file ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise SecurityConfigError(field, str(path), "a regular file")
    if info.st_mode & 0o077:
        raise SecurityConfigError(
            field,
            f"{path} with mode {stat.S_IMODE(info.st_mode):04o}",
            "a file only its owner can access (chmod 600)",
        )
    if info.st_uid not in (os.geteuid(), 0):
        raise SecurityConfigError(
            field, f"{path} owned by uid {info.st_uid}", "a file owned by the daemon's user or root"
        )
    return info


def read_private_file(path: Path, *, field: str, max_bytes: int = 1 << 20) -> bytes:
    """Read a file after :func:`check_private_file` accepted it.

    Raises:
        SecurityConfigError: the file is refused, unreadable or larger than ``max_bytes``.
    """
    check_private_file(path, field=field)
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise SecurityConfigError(field, str(path), f"a readable file ({exc.strerror})") from None
    if len(data) > max_bytes:
        raise SecurityConfigError(field, str(path), f"a file of at most {max_bytes} bytes")
    return data


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` (serialises read-modify-write of ``path``)."""
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, PRIVATE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
