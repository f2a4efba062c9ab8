"""``kdf-remote-daemon keys|tls|audit`` through the cyclopts sub-apps, attached to a root App."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cyclopts import App

from kdf_remote.daemon.security.audit import AuditLog
from kdf_remote.daemon.security.commands import register
from kdf_remote.daemon.security.keystore import API_KEY_PATTERN, format_key_hash, key_digest

pytestmark = [pytest.mark.unit, pytest.mark.security]


@pytest.fixture
def app() -> App:
    """A root App like the daemon's, with the security sub-apps attached."""
    root = App(name="kdf-remote-daemon", result_action="return_value")
    register(root)
    return root


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A daemon configuration whose state lives in ``tmp_path``."""
    path = tmp_path / "daemon.yaml"
    path.write_text(f"daemon: {{host: 127.0.0.1, state_dir: {tmp_path / 'state'}}}\n")
    return path


def run(app: App, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run one command; returns (exit code, stdout, stderr)."""
    code = app(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_keys_add_prints_the_key_once_and_stores_only_its_hash(
    app: App, config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``keys add --json`` prints name, role and key; the file has the hash; the JWT key exists."""
    code, out, err = run(
        app,
        capsys,
        "keys",
        "add",
        "--config",
        str(config),
        "--name",
        "ci",
        "--role",
        "operator",
        "--json",
    )
    assert (code, err) == (0, "")
    printed = json.loads(out)
    assert set(printed) == {"name", "role", "key"}
    assert printed["name"] == "ci" and printed["role"] == "operator"
    assert API_KEY_PATTERN.match(printed["key"])
    keys_file = (tmp_path / "state" / "api_keys.json").read_text()
    assert printed["key"] not in keys_file
    assert format_key_hash(key_digest(printed["key"])) in keys_file
    jwt_key = tmp_path / "state" / "jwt.key"
    assert stat.S_IMODE(jwt_key.stat().st_mode) == 0o600


def test_keys_list_and_revoke(app: App, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``list`` shows status but never a key; ``revoke`` flips it; a second revoke fails (1)."""
    _, out, _ = run(
        app,
        capsys,
        "keys",
        "add",
        "--config",
        str(config),
        "--name",
        "ci",
        "--role",
        "viewer",
        "--json",
    )
    plain = json.loads(out)["key"]
    code, out, _ = run(app, capsys, "keys", "list", "--config", str(config), "--json")
    listed = json.loads(out)
    assert code == 0 and [(k["name"], k["status"]) for k in listed] == [("ci", "active")]
    assert plain not in out
    assert run(app, capsys, "keys", "revoke", "ci", "--config", str(config))[0] == 0
    _, out, _ = run(app, capsys, "keys", "list", "--config", str(config), "--json")
    assert json.loads(out)[0]["status"] == "revoked"
    code, _, err = run(app, capsys, "keys", "revoke", "ci", "--config", str(config))
    assert code == 1 and "no active key named 'ci'" in err


def test_keys_add_refuses_a_bad_expiry_and_a_bad_config(
    app: App, config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A malformed expiry or an invalid configuration exits 1 with the reason on stderr."""
    code, _, err = run(
        app,
        capsys,
        "keys",
        "add",
        "--config",
        str(config),
        "--name",
        "x",
        "--role",
        "admin",
        "--expires",
        "next week",
    )
    assert code == 1 and "--expires" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("security: {nonsense: 1}\n")
    code, _, err = run(app, capsys, "keys", "list", "--config", str(bad))
    assert code == 1 and "nonsense" in err


def test_keys_init_is_idempotent(
    app: App, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``keys init`` creates the JWT key once and keeps it afterwards."""
    _, out, _ = run(app, capsys, "keys", "init", "--config", str(config), "--json")
    first = json.loads(out)
    _, out, _ = run(app, capsys, "keys", "init", "--config", str(config), "--json")
    assert first["created"] and not json.loads(out)["created"]


def test_tls_init_prints_the_four_paths(
    app: App, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``tls init`` writes ca.pem, ca.key, server.pem, server.key and prints their paths."""
    directory = tmp_path / "tls"
    code, out, _ = run(
        app,
        capsys,
        "tls",
        "init",
        "--dir",
        str(directory),
        "--san",
        "127.0.0.1",
        "--san",
        "kdf.example.com",
        "--days",
        "90",
    )
    assert code == 0
    assert out.split() == [
        str(directory / n) for n in ("ca.pem", "ca.key", "server.pem", "server.key")
    ]
    code, _, err = run(app, capsys, "tls", "init", "--dir", str(directory), "--san", "127.0.0.1")
    assert code == 1 and "--force" in err


def test_audit_verify_reports_the_first_bad_line(
    app: App, config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``audit verify`` exits 0 on an intact chain and 1 naming the altered line."""
    path = tmp_path / "state" / "audit.log"
    log = AuditLog(path)
    for i in range(3):
        log.append(action=f"POST /v1/x{i}", outcome="ok", actor="ops")
    log.close()
    code, out, _ = run(app, capsys, "audit", "verify", "--config", str(config))
    assert code == 0 and "3 entries, chain intact" in out
    path.write_text(path.read_text().replace('"actor":"ops"', '"actor":"eve"', 1))
    code, out, _ = run(app, capsys, "audit", "verify", "--config", str(config), "--json")
    result = json.loads(out)
    assert code == 1 and result["first_bad_line"] == 1 and not result["ok"]
