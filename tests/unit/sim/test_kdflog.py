"""KDF's three log-line formats and their destinations (kdf-facts 3.1)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from kdf_remote.sim.kdflog import KdfLog, level_from_rust_log

pytestmark = pytest.mark.unit

SHORT = r"\d\d \d\d:\d\d:\d\d, "


def _open(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)


def test_formats_and_console_destinations(tmp_path: Path) -> None:
    """log! and dashboard lines go to stdout, env_logger lines to stderr."""
    out, err = _open(tmp_path / "out"), _open(tmp_path / "err")
    try:
        log = KdfLog(mm_log=None, rust_log=None, stdout_fd=out, stderr_fd=err)
        log.log("mm2:160", "hello")
        log.env("INFO", "mm2_main::lp_native_dex:476", "Version: x")
        log.dashboard("\U0001f609", "", "rpc:322", "ready")
    finally:
        os.close(out)
        os.close(err)
    stdout = (tmp_path / "out").read_text().splitlines()
    stderr = (tmp_path / "err").read_text().splitlines()
    assert re.fullmatch(SHORT + r"mm2:160\] hello", stdout[0])
    assert re.fullmatch(
        "\U0001f609" + r" \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+0000 \[\] rpc:322\] ready", stdout[1]
    )
    assert re.fullmatch(SHORT + r"mm2_main::lp_native_dex:476\] INFO Version: x", stderr[0])


def test_mm_log_file_takes_log_lines_and_copies_env_lines(tmp_path: Path) -> None:
    """With MM_LOG=*.log, log!/dashboard lines go only to the file; env lines go to both."""
    out, err = _open(tmp_path / "out"), _open(tmp_path / "err")
    mm_log = tmp_path / "kdf.log"
    try:
        log = KdfLog(mm_log=str(mm_log), rust_log=None, stdout_fd=out, stderr_fd=err)
        log.log("mm2:160", "banner")
        log.env("WARN", "m:1", "careful")
    finally:
        os.close(out)
        os.close(err)
    assert (tmp_path / "out").read_text() == ""
    assert "WARN careful" in (tmp_path / "err").read_text()
    file_text = mm_log.read_text()
    assert "mm2:160] banner" in file_text
    assert "WARN careful" in file_text


def test_mm_log_without_log_suffix_is_ignored(tmp_path: Path) -> None:
    """MM_LOG not ending in .log prints KDF's complaint and logs to stdout."""
    out, err = _open(tmp_path / "out"), _open(tmp_path / "err")
    try:
        log = KdfLog(mm_log=str(tmp_path / "kdf.txt"), rust_log=None, stdout_fd=out, stderr_fd=err)
        log.log("mm2:160", "banner")
    finally:
        os.close(out)
        os.close(err)
    stdout = (tmp_path / "out").read_text()
    assert "open_log_file] MM_LOG doesn't end with '.log'" in stdout
    assert "banner" in stdout
    assert not (tmp_path / "kdf.txt").exists()


def test_silent_console_and_rust_log_filter(tmp_path: Path) -> None:
    """silent_console hides env lines from stderr; RUST_LOG=warn drops INFO lines."""
    out, err = _open(tmp_path / "out"), _open(tmp_path / "err")
    try:
        log = KdfLog(mm_log=None, rust_log="warn", stdout_fd=out, stderr_fd=err)
        log.env("INFO", "m:1", "dropped")
        log.env("WARN", "m:1", "kept")
        log.silent_console = True
        log.env("WARN", "m:1", "silenced")
    finally:
        os.close(out)
        os.close(err)
    assert (tmp_path / "err").read_text().count("\n") == 1
    assert "kept" in (tmp_path / "err").read_text()


def test_rust_log_levels() -> None:
    """Unset RUST_LOG means info; a bare level sets the global level."""
    assert level_from_rust_log(None) == 3
    assert level_from_rust_log("debug") == 4
    assert level_from_rust_log("mm2=trace,error") == 1
