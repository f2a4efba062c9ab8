"""The rendered daemon unit passes ``systemd-analyze verify`` and the exposure gate."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kdf_remote.daemon.security.systemd import DaemonUnit, render_daemon_unit

pytestmark = [
    pytest.mark.integration,
    pytest.mark.security,
    pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze"),
]

EXPOSURE_THRESHOLD = 30
"""``systemd-analyze security --threshold`` is in tenths: 30 means an exposure of at most 3.0."""


@pytest.fixture
def unit_file(tmp_path: Path) -> Path:
    """The unit rendered with an ExecStart that exists on this machine."""
    path = tmp_path / "kdf-remote-daemon.service"
    path.write_text(render_daemon_unit(DaemonUnit(exec_path=Path(sys.executable))))
    return path


def test_unit_verifies_cleanly(unit_file: Path) -> None:
    """No misspelled or invalid directive (systemd would silently ignore those)."""
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_unit_exposure_stays_under_the_threshold(unit_file: Path) -> None:
    """``systemd-analyze security --offline`` rates the unit at most 3.0 (OK)."""
    result = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=true",
            "--no-pager",
            f"--threshold={EXPOSURE_THRESHOLD}",
            str(unit_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert "Overall exposure level" in result.stdout


def test_the_gate_fails_an_unhardened_unit(tmp_path: Path) -> None:
    """Control: the same gate refuses a unit without the hardening directives."""
    bare = tmp_path / "bare.service"
    bare.write_text(f"[Service]\nExecStart={sys.executable}\n")
    result = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=true",
            "--no-pager",
            f"--threshold={EXPOSURE_THRESHOLD}",
            str(bare),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
