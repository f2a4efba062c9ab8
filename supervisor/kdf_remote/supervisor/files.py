"""Run-directory helpers: private atomic writes and the re-adoption state file."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import msgspec

__all__ = ["StateRecord", "ensure_private_dir", "read_state", "remove_quietly", "write_private"]


class StateRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What a later supervisor needs to re-adopt a running KDF (never a secret)."""

    pid: int
    create_time: float
    cmdline: list[str]
    rpc_host: str
    rpc_port: int


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) if needed and make it 0700."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


def write_private(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Atomically replace ``path`` with ``data``, mode 0600 from creation on (never readable by
    others, not even briefly). ``durable`` adds an fsync before the rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    remove_quietly(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)


def remove_quietly(path: Path) -> None:
    """Delete ``path`` if it exists."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def read_state(path: Path) -> StateRecord | None:
    """The state record at ``path``, or None if it is missing or unreadable."""
    try:
        return msgspec.json.decode(path.read_bytes(), type=StateRecord)
    except (FileNotFoundError, msgspec.DecodeError, msgspec.ValidationError):
        return None
