"""The audit log: one JSON line per mutating call and per denied attempt, hash-chained.

Each line is the JSON of an :class:`AuditRecord` followed by ``"hash"``: the SHA-256 of the exact
bytes of the line without that member, and each record carries the previous line's hash in
``prev`` (64 zeros for the first line) and a ``seq`` one above the previous. Editing, inserting,
reordering or deleting a line breaks the chain at that point, which
:func:`verify_audit_log` (``kdf-remote-daemon audit verify``) reports. Truncating the *end* of the
file cannot be detected from the file alone; ship the log off the host (journald forwarding,
a log collector) when that matters.

Records are built from typed fields only: no header, body, query string or credential ever
reaches them, and every string is cut to a bounded length. JSON encoding escapes CR/LF, so a path
cannot forge a line.

The file is opened with ``O_APPEND`` (0600) and each append holds an exclusive ``flock``, so two
processes appending (the daemon and a CLI) still produce one valid chain.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Required, TypedDict, Unpack

import msgspec

from kdf_remote.daemon.security.errors import AuditLogError
from kdf_remote.daemon.security.files import PRIVATE_MODE, check_private_file

__all__ = [
    "GENESIS_HASH",
    "AuditEntry",
    "AuditFields",
    "AuditLog",
    "AuditRecord",
    "AuditThrottle",
    "AuditVerification",
    "read_audit_tail",
    "verify_audit_log",
]

log = logging.getLogger("kdf_remote.daemon.security")

GENESIS_HASH: Final = "0" * 64
MAX_FIELD: Final = 256
_HASH_PREFIX: Final = b',"hash":"'
_SUFFIX_LEN: Final = len(_HASH_PREFIX) + 64 + 2
_HEX64 = re.compile(rb"^[0-9a-f]{64}$")
_SEQ = re.compile(rb'"seq":(\d+)')
_BLOCK = 64 * 1024
MAX_LINE: Final = 8 * 1024


class AuditRecord(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What one audit line says (field order is part of the hashed bytes: do not reorder)."""

    seq: int
    time: str
    """UTC, ISO 8601 with milliseconds."""
    actor: str | None
    """The key name, or None when the caller was not identified."""
    role: str | None
    key_id: str | None
    source_ip: str | None
    action: str
    """E.g. ``POST /v1/instances/{name}/start`` or ``auth.token``."""
    target: str | None
    outcome: str
    """``ok``, ``failed`` (4xx/5xx answer) or ``denied`` (refused by the security layer)."""
    status: int | None
    detail: str | None
    prev: str


