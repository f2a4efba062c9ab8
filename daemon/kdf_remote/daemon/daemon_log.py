"""The daemon's own logging: plain or JSON lines on stderr, journald-friendly, secrets redacted.

Under systemd (``JOURNAL_STREAM`` set) plain lines carry a ``<N>`` syslog priority prefix and no
timestamp, so journald files them at the right level and stamps them itself. Everything passes
through :class:`Redactor` last, after exception text is added, so neither a message, an argument
nor a traceback can put a passphrase, password or key on disk.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from datetime import UTC, datetime
from typing import Final, TextIO

import msgspec

__all__ = [
    "REDACTED",
    "JsonFormatter",
    "PlainFormatter",
    "Redactor",
    "configure_logging",
    "redactor",
]

REDACTED: Final = "***"

_SENSITIVE_NAMES = (
    "passphrase|rpc_password|wallet_password|userpass|password|api_key|apikey|x-api-key"
    "|authorization|access_token|token|secret|mnemonic|seed|private_key|priv_key"
)
# `key: value`, `key=value` and JSON `"key": "value"` forms; the value stops at a quote,
# comma, brace or whitespace (or runs to the closing quote when quoted).
_KEY_VALUE = re.compile(
    rf"""(?ix)
    (?P<key>(?<![\w-])["']?(?:{_SENSITIVE_NAMES})["']?\s*[:=]\s*)
    (?:"(?:[^"\\]|\\.)*"|'[^']*'|(?:bearer\s+)?[^\s,'"}}\]]+)
    """
)
_SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class Redactor:
    """Replaces secret values in text: every registered value, and ``key: value`` forms."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None

    def register(self, *values: str | None) -> None:
        """Redact these exact values from now on (short values are ignored: too many hits)."""
        fresh = {v for v in values if v and len(v) >= 4} - self._values
        if not fresh:
            return
        with self._lock:
            self._values |= fresh
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def __call__(self, text: str) -> str:
        """``text`` with every secret replaced by ``***``."""
        if self._pattern is not None:
            text = self._pattern.sub(REDACTED, text)
        return _KEY_VALUE.sub(lambda m: f"{m.group('key')}{REDACTED}", text)


redactor = Redactor()
"""The process-wide redactor every daemon log line passes through."""


def _escape_controls(text: str) -> str:
    # A CR/LF inside a message must not start a forged log line.
    return text.replace("\r", "\\r").replace("\n", "\\n")


class PlainFormatter(logging.Formatter):
    """``LEVEL logger: message``; with a timestamp, or a syslog prefix under journald."""

    def __init__(self, *, journald: bool) -> None:
        super().__init__()
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        message = _escape_controls(record.getMessage())
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        if self.journald:
            prefix = f"<{_SYSLOG_PRIORITY.get(record.levelno, 6)}>"
        else:
            stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            prefix = f"{stamp} {record.levelname:<7} "
        return redactor(f"{prefix}{record.name}: {message}")


class _JsonLine(msgspec.Struct, omit_defaults=True):
    ts: str
    level: str
    logger: str
    msg: str
    exc: str | None = None


_json = msgspec.json.Encoder()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg`` and ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        line = _JsonLine(
            ts=datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            level=record.levelname.lower(),
            logger=record.name,
            msg=redactor(record.getMessage()),
            exc=redactor(self.formatException(record.exc_info)) if record.exc_info else None,
        )
        return _json.encode(line).decode()


def configure_logging(level: str, *, json_logs: bool, stream: TextIO | None = None) -> None:
    """Send every log record (the daemon's, uvicorn's, Litestar's) to one stderr handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    journald = bool(os.environ.get("JOURNAL_STREAM"))
    handler.setFormatter(JsonFormatter() if json_logs else PlainFormatter(journald=journald))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "litestar"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
