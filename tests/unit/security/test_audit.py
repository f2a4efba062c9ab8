"""The audit log: hash chain, tamper detection, torn lines, two writers, tail reads, throttling."""

from __future__ import annotations

import asyncio
import itertools
import json
import stat
from pathlib import Path

import pytest

from kdf_remote.daemon.security.audit import (
    GENESIS_HASH,
    AuditLog,
    AuditThrottle,
    read_audit_tail,
    verify_audit_log,
)
from kdf_remote.daemon.security.errors import SecurityConfigError

from .conftest import FakeClock

pytestmark = [pytest.mark.unit, pytest.mark.security]


def _write(log: AuditLog, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        log.append(
            action="POST /v1/instances/{name}/start",
            outcome="ok",
            actor="ops",
            role="operator",
            key_id="abcd",
            source_ip="192.0.2.1",
            target=f"w{i}",
            status=200,
        )


@pytest.fixture
def log_path(tmp_path: Path, clock: FakeClock) -> Path:
    """An audit log with five entries."""
    path = tmp_path / "audit.log"
    log = AuditLog(path, wall_clock=clock.wall)
    _write(log, 5)
    log.close()
    return path


def test_entries_chain_and_verify(log_path: Path) -> None:
    """Each line links to the previous; the whole file verifies; the file is 0600."""
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [e["seq"] for e in lines] == [1, 2, 3, 4, 5]
    assert lines[0]["prev"] == GENESIS_HASH
    assert all(b["prev"] == a["hash"] for a, b in itertools.pairwise(lines))
    assert set(lines[0]) == {
        "seq",
        "time",
        "actor",
        "role",
        "key_id",
        "source_ip",
        "action",
        "target",
        "outcome",
        "status",
        "detail",
        "prev",
        "hash",
    }
    result = verify_audit_log(log_path)
    assert result.ok and result.entries == 5 and result.last_hash == lines[-1]["hash"]
    assert stat.S_IMODE(log_path.stat().st_mode) == 0o600


def test_an_edited_line_is_detected_at_that_line(log_path: Path) -> None:
    """Changing one value in line 3 (even keeping valid JSON) fails verification at line 3."""
    lines = log_path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"outcome":"ok"', b'"outcome":"no"')
    log_path.write_bytes(b"".join(lines))
    result = verify_audit_log(log_path)
    assert not result.ok
    assert (result.first_bad_line, result.entries) == (3, 2)
    assert "altered" in (result.problem or "")


def test_edit_with_recomputed_hash_breaks_the_next_link(log_path: Path) -> None:
    """Re-sealing an edited line does not help: the following line's ``prev`` no longer matches."""
    import hashlib

    lines = log_path.read_bytes().splitlines(keepends=True)
    body = lines[1][: lines[1].index(b',"hash":"')] + b"}"
    forged_body = body.replace(b'"actor":"ops"', b'"actor":"eve"')
    digest = hashlib.sha256(forged_body).hexdigest().encode()
    lines[1] = forged_body[:-1] + b',"hash":"' + digest + b'"}\n'
    log_path.write_bytes(b"".join(lines))
    result = verify_audit_log(log_path)
    assert (result.ok, result.first_bad_line) == (False, 3)
    assert "chain is broken" in (result.problem or "")


def test_deleted_and_reordered_lines_are_detected(log_path: Path) -> None:
    """Removing or swapping lines breaks the chain where it happened."""
    original = log_path.read_bytes().splitlines(keepends=True)
    log_path.write_bytes(b"".join(original[:1] + original[2:]))
    assert verify_audit_log(log_path).first_bad_line == 2
    log_path.write_bytes(b"".join([original[0], original[2], original[1], *original[3:]]))
    assert verify_audit_log(log_path).first_bad_line == 2


def test_a_torn_last_line_is_reported_and_the_log_continues(
    log_path: Path, clock: FakeClock
) -> None:
    """A crash mid-write leaves a partial line; later appends keep it on its own line."""
    with log_path.open("ab") as handle:
        handle.write(b'{"seq":6,"time":"x"')
    assert verify_audit_log(log_path).problem == "the last line is incomplete"
    log = AuditLog(log_path, wall_clock=clock.wall)
    entry = log.append(action="x", outcome="ok")
    log.close()
    assert entry.seq == 7
    result = verify_audit_log(log_path)
    assert (result.ok, result.first_bad_line) == (False, 6)
    assert len(log_path.read_text().splitlines()) == 7


def test_two_writers_produce_one_valid_chain(tmp_path: Path, clock: FakeClock) -> None:
    """The daemon and a CLI appending in turn still produce a single chain."""
    path = tmp_path / "audit.log"
    first, second = AuditLog(path, wall_clock=clock.wall), AuditLog(path, wall_clock=clock.wall)
    for i in range(6):
        (first if i % 2 else second).append(action=f"a{i}", outcome="ok")
    first.close()
    second.close()
    result = verify_audit_log(path)
    assert result.ok and result.entries == 6


def test_crlf_in_fields_cannot_forge_lines(tmp_path: Path, clock: FakeClock) -> None:
    """A path with CR/LF stays inside one JSON line; fields are length-capped."""
    path = tmp_path / "audit.log"
    log = AuditLog(path, wall_clock=clock.wall)
    forged = '/v1/x\r\n{"seq":99,"actor":"admin"}'
    log.append(action=f"GET {forged}", outcome="denied", target="t" * 5000)
    log.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["action"] == f"GET {forged}"
    assert len(entry["target"]) <= 256
    assert verify_audit_log(path).ok


def test_tail_reads_pages_backwards(tmp_path: Path, clock: FakeClock) -> None:
    """The tail returns the newest entries oldest first; ``before_seq`` pages back."""
    path = tmp_path / "audit.log"
    log = AuditLog(path, wall_clock=clock.wall)
    _write(log, 3000)
    log.close()
    page = read_audit_tail(path, limit=100)
    assert [e.seq for e in page] == list(range(2901, 3001))
    older = read_audit_tail(path, limit=100, before_seq=page[0].seq)
    assert [e.seq for e in older] == list(range(2801, 2901))
    assert read_audit_tail(path, limit=10, before_seq=3)[0].seq == 1
    assert read_audit_tail(tmp_path / "missing.log", limit=10) == []


def test_existing_log_readable_by_others_is_refused(tmp_path: Path, clock: FakeClock) -> None:
    """An audit log others can read (it names keys and addresses) refuses start-up."""
    path = tmp_path / "audit.log"
    path.write_text("")
    path.chmod(0o644)
    with pytest.raises(SecurityConfigError, match=r"security\.audit_log"):
        AuditLog(path, wall_clock=clock.wall)


def test_throttle_writes_once_per_interval_and_counts_what_it_skipped(clock: FakeClock) -> None:
    """Repeated refusals for one source write one line a minute, then report the skipped count."""
    throttle = AuditThrottle(interval=60, per_second=100, clock=clock.monotonic)
    assert throttle.admit(("1.2.3.4", "ip")) == 0
    assert throttle.admit(("1.2.3.4", "ip")) is None
    assert throttle.admit(("1.2.3.4", "ip")) is None
    assert throttle.admit(("5.6.7.8", "ip")) == 0
    clock.advance(60)
    assert throttle.admit(("1.2.3.4", "ip")) == 2


def test_throttle_caps_lines_across_sources(clock: FakeClock) -> None:
    """A flood from many sources is capped by the global rate; drops are reported later."""
    throttle = AuditThrottle(interval=60, per_second=5, clock=clock.monotonic)
    written = [throttle.admit((f"ip-{i}", "ip")) for i in range(50)]
    assert sum(w is not None for w in written) == 5
    clock.advance(1)
    assert throttle.admit(("late", "ip")) == 45


async def test_queued_records_are_written_together_before_the_next_loop_turn(
    tmp_path: Path, clock: FakeClock
) -> None:
    """``append_soon``: nothing written until the loop turns, then one chained batch."""
    path = tmp_path / "audit.log"
    log = AuditLog(path, wall_clock=clock.wall)
    _write(log, 1)
    for i in range(3):
        log.append_soon(action="POST /v1/instances/{name}/rpc", outcome="ok", target=f"w{i}")
    assert len(path.read_text().splitlines()) == 1
    drained = asyncio.Event()
    asyncio.get_running_loop().call_soon(drained.set)  # runs after the flush queued before it
    await drained.wait()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(e["seq"], e["target"]) for e in lines] == [(1, "w0"), (2, "w0"), (3, "w1"), (4, "w2")]
    log.close()
    assert verify_audit_log(path).ok


async def test_append_and_close_keep_queued_records_in_order(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A direct ``append`` writes queued records first; ``close`` writes what is left."""
    path = tmp_path / "audit.log"
    log = AuditLog(path, wall_clock=clock.wall)
    log.append_soon(action="first", outcome="ok")
    entry = log.append(action="second", outcome="ok")
    log.append_soon(action="third", outcome="ok")
    log.close()
    actions = [json.loads(line)["action"] for line in path.read_text().splitlines()]
    assert actions == ["first", "second", "third"]
    assert entry.seq == 2
    assert verify_audit_log(path).ok


def test_append_soon_without_a_loop_writes_at_once(tmp_path: Path, clock: FakeClock) -> None:
    """Outside an event loop (the CLI), ``append_soon`` is a plain append."""
    path = tmp_path / "audit.log"
    log = AuditLog(path, wall_clock=clock.wall)
    log.append_soon(action="keys revoke", outcome="ok")
    assert len(path.read_text().splitlines()) == 1
    log.close()
