"""Log rotation (copy-then-truncate on an O_APPEND file), tail, follow and redaction."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kdf_remote.supervisor.logs import (
    MAX_LINE_CHARS,
    LogFollower,
    Redactor,
    open_log_for_append,
    read_tail,
    rotate_if_needed,
)

pytestmark = pytest.mark.unit

SEED = "abandon ability able about above absent absorb abstract absurd abuse access accident"
PLAIN = Redactor()


def write(fd: int, text: str) -> None:
    """Append like KDF does, through an inherited O_APPEND descriptor."""
    os.write(fd, text.encode())


def test_rotation_keeps_the_writers_descriptor_working(tmp_path: Path) -> None:
    """After copy-then-truncate the writer's next write lands at the start of the live file."""
    log = tmp_path / "kdf.log"
    fd = open_log_for_append(log)
    try:
        write(fd, "a" * 5000 + "\n")
        assert rotate_if_needed(log, 4096, 2)
        write(fd, "after\n")
    finally:
        os.close(fd)
    assert log.read_text() == "after\n"
    assert (tmp_path / "kdf.log.1").read_text() == "a" * 5000 + "\n"
    assert oct((tmp_path / "kdf.log.1").stat().st_mode & 0o777) == "0o600"
    assert oct(log.stat().st_mode & 0o777) == "0o600"


def test_rotation_shifts_and_bounds_backups(tmp_path: Path) -> None:
    """Backups shift .1 -> .2 -> ...; at most log_backups old files exist."""
    log = tmp_path / "kdf.log"
    fd = open_log_for_append(log)
    try:
        for generation in range(6):
            write(fd, f"{generation}" * 4096 + "\n")
            assert rotate_if_needed(log, 4096, 3)
    finally:
        os.close(fd)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["kdf.log", "kdf.log.1", "kdf.log.2", "kdf.log.3"]
    assert (tmp_path / "kdf.log.1").read_text()[0] == "5"
    assert (tmp_path / "kdf.log.3").read_text()[0] == "3"


def test_no_rotation_below_the_cap_or_without_file(tmp_path: Path) -> None:
    """Below the cap nothing happens; a missing file is not an error."""
    log = tmp_path / "kdf.log"
    assert not rotate_if_needed(log, 4096, 3)
    log.write_text("small\n")
    assert not rotate_if_needed(log, 4096, 3)
    assert log.read_text() == "small\n"


def test_zero_backups_truncates_only(tmp_path: Path) -> None:
    """With log_backups=0 the live file is emptied and no copy is kept."""
    log = tmp_path / "kdf.log"
    log.write_text("x" * 5000)
    assert rotate_if_needed(log, 4096, 0)
    assert log.stat().st_size == 0
    assert [p.name for p in tmp_path.iterdir()] == ["kdf.log"]


def test_tail_reads_last_lines_and_continues_into_backup(tmp_path: Path) -> None:
    """Tail gives the last n lines, reaching into kdf.log.1 when the live file is short."""
    log = tmp_path / "kdf.log"
    (tmp_path / "kdf.log.1").write_text("".join(f"old {i}\n" for i in range(100)))
    log.write_text("new 0\nnew 1\n")
    assert read_tail(log, 3, PLAIN) == ["old 99", "new 0", "new 1"]
    assert read_tail(log, 0, PLAIN) == []
    assert read_tail(tmp_path / "missing.log", 5, PLAIN) == []


def test_tail_of_a_large_file_reads_only_the_end(tmp_path: Path) -> None:
    """A big log (more than the read budget) still tails correctly, lines unbroken."""
    log = tmp_path / "kdf.log"
    with log.open("w") as handle:
        for i in range(200_000):
            handle.write(f"line {i:06d} {'x' * 40}\n")
    lines = read_tail(log, 5, PLAIN)
    assert [line.split()[1] for line in lines] == [f"{i:06d}" for i in range(199_995, 200_000)]


def test_tail_cuts_huge_lines(tmp_path: Path) -> None:
    """A single enormous line is cut and marked rather than returned whole."""
    log = tmp_path / "kdf.log"
    log.write_text("y" * (MAX_LINE_CHARS * 3) + "\n")
    (line,) = read_tail(log, 1, PLAIN)
    assert line.endswith("[line truncated]")
    assert len(line) < MAX_LINE_CHARS + 50


def test_follow_sees_appends_and_survives_rotation(tmp_path: Path) -> None:
    """A follower yields only new complete lines, and keeps going after copy-then-truncate."""
    log = tmp_path / "kdf.log"
    fd = open_log_for_append(log)
    try:
        write(fd, "before\n")
        follower = LogFollower(log, PLAIN)
        assert follower.read_new() == []
        write(fd, "one\ntw")
        assert follower.read_new() == ["one"]
        write(fd, "o\n" + "z" * 5000 + "\n")
        assert follower.read_new() == ["two", "z" * 5000]
        assert rotate_if_needed(log, 4096, 1)
        write(fd, "three\n")
        assert follower.read_new() == ["three"]
        follower.close()
    finally:
        os.close(fd)


def test_follow_from_start_and_file_created_later(tmp_path: Path) -> None:
    """from_start reads existing content; a log that does not exist yet is waited for."""
    log = tmp_path / "kdf.log"
    follower = LogFollower(log, PLAIN, from_start=True)
    assert follower.read_new() == []
    log.write_text("first\nsecond\n")
    assert follower.read_new() == ["first", "second"]
    follower.close()


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        ('{"method":"withdraw","userpass":"Xyz!12345abc","coin":"KMD"}', "Xyz!12345abc"),
        ("rpc_password=Xyz!12345abc other", "Xyz!12345abc"),
        ("Conf { wallet_password: 'Xyz!12345abc', gui: \"g\" }", "Xyz!12345abc"),
        (f'passphrase: "{SEED}"', "abandon ability"),
        (f"restored wallet from {SEED} ok", "abandon ability"),
        ("mnemonic = Xyz!12345abc", "Xyz!12345abc"),
    ],
)
def test_redaction_patterns(line: str, secret: str) -> None:
    """Secret keys' values and seed-phrase-shaped word runs are masked."""
    redacted = PLAIN.redact(line)
    assert secret not in redacted
    assert "***" in redacted


def test_known_secret_values_are_masked_anywhere() -> None:
    """A configured secret is masked even without a telling key next to it."""
    redactor = Redactor(["Sup3r$ecretValue", "ab"])
    assert redactor.redact("error: Sup3r$ecretValue rejected") == "error: *** rejected"
    assert redactor.redact("ab stays (too short to be a secret)") == (
        "ab stays (too short to be a secret)"
    )


def test_ordinary_lines_are_untouched() -> None:
    """KDF's usual lines pass unchanged."""
    line = "28 16:00:06, mm2_main::lp_native_dex:512] WARN P2P is disabled. Features that"
    assert PLAIN.redact(line) == line
    dex = "😉 2026-11-28 16:00:06 +0000 [] rpc:322] >>>>>>>>>> DEX stats 127.0.0.1:7783"
    assert PLAIN.redact(dex) == dex
