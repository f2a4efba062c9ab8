"""Daemon settings: the YAML of design.md, defaults, units, and messages naming key/value/line."""

from __future__ import annotations

import hashlib
import ipaddress
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kdf_remote.daemon.principal import Role
from kdf_remote.daemon.settings import SettingsError, load_settings, parse_settings
from kdf_remote.daemon.units import PortRange

pytestmark = pytest.mark.unit

DESIGN_EXAMPLE = """\
daemon:   {port: 8000, host: "0.0.0.0", log_level: info, health_check_interval: 30s,
           state_dir: /var/lib/kdf-remote}
worker_support:
  enabled: true
  max_workers: 10
  worker_ports: "9000-9010"
  worker_metrics_enabled: true
  resource_limits: {memory_per_worker: "512M", cpu_per_worker: 1, max_total_memory: "8G"}
kdf:      {binary_path: /usr/local/bin/kdf, data_dir: /var/lib/kdf, auto_restart: true,
           max_restart_attempts: 3, rpc_port: 7783}
security:
  api_keys: ["key1", "key2"]
  allowed_ips: ["1.2.3.4/32"]
  ssl: {cert_path: /etc/ssl/kdf.crt, key_path: /etc/ssl/kdf.key}
"""


def _problems(text: str) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        parse_settings(text, source="daemon.yaml", base_dir=Path("/etc/kdf-remote"))
    return [str(issue) for issue in caught.value.issues]


def test_design_example_parses_with_units() -> None:
    """The exact YAML of design.md loads, with durations, sizes and port ranges parsed."""
    settings = parse_settings(DESIGN_EXAMPLE)
    assert settings.daemon.port == 8000
    assert settings.daemon.health_check_interval == 30.0
    assert settings.worker_support.worker_ports == PortRange(9000, 9010)
    assert settings.worker_support.resource_limits.memory_per_worker == 512 * 1024**2
    assert settings.worker_support.resource_limits.max_total_memory == 8 * 1024**3
    assert settings.kdf.rpc_port == 7783
    assert settings.security.allowed_ips == (ipaddress.ip_network("1.2.3.4/32"),)
    assert settings.security.ssl is not None
    assert settings.security.ssl.cert_path == Path("/etc/ssl/kdf.crt")
    assert [k.name for k in settings.security.api_keys] == ["key1", "key2"]
    assert all(k.role is Role.ADMIN for k in settings.security.api_keys)
    assert settings.security.api_keys[0].digest == hashlib.sha256(b"key1").digest()


def test_empty_file_gives_defaults_rooted_at_state_dir() -> None:
    """An empty file is every default; security paths default under daemon.state_dir."""
    settings = parse_settings("daemon: {state_dir: /srv/kr}\n")
    assert settings.kdf.start_timeout == 30.0
    assert settings.kdf.stop_timeout == 10.0
    assert settings.kdf.log_max_size == 10 * 1024**2
    assert settings.security.keys_file == Path("/srv/kr/api_keys.json")
    assert settings.security.jwt.key_file == Path("/srv/kr/jwt.key")
    assert settings.security.audit_log == Path("/srv/kr/audit.log")
    assert settings.security.max_body_size == 1024**2
    assert settings.security.max_streams == 32
    assert settings.security.max_stream_duration == 3600.0
    assert settings.security.rate_limit.lockout == 900.0
    assert settings.daemon.stop_instances_on_exit is False
    assert settings.kdf_compat.enabled is False


def test_security_entries_roles_hashes_and_expiry() -> None:
    """Key entries carry roles, sha256 hashes or plain keys, and UTC expiries."""
    digest = hashlib.sha256(b"ci-key").hexdigest()
    settings = parse_settings(
        "security:\n"
        "  api_keys:\n"
        "    - plain\n"
        f"    - {{name: ci, role: viewer, key_hash: 'sha256:{digest}', "
        "expires: '2027-01-01T00:00:00Z'}\n"
        "    - {name: ops, role: operator, key: ops-key}\n"
    )
    plain, ci, ops = settings.security.api_keys
    assert plain.role is Role.ADMIN
    assert ci.role is Role.VIEWER
    assert ci.digest == hashlib.sha256(b"ci-key").digest()
    assert ci.expires == datetime(2027, 1, 1, tzinfo=UTC)
    assert ops.role is Role.OPERATOR
    assert ops.digest == hashlib.sha256(b"ops-key").digest()


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    """A relative path is relative to the configuration file's directory."""
    path = tmp_path / "daemon.yaml"
    path.write_text("daemon: {state_dir: state}\nkdf: {binary_path: bin/kdf}\n")
    settings = load_settings(path)
    assert settings.daemon.state_dir == tmp_path / "state"
    assert settings.kdf.binary_path == tmp_path / "bin" / "kdf"


