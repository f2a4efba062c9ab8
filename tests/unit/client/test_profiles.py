"""Profiles: files (0600, XDG), the seed's client YAML, stack outputs, selection order."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kdf_remote.client.errors import ConfigError
from kdf_remote.client.profiles import (
    Profile,
    decode_stack_outputs,
    delete_profile,
    list_profiles,
    load_profile,
    parse_duration,
    profile_from_outputs,
    profiles_dir,
    read_profile_file,
    resolve_profile,
    save_profile,
    set_current_profile,
)

pytestmark = pytest.mark.unit

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_saved_in_xdg_dir_with_mode_0600(tmp_path: Path) -> None:
    """A profile and its CA land in $XDG_CONFIG_HOME/kdf-remote/profiles, readable by us only."""
    path = save_profile(
        Profile(name="prod", url="https://1.2.3.4:8000", api_key="kdfr_x"), ca_pem=CA
    )
    assert path == Path(os.environ["XDG_CONFIG_HOME"]) / "kdf-remote" / "profiles" / "prod.yaml"
    for file in (path, profiles_dir() / "prod.ca.pem"):
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert stat.S_IMODE(profiles_dir().stat().st_mode) == 0o700
    loaded = load_profile("prod")
    assert loaded.api_key == "kdfr_x"
    assert loaded.ca_pem() == CA


def test_seed_client_yaml_is_a_profile(tmp_path: Path) -> None:
    """The seed's `remote: {host, port, api_key, ssl, timeout, ca_cert}` file is accepted."""
    seed = tmp_path / "client.yaml"
    seed.write_text(
        "remote: {host: kdf.example.com, port: 8443, api_key: key1, ssl: true, timeout: 45s,"
        f" ca_cert: {tmp_path / 'ca.pem'}}}\n"
    )
    profile = read_profile_file(seed)
    assert profile.url == "https://kdf.example.com:8443"
    assert profile.timeout == 45.0
    assert profile.api_key == "key1"
    assert resolve_profile(str(seed)).url == profile.url


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("remote: {host: kdf.example.com, ssl: false}\n", "url"),
        ("remote: {host: h, port: 70000}\n", "remote.port"),
        ("remote: {host: h, colour: blue}\n", "remote.colour"),
        ("url: https://h:1\nbogus: 1\n", "bogus"),
        ("url: https://h:1\ntimeout: soon\n", "timeout"),
    ],
)
def test_bad_files_name_the_field(tmp_path: Path, text: str, field: str) -> None:
    """Errors name the offending key (plain http to a remote host is refused)."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_profile_file(path)
    assert field in str(info.value)


def test_plain_http_to_loopback_allowed(tmp_path: Path) -> None:
    """http is fine to 127.0.0.1, ::1 and localhost."""
    for host in ("127.0.0.1", "::1", "localhost"):
        path = tmp_path / "p.yaml"
        path.write_text(f"remote: {{host: '{host}', port: 8000, ssl: false}}\n")
        assert (read_profile_file(path).url or "").startswith("http://")


def test_durations() -> None:
    """Durations take ms|s|m|h suffixes or plain numbers."""
    assert parse_duration("250ms", field="t") == 0.25
    assert parse_duration("2m", field="t") == 120.0
    assert parse_duration(5, field="t") == 5.0
    with pytest.raises(ConfigError):
        parse_duration("-1s", field="t")


def test_selection_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Explicit name beats KDF_REMOTE_PROFILE, which beats `profile use`; one profile is implied."""
    save_profile(Profile(name="a", url="https://a.example:1"))
    assert resolve_profile().name == "a"
    save_profile(Profile(name="b", url="https://b.example:1"))
    with pytest.raises(ConfigError, match="several profiles"):
        resolve_profile()
    set_current_profile("a")
    assert resolve_profile().name == "a"
    monkeypatch.setenv("KDF_REMOTE_PROFILE", "b")
    assert resolve_profile().name == "b"
    assert resolve_profile("a").name == "a"
    delete_profile("b")
    assert list_profiles() == ["a"]


def test_unknown_profile_lists_known_ones() -> None:
    """Asking for a missing profile says which ones exist."""
    save_profile(Profile(name="prod", url="https://p.example:1"))
    with pytest.raises(ConfigError, match="prod"):
        load_profile("staging")


def test_bad_names_refused() -> None:
    """Profile names cannot escape the profile directory."""
    with pytest.raises(ConfigError):
        save_profile(Profile(name="../evil", url="https://p.example:1"))


def test_stack_outputs_to_profile() -> None:
    """The stack-output contract becomes a profile plus the CA to pin."""
    outputs = decode_stack_outputs(
        b'{"daemon_url": "https://203.0.113.5:8000", "ca_cert_pem": "PEM", "api_key": "kdfr_s",'
        b' "server_ip": "203.0.113.5", "region": "eu", "provider": "aws", "instance_id": "i-1",'
        b' "workers": [{"name": "w1", "region": "us", "daemon_url": "https://198.51.100.1:8000",'
        b' "server_ip": "198.51.100.1"}], "kdf_rpc_url": null}',
        source="test",
    )
    profile, ca = profile_from_outputs("prod", outputs, stack="org/prod")
    assert (profile.url, profile.api_key, profile.provider, profile.stack) == (
        "https://203.0.113.5:8000",
        "kdfr_s",
        "aws",
        "org/prod",
    )
    assert profile.workers[0].name == "w1"
    assert ca == "PEM"


def test_stack_outputs_missing_url() -> None:
    """Outputs without daemon_url are rejected with the field named."""
    with pytest.raises(ConfigError, match="daemon_url"):
        decode_stack_outputs(b'{"api_key": "x"}', source="test")
