"""`kdf-remote-daemon check-config` and start-up with bad files: the exact messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

DAEMON = str(Path(sys.executable).parent / "kdf-remote-daemon")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DAEMON, *args], capture_output=True, text=True, timeout=60, check=False)


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    """A valid file is OK (exit 0); a missing KDF binary is a warning, not an error."""
    path = tmp_path / "daemon.yaml"
    path.write_text(
        f"daemon: {{host: 127.0.0.1, state_dir: {tmp_path}}}\n"
        f"kdf: {{binary_path: {tmp_path}/kdf}}\n"
    )
    assert _run("keys", "init", "--config", str(path)).returncode == 0  # the JWT key
    result = _run("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{path}: OK"
    assert f"warning: kdf.binary_path: {tmp_path}/kdf is not a file" in result.stderr


def test_bad_files_fail_with_every_problem(tmp_path: Path) -> None:
    """check-config and the server both exit 1 listing key, value, expectation and line."""
    path = tmp_path / "bad.yaml"
    path.write_text(
        "daemon:\n"
        "  port: 99999\n"
        "  log_level: loud\n"
        "kdf:\n"
        "  stop_timeout: soon\n"
        "security:\n"
        "  api_keys: [k]\n"
        "  rate_limit: {requests_per_minute: 0}\n"
        "surprise: true\n"
    )
    expected = [
        "invalid configuration:",
        f"{path}:2: daemon.port: got '99999', expected a TCP port (1-65535)",
        f"{path}:3: daemon.log_level: got 'loud', expected one of debug, info, warning, error, "
        "critical",
        f"{path}:5: kdf.stop_timeout: got 'soon', expected a duration such as 500ms, 30s, 10m "
        "or 1h",
        f"{path}:8: security.rate_limit.requests_per_minute: got '0', expected a positive integer",
        f"{path}:9: surprise: unknown key, expected one of: backup, daemon, kdf, kdf_compat, "
        "security, worker_support",
    ]
    for args in (("check-config", str(path)), ("--config", str(path))):
        result = _run(*args)
        assert result.returncode == 1
        assert result.stderr.splitlines() == expected
        assert result.stdout == ""


def test_missing_file(tmp_path: Path) -> None:
    """A file that does not exist is named in the message."""
    result = _run("check-config", str(tmp_path / "absent.yaml"))
    assert result.returncode == 1
    assert f"{tmp_path / 'absent.yaml'}: <file>: cannot read" in result.stderr


RESIDENT_PROBE = """
import sys
from kdf_remote.daemon.cli import main
sys.argv = ["kdf-remote-daemon", "check-config", sys.argv[1]]
try:
    main()
except SystemExit:
    pass
import kdf_remote.daemon.app, kdf_remote.daemon.server  # what the serving daemon loads
loaded = [m for m in ("rich", "pygments", "httpx._main") if sys.modules.get(m) is not None]
print("LOADED:" + ",".join(loaded) + ":httpx" * ("httpx" in sys.modules))
"""


def test_the_daemon_keeps_httpx_cli_out_of_memory(tmp_path: Path) -> None:
    """Through its entry point the daemon loads httpx without httpx's CLI (rich, pygments)."""
    path = tmp_path / "daemon.yaml"
    path.write_text(
        f"daemon: {{host: 127.0.0.1, state_dir: {tmp_path}}}\n"
        f"kdf: {{binary_path: {tmp_path}/kdf}}\n"
    )
    assert _run("keys", "init", "--config", str(path)).returncode == 0
    probe = subprocess.run(
        [sys.executable, "-c", RESIDENT_PROBE, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    # httpx itself is loaded (release downloads); its CLI and what that pulls in are not.
    assert probe.stdout.strip().splitlines()[-1] == "LOADED::httpx"
