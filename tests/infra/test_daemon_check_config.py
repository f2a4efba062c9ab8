"""The daemon accepts what the bootstrap delivers: ``kdf-remote-daemon check-config``, the same
check the restart step runs on the server, on the rendered daemon.yaml (hashed key entry), the
raw-bytes JWT key and the TLS pair, laid out as the bootstrap lays them out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _infra_settings import make_settings as make
from kdf_remote.infra.daemon_config import DaemonConfigInput, render_daemon_config
from kdf_remote.infra.layout import Layout
from kdf_remote.infra.secret_values import JWT_KEY_BYTES, api_key_from_random, api_key_hash
from kdf_remote.infra.settings import Settings

pytestmark = pytest.mark.integration

VARIANTS: dict[str, dict[str, object]] = {
    "aws-default": {},
    "do-compat-p2p": {
        "provider": "do",
        "region": "fra1",
        "kdf_compat": {"enabled": True, "port": 7000},
        "p2p": {"enabled": True},
    },
}


def _daemon_cli() -> Path:
    tool = Path(sys.executable).with_name("kdf-remote-daemon")
    assert tool.exists(), f"{tool} is missing: the [daemon] extra is not installed"
    return tool


def _delivered_tree(tmp_path: Path, settings: Settings) -> tuple[Layout, Path]:
    """The files the bootstrap delivers, as it delivers them: config, raw JWT key, TLS pair."""
    from kdf_remote.daemon.security.certs import init_tls

    layout = Layout().under(str(tmp_path / "root"))
    config = Path(str(layout.daemon_config))
    config.parent.mkdir(parents=True)
    key_hash = api_key_hash(api_key_from_random("A1b2" * 10 + "C3d"))
    config.write_text(
        render_daemon_config(
            DaemonConfigInput(settings=settings, layout=layout, api_key_hash=key_hash)
        )
    )
    config.chmod(0o600)
    jwt = Path(str(layout.jwt_key))
    jwt.parent.mkdir(parents=True, mode=0o700)
    jwt.write_bytes(os.urandom(JWT_KEY_BYTES))  # base64 -d of pulumi-random's bytes
    jwt.chmod(0o600)
    tls = init_tls(tmp_path / "tls", ["127.0.0.1"])
    Path(str(layout.tls_dir)).mkdir(parents=True, exist_ok=True)
    shutil.copy(tls.server_cert, str(layout.tls_cert))
    shutil.copy(tls.server_key, str(layout.tls_key))
    Path(str(layout.tls_key)).chmod(0o600)
    return layout, config


@pytest.mark.parametrize("variant", ["aws-default", "do-compat-p2p"])
def test_daemon_check_config_accepts_the_delivered_files(variant: str, tmp_path: Path) -> None:
    """`kdf-remote-daemon check-config` (what the restart step runs) accepts the rendered
    daemon.yaml with its hashed key entry, the raw-bytes JWT key and the TLS pair."""
    settings = make(**VARIANTS[variant])
    _, config = _delivered_tree(tmp_path, settings)
    result = subprocess.run(
        [str(_daemon_cli()), "check-config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{config}: OK" in result.stdout
    assert "error" not in result.stderr


def test_daemon_check_config_refuses_a_readable_jwt_key(tmp_path: Path) -> None:
    """The check is not vacuous: a group-readable JWT key file fails it, naming the key."""
    layout, config = _delivered_tree(tmp_path, make())
    Path(str(layout.jwt_key)).chmod(0o640)
    result = subprocess.run(
        [str(_daemon_cli()), "check-config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "security.jwt.key_file" in result.stderr
