"""Profiles carry the kdf_compat URL; ``profile show`` prints the SDK's RemoteConfig values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kdf_remote.client.cli.app import app
from kdf_remote.client.errors import ConfigError
from kdf_remote.client.profiles import (
    SdkRemoteConfig,
    load_profile,
    remote_config_from_url,
)

pytestmark = pytest.mark.unit

OUTPUTS = {
    "daemon_url": "https://203.0.113.5:8000",
    "api_key": "kdfr_supersecret",
    "server_ip": "203.0.113.5",
    "provider": "custom",
    "workers": [],
    "kdf_rpc_url": "https://kdf.example.com:7783",
}


def run(args: list[str]) -> int:
    result = app(args, result_action="return_value")
    assert isinstance(result, int)
    return result


@pytest.fixture
def imported(tmp_path: Path) -> str:
    """A profile imported from stack outputs that include ``kdf_rpc_url``."""
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(OUTPUTS))
    assert run(["profile", "import", "--file", str(path), "--name", "prod", "--json"]) == 0
    return "prod"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://kdf.example.com:7783", ("kdf.example.com", 7783, True)),
        ("https://[2001:db8::1]:7000", ("2001:db8::1", 7000, True)),
        ("https://203.0.113.9", ("203.0.113.9", 443, True)),
        ("http://127.0.0.1:7783", ("127.0.0.1", 7783, False)),
    ],
)
def test_remote_config_from_url(url: str, expected: tuple[str, int, bool]) -> None:
    """ip_address, port and https as the SDK's RemoteConfig names them."""
    ip_address, port, https = expected
    assert remote_config_from_url(url) == SdkRemoteConfig(
        ip_address=ip_address, port=port, https=https
    )


@pytest.mark.parametrize(
    "url", ["http://203.0.113.9:7783", "ftp://x:1", "https://h:7783/path", "https://h:99999"]
)
def test_bad_listener_urls_are_refused(url: str) -> None:
    """Plain http off loopback (the rpc_password would travel in clear), paths, bad ports."""
    with pytest.raises(ConfigError):
        remote_config_from_url(url)


def test_profile_keeps_kdf_rpc_url(imported: str) -> None:
    """``profile import`` stores the stack's kdf_rpc_url in the profile."""
    assert load_profile(imported).kdf_rpc_url == "https://kdf.example.com:7783"


def test_show_prints_remote_config_without_password(
    imported: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``profile show``: the RemoteConfig values, the password hidden unless asked for."""
    capsys.readouterr()
    assert run(["profile", "show", imported, "--json"]) == 0
    shown: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert shown["remote_config"] == {
        "ip_address": "kdf.example.com",
        "port": 7783,
        "https": True,
    }
    assert run(["profile", "show", imported]) == 0
    text = capsys.readouterr().out
    assert "ip_address: kdf.example.com" in text
    assert "port: 7783" in text
    assert "https: true" in text
    assert "rpc_password: (hidden: add --show-secret)" in text
    assert "supersecret" not in text
