"""``init`` (a complete set-up in one directory) and the ``check-config`` security checks."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from kdf_remote.daemon.principal import Role
from kdf_remote.daemon.security.errors import SecurityConfigError, SecurityError
from kdf_remote.daemon.security.install import InitOptions, init_daemon
from kdf_remote.daemon.security.keystore import KeyStore, add_key, key_digest, read_keys_file
from kdf_remote.daemon.security.preflight import check_security
from kdf_remote.daemon.security.tokens import create_jwt_key_file
from kdf_remote.daemon.settings import load_settings, parse_settings

from .conftest import FakeClock

pytestmark = [pytest.mark.unit, pytest.mark.security]


def _options(tmp_path: Path, **changes: object) -> InitOptions:
    values: dict[str, object] = {
        "state_dir": tmp_path / "deploy",
        "kdf_binary": tmp_path / "kdf",
        "port": 18443,
        "max_workers": 2,
    }
    values.update(changes)
    return InitOptions(**values)  # type: ignore[arg-type]


def test_init_writes_a_setup_the_daemon_accepts(tmp_path: Path) -> None:
    """Config, TLS, JWT key and keys file are private; the start-up checks find nothing."""
    result = init_daemon(_options(tmp_path, allowed_ips=("10.0.0.0/8",)))
    root = tmp_path / "deploy"
    assert result.config_path == str(root / "daemon.yaml")
    assert result.url == "https://127.0.0.1:18443"
    assert result.ca_cert_path == str(root / "tls" / "ca.pem")
    settings = load_settings(Path(result.config_path))
    assert settings.security.ssl is not None
    assert settings.daemon.state_dir == root / "state"
    assert [str(n) for n in settings.security.allowed_ips] == ["10.0.0.0/8"]
    assert len(settings.worker_support.worker_ports) == 2
    assert settings.kdf.rpc_port not in settings.worker_support.worker_ports
    report = check_security(settings)
    assert (report.errors, report.warnings) == ([], [])
    for private in ("daemon.yaml", "state/jwt.key", "state/api_keys.json", "tls/server.key"):
        assert stat.S_IMODE((root / private).stat().st_mode) == 0o600, private
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    (admin,) = read_keys_file(settings.security.keys_file)
    assert (admin.name, admin.role, admin.digest) == ("admin", "admin", key_digest(result.api_key))
    assert result.api_key not in (root / "daemon.yaml").read_text()


def test_init_names_the_certificate_and_url_after_the_host(tmp_path: Path) -> None:
    """An IPv6 host is bracketed in the URL; a wildcard host needs ``--san``."""
    v6 = init_daemon(_options(tmp_path, host="::1"))
    assert v6.url == "https://[::1]:18443"
    with pytest.raises(SecurityConfigError, match="--san"):
        init_daemon(_options(tmp_path / "b", host="0.0.0.0"))
    named = init_daemon(_options(tmp_path / "c", host="0.0.0.0", sans=("kdf.example.com",)))
    assert named.url == "https://kdf.example.com:18443"
    document = yaml.safe_load(Path(named.config_path).read_text())
    assert document["daemon"]["host"] == "0.0.0.0"
    # The daemon answers to the certificate's names, and to loopback for probes on the machine.
    assert load_settings(Path(named.config_path)).security.allowed_hosts == (
        "kdf.example.com",
        "127.0.0.1",
        "::1",
        "localhost",
    )


def test_init_refuses_bad_options_and_an_initialised_directory(tmp_path: Path) -> None:
    """Bad values are named; a second init of one directory is refused, the first kept."""
    for changes, field in (
        ({"port": 0}, "--port"),
        ({"allowed_ips": ("not-a-cidr",)}, "--allowed-ip"),
        ({"max_workers": -1}, "--max-workers"),
        ({"sans": ("bad name!",)}, "--san"),
    ):
        with pytest.raises(SecurityError, match=field):
            init_daemon(_options(tmp_path / field.strip("-"), **changes))
    first = init_daemon(_options(tmp_path))
    before = Path(first.config_path).read_bytes()
    with pytest.raises(SecurityConfigError, match="already initialised"):
        init_daemon(_options(tmp_path))
    assert Path(first.config_path).read_bytes() == before


def test_check_security_reports_what_stops_the_start(tmp_path: Path) -> None:
    """Missing JWT key, plain HTTP off loopback, a readable keys file: one error each."""
    settings = parse_settings(
        f"daemon: {{host: 0.0.0.0, state_dir: {tmp_path}}}\n"
        "security: {api_keys: [plain-key-0123456789], jwt: {ttl: 2h}}\n",
        source="daemon.yaml",
    )
    add_key(settings.security.keys_file, name="ops", role=Role.OPERATOR)
    settings.security.keys_file.chmod(0o644)
    report = check_security(settings)
    assert [error.split(":")[0] for error in report.errors] == [
        "daemon.host",
        "security.jwt.key_file",
        "security.jwt.ttl",
        "security.keys_file",
    ]
    assert len(report.warnings) == 1 and "plain-key" not in report.warnings[0]
    create_jwt_key_file(settings.security.jwt.key_file)
    settings.security.keys_file.chmod(0o600)
    assert len(check_security(settings).errors) == 2  # host and ttl remain


def test_keys_added_while_running_work_at_once(tmp_path: Path, clock: FakeClock) -> None:
    """An unknown key triggers a re-read of a changed keys file, without waiting for the pace."""
    path = tmp_path / "api_keys.json"
    store = KeyStore((), path, wall_clock=clock.wall, monotonic=clock.monotonic)
    new = add_key(path, name="late", role=Role.VIEWER)
    assert store.lookup(new.key).name == "late"