class AuditEntry(AuditRecord, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """An audit line as ``GET /v1/audit`` returns it: the record and its ``hash``."""

    hash: str


class AuditVerification(msgspec.Struct, frozen=True, kw_only=True):
    """The result of checking a whole audit log."""

    ok: bool
    entries: int
    """Lines that verified before the first problem (all of them when ``ok``)."""
    first_bad_line: int | None = None
    """1-based line number of the first problem."""
    problem: str | None = None
    last_hash: str | None = None


_encoder = msgspec.json.Encoder()
_record_decoder = msgspec.json.Decoder(AuditRecord)


def _clip(value: str | None) -> str | None:
    if value is None:
        return None
    return value if len(value) <= MAX_FIELD else value[: MAX_FIELD - 1] + "…"


_last_stamp: tuple[int, str] = (-1, "")
"""The last formatted millisecond: under load many lines share one, and formatting is costly."""


def _timestamp(now: float) -> str:
    global _last_stamp  # noqa: PLW0603  # a one-entry cache shared by every AuditLog
    millis = int(now * 1000)
    cached_millis, text = _last_stamp
    if millis == cached_millis:
        return text
    text = (
        datetime.fromtimestamp(millis / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
    _last_stamp = (millis, text)
    return text


def _seal(record: AuditRecord) -> tuple[bytes, str]:
    body = _encoder.encode(record)
    digest = hashlib.sha256(body).hexdigest()
    return body[:-1] + _HASH_PREFIX + digest.encode() + b'"}\n', digest


def _split(line: bytes) -> tuple[bytes, str] | None:
    """The hashed body and the stated hash of one line (without newline), or None."""
    if len(line) <= _SUFFIX_LEN or not line.endswith(b'"}'):
        return None
    suffix = line[-_SUFFIX_LEN:]
    if not suffix.startswith(_HASH_PREFIX):
        return None
    stated = suffix[len(_HASH_PREFIX) : -2]
    if _HEX64.match(stated) is None:
        return None
    return line[:-_SUFFIX_LEN] + b"}", stated.decode()


def _parse_line(line: bytes) -> AuditEntry | None:
    parts = _split(line)
    if parts is None:
        return None
    body, stated = parts
    try:
        record = _record_decoder.decode(body)
    except msgspec.DecodeError:
        return None
    return AuditEntry(hash=stated, **msgspec.structs.asdict(record))


def _lines_backwards(fd: int, end: int) -> Iterator[bytes]:
    """Complete lines of the file before offset ``end``, last first (newlines stripped)."""
    position = end
    pending = b""
    while position > 0:
        size = min(_BLOCK, position)
        position -= size
        chunk = os.pread(fd, size, position) + pending
        lines = chunk.split(b"\n")
        pending = lines[0]
        for line in reversed(lines[1:]):
            if line:
                yield line
    if pending:
        yield pending


def _last_link(fd: int, end: int) -> tuple[int, str]:
    """``(seq, hash)`` the next line must chain to."""
    for line in _lines_backwards(fd, end):
        parts = _split(line)
        entry = _parse_line(line) if parts is not None else None
        if entry is not None:
            return entry.seq, entry.hash
        # A damaged last line (e.g. a crash mid-write): chain to its raw bytes so that
        # `audit verify` points at it, and keep counting after whatever seq it claims.
        match = _SEQ.search(line)
        return (int(match.group(1)) if match else 0), hashlib.sha256(line).hexdigest()
    return 0, GENESIS_HASH


class AuditFields(TypedDict, total=False):
    """What a caller says in one record (``seq``, ``time``, ``prev`` and ``hash`` are the log's)."""

    action: Required[str]
    """E.g. ``POST /v1/instances/{name}/start`` or ``auth.token``."""
    outcome: Required[str]
    actor: str | None
    role: str | None
    key_id: str | None
    source_ip: str | None
    target: str | None
    status: int | None
    detail: str | None


class AuditLog:
    """Appends hash-chained records to the audit file.

    Args:
        path: the log file (created 0600 when missing; refused when others can read it).
        wall_clock: Unix time for the ``time`` field.

    Raises:
        SecurityConfigError: the existing file is readable by others or owned by another user.
        AuditLogError: the file cannot be opened.
    """

    def __init__(self, path: Path, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._wall = wall_clock
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._fd = os.open(
                path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, PRIVATE_MODE
            )
        except OSError as exc:
            raise AuditLogError(f"cannot open the audit log {path}: {exc.strerror}") from None
        try:
            check_private_file(path, field="security.audit_log")
        except Exception:
            os.close(self._fd)
            raise
        self._known_size = -1
        self._seq = 0
        self._prev = GENESIS_HASH
        self._queued: list[AuditRecord] = []

    def close(self) -> None:
        """Write what :meth:`append_soon` queued, then close (further appends raise)."""
        self._flush_queued()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def append(self, **fields: Unpack[AuditFields]) -> AuditEntry:
        """Write one record now and return it as written.

        Raises:
            AuditLogError: the write failed (the caller decides whether to refuse the request).
        """
        draft = self._draft(fields)
        self._flush_queued()  # keep the file in the order records were made
        return self._write([draft], entries=True)[0]

    def append_soon(self, **fields: Unpack[AuditFields]) -> None:
        """Queue one record (timed now); written before the event loop next polls for I/O.

        Every record queued in one turn of the loop shares one lock, one ``write`` and one
        ``fstat``: under load a busy daemon writes its request lines in batches, and the next
        request (a ``GET /v1/audit`` included) is read only after they are in the file. A write
        that fails is logged (the requests were answered already). Without a running loop this
        is :meth:`append`.
        """
        draft = self._draft(fields)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write([draft], entries=False)
            return
        self._queued.append(draft)
        if len(self._queued) == 1:
            loop.call_soon(self._flush_queued)

    def _draft(self, fields: AuditFields) -> AuditRecord:
        """The record, timed now; its place in the chain (``seq``, ``prev``) is set on write."""
        return AuditRecord(
            seq=0,
            time=_timestamp(self._wall()),
            actor=_clip(fields.get("actor")),
            role=fields.get("role"),
            key_id=_clip(fields.get("key_id")),
            source_ip=_clip(fields.get("source_ip")),
            action=_clip(fields["action"]) or "",
            target=_clip(fields.get("target")),
            outcome=fields["outcome"],
            status=fields.get("status"),
            detail=_clip(fields.get("detail")),
            prev="",
        )

    def flush(self) -> None:
        """Write the records :meth:`append_soon` queued now (a failure is logged)."""
        self._flush_queued()

    def _flush_queued(self) -> None:
        drafts, self._queued = self._queued, []
        if not drafts:
            return
        try:
            self._write(drafts, entries=False)
        except AuditLogError:
            log.exception("%d audit line(s) lost", len(drafts))

    def _write(self, drafts: list[AuditRecord], *, entries: bool) -> list[AuditEntry]:
        if self._fd < 0:
            raise AuditLogError("the audit log is closed")
        sealed: list[tuple[AuditRecord, str]] = []
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                size = os.fstat(self._fd).st_size
                if size != self._known_size:
                    # Another writer appended (or this is the first write): re-read the link.
                    read_fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
                    try:
                        self._seq, self._prev = _last_link(read_fd, size)
                        if size and os.pread(read_fd, 1, size - 1) != b"\n":
                            # Keep a torn last line on its own line, where verify reports it.
                            size += os.write(self._fd, b"\n")
                    finally:
                        os.close(read_fd)
                seq, prev = self._seq, self._prev
                lines: list[bytes] = []
                for draft in drafts:
                    record = msgspec.structs.replace(draft, seq=seq + 1, prev=prev)
                    line, prev = _seal(record)
                    seq = record.seq
                    lines.append(line)
                    if entries:
                        sealed.append((record, prev))
                data = lines[0] if len(lines) == 1 else b"".join(lines)
                os.write(self._fd, data)
                self._known_size = size + len(data)
                self._seq, self._prev = seq, prev
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        except OSError as exc:
            raise AuditLogError(f"cannot write the audit log: {exc.strerror}") from None
        return [AuditEntry(hash=digest, **msgspec.structs.asdict(r)) for r, digest in sealed]


def read_audit_tail(path: Path, *, limit: int, before_seq: int | None = None) -> list[AuditEntry]:
    """The last ``limit`` valid entries (oldest first), optionally only those below ``before_seq``.

    Raises:
        AuditLogError: the file cannot be read.
    """
    if limit <= 0 or not path.exists():
        return []
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise AuditLogError(f"cannot read the audit log: {exc.strerror}") from None
    try:
        found: list[AuditEntry] = []
        for line in _lines_backwards(fd, os.fstat(fd).st_size):
            entry = _parse_line(line)
            if entry is None or (before_seq is not None and entry.seq >= before_seq):
                continue
            found.append(entry)
            if len(found) >= limit:
                break
    finally:
        os.close(fd)
    found.reverse()
    return found


def verify_audit_log(path: Path) -> AuditVerification:
    """Check every line's hash, its link to the previous line and its sequence number.

    Raises:
        AuditLogError: the file cannot be read.
    """
    prev, seq, count = GENESIS_HASH, 0, 0
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise AuditLogError(f"cannot read the audit log {path}: {exc.strerror}") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip(b"\n")
            problem = _line_problem(line, raw, prev, seq)
            if problem is not None:
                return AuditVerification(
                    ok=False, entries=count, first_bad_line=number, problem=problem, last_hash=prev
                )
            entry = _parse_line(line)
            assert entry is not None  # _line_problem returned None only for a parsable line
            prev, seq, count = entry.hash, entry.seq, count + 1
    return AuditVerification(ok=True, entries=count, last_hash=prev if count else None)


def _line_problem(line: bytes, raw: bytes, prev: str, seq: int) -> str | None:
    if not raw.endswith(b"\n"):
        return "the last line is incomplete"
    parts = _split(line)
    if parts is None:
        return "not an audit line (no trailing hash)"
    body, stated = parts
    if hashlib.sha256(body).hexdigest() != stated:
        return "the line was altered: its hash does not match its content"
    entry = _parse_line(line)
    if entry is None:
        return "not an audit record"
    if entry.prev != prev:
        return "the chain is broken: a line before this one was removed, added or altered"
    if entry.seq != seq + 1:
        return f"sequence jumps from {seq} to {entry.seq}"
    return None


class AuditThrottle:
    """Bounds the audit lines a flood of refused requests can write.

    A given (source, reason) writes at most one line per ``interval``; the lines it skipped are
    counted and reported on its next line. A global bucket caps all such lines per second, so a
    flood from many addresses is bounded too. Failed authentications and role denials are not
    throttled (the lock-out and the per-key rate limit bound them).
    """

    def __init__(
        self,
        *,
        interval: float = 60.0,
        per_second: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self._interval = interval
        self._rate = per_second
        self._clock = clock
        self._max_keys = max_keys
        self._last: OrderedDict[Hashable, tuple[float, int]] = OrderedDict()
        self._tokens = per_second
        self._updated = clock()
        self._dropped = 0

    def admit(self, key: Hashable) -> int | None:
        """None to skip this line; otherwise how many lines were skipped before it."""
        now = self._clock()
        self._tokens = min(self._rate, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        last = self._last.get(key)
        if last is not None and now - last[0] < self._interval:
            self._last[key] = (last[0], last[1] + 1)
            return None
        if self._tokens < 1:
            self._dropped += 1
            return None
        self._tokens -= 1
        skipped = (last[1] if last is not None else 0) + self._dropped
        self._dropped = 0
        self._last[key] = (now, 0)
        self._last.move_to_end(key)
        while len(self._last) > self._max_keys:
            self._last.popitem(last=False)
        return skipped
