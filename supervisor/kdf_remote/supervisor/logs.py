"""KDF's log file: opening, size-capped rotation, tail and follow, and redaction on read.

KDF's stdout and stderr go straight to ``kdf.log`` (opened ``O_APPEND``), never through a pipe,
so KDF cannot block on a full pipe and the file survives a supervisor restart. KDF keeps that file
descriptor for its whole life, so rotation is copy-then-truncate: the live file is copied to
``kdf.log.1`` (older copies shift to ``.2`` .. ``.N``) and truncated in place; ``O_APPEND`` makes
KDF's next write land at the new end.

Disk bound: the live file is checked every ``log_check_interval_s`` and rotated once it reaches
``log_max_bytes``, so it never exceeds ``log_max_bytes + R * interval`` (R: KDF's write rate) and
every backup is a former live file. Total use is at most
``(log_backups + 1) * (log_max_bytes + R * interval)``; while a copy is in progress its temporary
file stands in for ``.1``, whose content has already moved to ``.2``, so the bound holds during a
rotation too. The few bytes KDF writes between the end of
the copy and the truncate are lost; the copy runs in the kernel (sendfile), so that window is
short, and the supervisor never holds log contents in memory while rotating.

Reading (tail, follow) always goes through :class:`Redactor`.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = [
    "MAX_LINE_CHARS",
    "MAX_TAIL_LINES",
    "LogFollower",
    "Redactor",
    "open_log_for_append",
    "read_tail",
    "rotate_if_needed",
]

MAX_LINE_CHARS = 16 * 1024
"""Longer lines are cut (and marked) when read back."""
MAX_TAIL_LINES = 10_000
_TAIL_BLOCK = 64 * 1024
_TAIL_MAX_BYTES = 8 * 1024 * 1024
_FOLLOW_MAX_READ = 256 * 1024
_TRUNCATED_MARK = " [line truncated]"

_REDACTED_KEYS = "|".join(
    (
        "passphrase",
        "rpc_password",
        "rpcpassword",
        "userpass",
        "wallet_password",
        "password",
        "mnemonic",
        "seed_phrase",
        "seed",
        "prometheus_credentials",
        "api_key",
    )
)
# key: value / key=value / "key": "value", in JSON, Rust Debug output and query strings alike.
_KEY_VALUE = re.compile(
    rf"""(?ix)
    (["']?\b(?:{_REDACTED_KEYS})\b["']?\s*[:=]\s*)
    (?:"(?:[^"\\]|\\.)*"|'[^']*'|[^\s,;&}}\]\)]+)
    """
)
# Twelve or more short lower-case words in a row: the shape of a BIP39 seed phrase.
_SEED_WORDS = re.compile(r"\b(?:[a-z]{3,8}[ \t]+){11,}[a-z]{3,8}\b")
_MIN_SECRET_LEN = 4


class Redactor:
    """Removes secrets from log text: known secret values, ``key: value`` pairs of secret keys,
    and anything shaped like a seed phrase."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = sorted({s for s in secrets if len(s) >= _MIN_SECRET_LEN}, key=len, reverse=True)
        self._exact = re.compile("|".join(map(re.escape, values))) if values else None

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced by ``***``."""
        if self._exact is not None:
            text = self._exact.sub("***", text)
        text = _KEY_VALUE.sub(r'\1"***"', text)
        return _SEED_WORDS.sub("***", text)


def open_log_for_append(path: Path) -> int:
    """Open (creating 0600) the log file for KDF's stdout/stderr; the caller closes the fd."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _backup(path: Path, index: int) -> Path:
    return path.with_name(f"{path.name}.{index}")


def _copy_file(source: Path, target: Path) -> None:
    tmp = target.with_name(target.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            offset = 0
            size = os.fstat(src).st_size
            while offset < size:
                sent = os.sendfile(dst, src, offset, size - offset)
                if sent == 0:
                    break
                offset += sent
        finally:
            os.close(dst)
    finally:
        os.close(src)
    tmp.replace(target)


def rotate_if_needed(path: Path, max_bytes: int, backups: int) -> bool:
    """Rotate ``path`` if it has reached ``max_bytes``; True if it did. Blocking: run it in a
    worker thread."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    if size < max_bytes:
        return False
    if backups > 0:
        for index in range(backups - 1, 0, -1):
            older = _backup(path, index)
            if older.exists():
                older.replace(_backup(path, index + 1))
        _copy_file(path, _backup(path, 1))
    os.truncate(path, 0)
    return True


def _cut(line: str) -> str:
    if len(line) > MAX_LINE_CHARS:
        return line[:MAX_LINE_CHARS] + _TRUNCATED_MARK
    return line


def _tail_lines(path: Path, n: int) -> list[bytes]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    try:
        end = os.fstat(fd).st_size
        data = b""
        position = end
        while position > 0 and data.count(b"\n") <= n and end - position < _TAIL_MAX_BYTES:
            step = min(_TAIL_BLOCK, position)
            position -= step
            data = os.pread(fd, step, position) + data
    finally:
        os.close(fd)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if position > 0 and lines:
        lines.pop(0)  # started mid-line
    return lines[-n:] if n else []


def read_tail(path: Path, n: int, redactor: Redactor) -> list[str]:
    """The last ``n`` lines (at most :data:`MAX_TAIL_LINES`) of the live file, continuing into
    ``.1`` when the live file has fewer; redacted. Blocking: run it in a worker thread."""
    n = max(0, min(n, MAX_TAIL_LINES))
    lines = _tail_lines(path, n)
    if len(lines) < n:
        lines = _tail_lines(_backup(path, 1), n - len(lines)) + lines
    return [redactor.redact(_cut(raw.decode("utf-8", "replace"))) for raw in lines]


class LogFollower:
    """Yields lines appended to the live log since it was created, across rotations.

    Call :meth:`read_new` periodically; it never blocks for long (at most 256 KiB per call) and
    holds at most one partial line between calls.
    """

    def __init__(self, path: Path, redactor: Redactor, *, from_start: bool = False) -> None:
        self._path = path
        self.redactor = redactor
        self._fd: int | None = None
        self._inode: int | None = None
        self._offset = 0
        self._partial = b""
        self._from_start = from_start

    def _reopen_if_needed(self) -> bool:
        try:
            stat = self._path.stat()
        except FileNotFoundError:
            return False
        if self._fd is None or stat.st_ino != self._inode:
            first_open = self._inode is None
            self.close()
            self._fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
            self._inode = stat.st_ino
            self._offset = stat.st_size if first_open and not self._from_start else 0
            self._partial = b""
        return True

    def read_new(self) -> list[str]:
        """Complete lines appended since the last call, redacted."""
        if not self._reopen_if_needed() or self._fd is None:
            return []
        size = os.fstat(self._fd).st_size
        if size < self._offset:
            # Rotated (copy-then-truncate): the rest of the old content is in .1; start over.
            self._offset = 0
            self._partial = b""
        chunk = os.pread(self._fd, min(_FOLLOW_MAX_READ, size - self._offset), self._offset)
        self._offset += len(chunk)
        data = self._partial + chunk
        *complete, self._partial = data.split(b"\n")
        if len(self._partial) > MAX_LINE_CHARS * 4:
            complete.append(self._partial)
            self._partial = b""
        return [self.redactor.redact(_cut(raw.decode("utf-8", "replace"))) for raw in complete]

    def close(self) -> None:
        """Release the file descriptor."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
