"""Units of issue 7's daemon side: new settings keys, the RPC metric label, the worker registry."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from kdf_remote.daemon.services import rpc_method_label
from kdf_remote.daemon.settings import SettingsError, parse_settings
from kdf_remote.daemon.workers import WorkerRecord, WorkerRegistry, enforcement_of
from kdf_remote.supervisor.resource_limits import Mechanism

pytestmark = pytest.mark.unit

KEYS = "security: {api_keys: [k]}\n"


def test_release_and_backup_settings_are_parsed_and_normalised(tmp_path: Path) -> None:
    """Origins are normalised (default port dropped, host lower-cased); bin_dir is resolved."""
    settings = parse_settings(
        "kdf: {bin_dir: bin, release_origins: ['https://GitHub.com:443', 'http://127.0.0.1:8080'],"
        " update_order: first}\n"
        "backup: {retention: 2, encrypt: true}\n" + KEYS,
        base_dir=tmp_path,
    )
    assert settings.kdf.bin_dir == tmp_path / "bin"
    assert settings.kdf.release_origins == ("https://github.com", "http://127.0.0.1:8080")
    assert settings.kdf.update_order == "first"
    assert (settings.backup.retention, settings.backup.encrypt) == (2, True)


def test_bad_release_and_backup_settings_name_key_value_and_line() -> None:
    """A bad origin, order or retention fails with the key, the value and the line."""
    with pytest.raises(SettingsError) as caught:
        parse_settings(
            "kdf:\n"
            "  release_origins: ['https://ok.example', 'ftp://mirror.example']\n"
            "  update_order: sideways\n"
            "backup: {retention: 0, colour: blue}\n" + KEYS
        )
    text = str(caught.value)
    origin = "<config>:2: kdf.release_origins[1]: got 'ftp://mirror.example', expected an http(s)"
    assert origin in text
    assert "<config>:3: kdf.update_order: got 'sideways', expected one of first, last" in text
    assert "<config>:4: backup.retention: got '0', expected a positive integer" in text
    assert "<config>:4: backup.colour: unknown key" in text


@pytest.mark.parametrize(
    ("body", "label"),
    [
        (b'{"method": "version", "userpass": "x"}', "version"),
        (b'  [{"method": "version"}]', "batch"),
        (b'{"mmrpc": "2.0", "method": "get_enabled_coins", "params": {}}', "get_enabled_coins"),
        (b'{"method": 5}', "invalid"),
        (b"not json", "invalid"),
        (b"", "invalid"),
    ],
)
def test_rpc_method_label(body: bytes, label: str) -> None:
    """The RPC histogram's method label: the method, ``batch`` or ``invalid``."""
    assert rpc_method_label(body) == label


def test_worker_registry_round_trip_is_private(tmp_path: Path) -> None:
    """The registry survives a reload and is written 0600; a missing file is no workers."""
    registry = WorkerRegistry(tmp_path / "state" / "workers.json")
    assert registry.load() == []
    records = [
        WorkerRecord(name="w1", rpc_port=9001, memory_bytes=64 << 20, cpu=0.5, created_at=1.0)
    ]
    registry.save(records)
    assert registry.load() == records
    assert stat.S_IMODE(registry.path.stat().st_mode) == 0o600
    registry.path.write_text("{nope")
    with pytest.raises(ValueError, match="not a worker registry"):
        registry.load()


def test_every_mechanism_says_what_it_enforces() -> None:
    """Capacity names the mechanism in force and what it guarantees, for every mechanism."""
    for mechanism in Mechanism:
        assert enforcement_of(mechanism).startswith(f"{mechanism.value} in force: ")
    assert "RSS watchdog" in enforcement_of(Mechanism.RLIMIT)
    assert "CPU is not enforced" in enforcement_of(Mechanism.RLIMIT)