def test_bad_values_name_key_value_expectation_and_line() -> None:
    """Each bad value is reported with file:line, the dotted key, the value and the expectation."""
    problems = _problems(
        "daemon:\n"
        "  port: 8000\n"
        "  health_check_interval: 30x\n"
        "kdf:\n"
        "  rpc_port: 80\n"
        "security:\n"
        "  max_body_size: 1X\n"
        "  allowed_ips: ['10.0.0.0/8', nope]\n"
        "  allowed_hosts: [kdf.example.com, 'kdf.example.com:443']\n"
    )
    assert problems == [
        "daemon.yaml:3: daemon.health_check_interval: got '30x', expected a duration such as "
        "500ms, 30s, 10m or 1h",
        "daemon.yaml:5: kdf.rpc_port: got '80', expected a TCP port between 1024 and 65535 "
        "(KDF refuses lower)",
        "daemon.yaml:7: security.max_body_size: got '1X', expected a size such as 512K, 10M or "
        "1G (bytes when no suffix)",
        "daemon.yaml:8: security.allowed_ips[1]: got 'nope', expected a CIDR such as "
        "203.0.113.0/24 or 2001:db8::/32",
        "daemon.yaml:9: security.allowed_hosts[1]: got 'kdf.example.com:443', expected a host "
        "name such as kdf.example.com, *.example.com or an IP address",
    ]


def test_unknown_keys_are_errors_with_a_suggestion() -> None:
    """An unknown key fails with its line and the closest known key."""
    problems = _problems("daemon:\n  prot: 9000\nextra: 1\n")
    assert problems[0].startswith("daemon.yaml:2: daemon.prot: unknown key, expected one of: ")
    assert problems[0].endswith("did you mean 'port'?")
    assert problems[1].startswith("daemon.yaml:3: extra: unknown key")


def test_port_range_and_worker_budget() -> None:
    """worker_ports is A-B in order, and must hold max_workers ports."""
    assert _problems("worker_support: {worker_ports: '9010-9000'}\n") == [
        "daemon.yaml:1: worker_support.worker_ports: got '9010-9000', expected a port range "
        "such as 9000-9010, with 1024 <= first <= last <= 65535"
    ]
    assert _problems("worker_support: {worker_ports: '9000-9004', max_workers: 10}\n") == [
        "daemon.yaml:1: worker_support.max_workers: got 10, expected at most 5: "
        "worker_ports 9000-9004 holds only 5 ports"
    ]


def test_colliding_ports_are_refused() -> None:
    """kdf.rpc_port may not be the daemon's port nor inside worker_ports."""
    problems = _problems("daemon: {port: 9005}\nkdf: {rpc_port: 9005}\n")
    assert any(
        "kdf.rpc_port: got 9005, expected a port other than daemon.port" in p for p in problems
    )
    assert any(
        "expected a port outside worker_support.worker_ports (9000-9010)" in p for p in problems
    )


def test_api_key_problems_never_show_the_key() -> None:
    """Duplicate or malformed key entries are reported without echoing the key."""
    problems = _problems(
        "security:\n"
        "  api_keys:\n"
        "    - s3cret-value\n"
        "    - s3cret-value\n"
        "    - {name: ci, key_hash: 'sha256:abc'}\n"
        "    - {name: both, key: k, key_hash: 'sha256:" + "0" * 64 + "'}\n"
        "    - {role: admin, key: x}\n"
    )
    assert problems == [
        "daemon.yaml:4: security.api_keys[1]: repeats the key of the entry on line 3; every "
        "key needs its own",
        "daemon.yaml:5: security.api_keys[2].key_hash: got 'sha256:abc', expected 'sha256:' "
        "followed by 64 hex digits",
        "daemon.yaml:6: security.api_keys[3]: expected exactly one of key_hash "
        "('sha256:<64 hex>') or key",
        "daemon.yaml:7: security.api_keys[4].name: missing, expected a name for this key",
    ]
    assert not any("s3cret" in p for p in problems)


def test_ssl_needs_both_paths_and_compat_needs_a_port() -> None:
    """security.ssl needs cert and key; an enabled kdf_compat needs its port."""
    problems = _problems("security: {ssl: {cert_path: /x.crt}}\nkdf_compat: {enabled: true}\n")
    assert problems == [
        "daemon.yaml:1: security.ssl.key_path: missing, expected a file path",
        "daemon.yaml:2: kdf_compat.port: missing, expected the TCP port of the KDF-compatible "
        "listener",
    ]


def test_duplicate_keys_and_bad_yaml() -> None:
    """A key given twice, and text that is not YAML, are reported with lines."""
    assert _problems("daemon:\n  port: 1\n  port: 2\n") == [
        "daemon.yaml:3: daemon.port: duplicate key (first set on line 2)"
    ]
    (problem,) = _problems("daemon: [unclosed\n")
    assert problem.startswith("daemon.yaml:2: <file>: not valid YAML: ")


def test_wrong_types_are_named() -> None:
    """A mapping where a scalar belongs, or a string where a bool belongs, is reported."""
    assert _problems("daemon: {json_logs: yes-please, port: {a: 1}}\n") == [
        "daemon.yaml:1: daemon.json_logs: got 'yes-please', expected true or false",
        "daemon.yaml:1: daemon.port: got a mapping, expected a TCP port (1-65535)",
    ]
    assert _problems("kdf: 3\n") == ["daemon.yaml:1: kdf: got '3', expected a mapping"]


def test_unreadable_file(tmp_path: Path) -> None:
    """A missing file is one problem naming the file."""
    with pytest.raises(SettingsError, match=r"cannot read"):
        load_settings(tmp_path / "missing.yaml")
