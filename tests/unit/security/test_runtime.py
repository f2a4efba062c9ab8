"""Building the runtime from the daemon's settings: weak or missing material refuses start-up."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import pytest

from kdf_remote.daemon.security.errors import SecurityConfigError
from kdf_remote.daemon.security.process import DEFAULT_KDF_USER, kdf_user, resolve_run_as
from kdf_remote.daemon.security.runtime import SecurityRuntime
from kdf_remote.daemon.security.tls import check_listen_address
from kdf_remote.daemon.security.tokens import create_jwt_key_file
from kdf_remote.daemon.settings import Settings, parse_settings

pytestmark = [pytest.mark.unit, pytest.mark.security]


def _settings(tmp_path: Path, extra: str = "") -> Settings:
    text = (
        f"daemon: {{host: 127.0.0.1, state_dir: {tmp_path / 'state'}}}\n"
        "security:\n"
        "  api_keys: [yaml-key-0123456789]\n"
        "  allowed_ips: ['203.0.113.0/24']\n"
        "  jwt: {ttl: 5m}\n"
        f"{extra}"
    )
    return parse_settings(text, source="daemon.yaml", base_dir=tmp_path)


def test_missing_jwt_key_refuses_start(tmp_path: Path) -> None:
    """No key file: the runtime is not built and the error names the setting."""
    with pytest.raises(SecurityConfigError, match=r"security\.jwt\.key_file"):
        SecurityRuntime.from_settings(_settings(tmp_path).security)


def test_runtime_from_settings_uses_every_section(tmp_path: Path) -> None:
    """With a key file the runtime carries the YAML key, TTL, allow-list and audit path."""
    settings = _settings(tmp_path)
    assert create_jwt_key_file(settings.security.jwt.key_file)
    runtime = SecurityRuntime.from_settings(settings.security)
    try:
        record = runtime.keys.lookup("yaml-key-0123456789")
        assert record.source == "config"
        assert runtime.tokens.issue(record).expires_in == 300
        assert runtime.allow_list.restricted
        assert runtime.audit.path == settings.security.audit_log
    finally:
        runtime.close()


def test_world_readable_jwt_key_refuses_start(tmp_path: Path) -> None:
    """A key file others can read refuses start-up."""
    settings = _settings(tmp_path)
    create_jwt_key_file(settings.security.jwt.key_file)
    settings.security.jwt.key_file.chmod(0o644)
    with pytest.raises(SecurityConfigError, match="chmod 600"):
        SecurityRuntime.from_settings(settings.security)


def test_plain_http_only_on_loopback(tmp_path: Path) -> None:
    """Without TLS the daemon may listen on loopback only."""
    check_listen_address("127.0.0.1", tls=False)
    check_listen_address("::1", tls=False)
    check_listen_address("0.0.0.0", tls=True)
    for host in ("0.0.0.0", "::", "203.0.113.7", "kdf.example.com"):
        with pytest.raises(SecurityConfigError, match=r"daemon\.host"):
            check_listen_address(host, tls=False)


def test_kdf_never_runs_as_root() -> None:
    """Under root KDF gets an unprivileged user (or start-up fails); otherwise it inherits ours."""
    assert resolve_run_as("kdf", euid=1000) is None
    with pytest.raises(SecurityConfigError, match="kdf user"):
        resolve_run_as("no-such-user-kdf-remote", euid=0)
    with pytest.raises(SecurityConfigError, match="not 0"):
        resolve_run_as("root", euid=0)
    nobody = resolve_run_as("nobody", euid=0)
    assert nobody is not None and nobody.uid != 0 and nobody.gid != 0
    if os.geteuid() != 0:
        assert resolve_run_as("nobody") is None


def test_kdf_run_as_setting_picks_the_account(caplog: pytest.LogCaptureFixture) -> None:
    """kdf.run_as: explicit accounts must exist; unset means `kdf` if it exists, else a warning."""
    kdf_user.cache_clear()
    assert kdf_user("nobody", euid=1000) is None  # unprivileged daemon: KDF inherits its user
    assert kdf_user("nobody", euid=0) == "nobody"
    with pytest.raises(SecurityConfigError, match="kdf user"):
        kdf_user("no-such-user-kdf-remote", euid=0)
    try:
        pwd.getpwnam(DEFAULT_KDF_USER)
    except KeyError:
        with caplog.at_level("WARNING", logger="kdf_remote.daemon.security"):
            assert kdf_user(None, euid=0) is None
        assert "KDF runs as root" in caplog.text
    else:
        assert kdf_user(None, euid=0) == DEFAULT_KDF_USER
    kdf_user.cache_clear()
