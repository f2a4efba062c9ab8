"""KDF's three log-line formats and their destinations (kdf-facts 3.1).

1. ``log!`` lines: ``DD HH:MM:SS, <file>:<line>] <msg>``, to the ``MM_LOG`` file when it is valid,
   else stdout.
2. env_logger lines: ``DD HH:MM:SS, <module::path>:<line>] LEVEL <msg>``, to stderr (unless
   ``silent_console``) and also appended to the ``MM_LOG`` file.
3. Dashboard lines: ``<emoji> YYYY-MM-DD HH:MM:SS +0000 [tags] <file>:<line>] <msg>``, routed like
   ``log!`` lines.

Lines are written with one ``os.write`` each, unbuffered, so a supervisor reading the pipe sees
every line as soon as it is produced and lines never interleave mid-way.
"""

from __future__ import annotations

import os
import time

__all__ = ["LEVELS", "KdfLog", "level_from_rust_log"]

LEVELS = {"off": 0, "error": 1, "warn": 2, "info": 3, "debug": 4, "trace": 5}


def level_from_rust_log(value: str | None) -> int:
    """Global level of a ``RUST_LOG`` filter; KDF sets ``info`` when it is unset."""
    if not value:
        return LEVELS["info"]
    level = None
    for directive in value.split(","):
        name = directive.strip().lower()
        # Per-module directives (`mm2=debug`) are not modelled; only a bare level counts.
        if name in LEVELS:
            level = LEVELS[name]
    return LEVELS["info"] if level is None else level


def _short_time(now: float) -> str:
    t = time.gmtime(now)
    return f"{t.tm_mday:02d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            written = os.write(fd, data)
            data = data[written:]
    except (BrokenPipeError, BlockingIOError, OSError):
        # A reader that went away must not crash the node; KDF's writers ignore this too.
        pass


class KdfLog:
    """Writes KDF-formatted log lines to the destinations KDF uses."""

    def __init__(
        self,
        *,
        mm_log: str | None,
        rust_log: str | None,
        stdout_fd: int = 1,
        stderr_fd: int = 2,
    ) -> None:
        self._stdout = stdout_fd
        self._stderr = stderr_fd
        self._level = level_from_rust_log(rust_log)
        self.silent_console = False
        self._file_fd: int | None = None
        if mm_log:
            if mm_log.endswith(".log"):
                try:
                    self._file_fd = os.open(
                        mm_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
                    )
                except OSError as err:
                    message = f"open_log_file] Error opening log file {mm_log!r}: {err}\n"
                    _write_all(self._stdout, message.encode())
            else:
                _write_all(self._stdout, b"open_log_file] MM_LOG doesn't end with '.log'\n")

    def log(self, where: str, message: str) -> None:
        """A ``log!`` line (stdout or the ``MM_LOG`` file)."""
        self._primary(f"{_short_time(time.time())}, {where}] {message}\n".encode())

    def env(self, level: str, where: str, message: str) -> None:
        """An env_logger line at ``level`` (``INFO``, ``WARN``, ``ERROR``...)."""
        if LEVELS[level.lower()] > self._level:
            return
        line = f"{_short_time(time.time())}, {where}] {level} {message}\n".encode()
        if not self.silent_console:
            _write_all(self._stderr, line)
        if self._file_fd is not None:
            _write_all(self._file_fd, line)

    def dashboard(self, emoji: str, tags: str, where: str, message: str) -> None:
        """A dashboard line such as the RPC readiness line."""
        t = time.gmtime()
        stamp = (
            f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
        )
        self._primary(f"{emoji} {stamp} [{tags}] {where}] {message}\n".encode())

    def raw(self, data: bytes) -> None:
        """Pre-formatted ``log!``-route bytes (used by the log-flood failure mode)."""
        self._primary(data)

    def stderr(self, text: str) -> None:
        """Text written straight to stderr, as Rust's default panic printer does."""
        _write_all(self._stderr, text.encode())

    def _primary(self, data: bytes) -> None:
        _write_all(self._stdout if self._file_fd is None else self._file_fd, data)
