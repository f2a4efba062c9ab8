"""The bootstrap over real SSH: sshd on 127.0.0.1 with a throwaway key, the rendered commands run
into a temporary root (no packages, no users, no systemd: the documented fallback).

What is covered here: sshd up, the install script and the secret deliveries run exactly as
``pulumi up`` sends them (command line + stdin), files land with the right modes, the KDF zip is
verified by sha256, and unmet requirements stop the script with a clear message and exit 2.

Not covered yet (needs the finished daemon and client): building the virtualenv with
``kdf-remote[daemon]``, starting the daemon with supervise.sh, the health wait, and
``kdf-remote profile import --file`` + ``kdf-remote status`` over TLS.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from kdf_remote.infra.bootstrap_script import (
    EXIT_REQUIREMENTS,
    BootstrapInput,
    BootstrapSteps,
    render_install_script,
)
from kdf_remote.infra.layout import Layout
from kdf_remote.infra.remote_commands import install_command, write_file_command
from kdf_remote.infra.settings import KdfRelease, Settings, parse_settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
DEADLINE_S = 30.0


@dataclass(frozen=True)
class SshServer:
    """A running sshd and how to reach it."""

    port: int
    key: Path
    known_hosts: Path

    def run(self, command: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """Run ``command`` on the server as root, with ``stdin``, the way pulumi-command does."""
        return subprocess.run(
            [
                "ssh",
                "-i",
                str(self.key),
                "-p",
                str(self.port),
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                f"UserKnownHostsFile={self.known_hosts}",
                "-o",
                "LogLevel=ERROR",
                "root@127.0.0.1",
                command,
            ],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """sshd on 127.0.0.1:<free port>, root login by a throwaway Ed25519 key only."""
    if os.geteuid() != 0:
        pytest.skip("the SSH bootstrap test runs sshd and logs in as root")
    if not Path(SSHD).exists() or shutil.which("ssh") is None:
        pytest.skip("openssh-server and openssh-client are needed: apt-get install openssh-server")
    base = tmp_path_factory.mktemp("sshd")
    for name in ("host", "client"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / name)], check=True
        )
    (base / "authorized_keys").write_text((base / "client.pub").read_text())
    port = _free_port()
    config = base / "sshd_config"
    config.write_text(
        f"""Port {port}
ListenAddress 127.0.0.1
HostKey {base / "host"}
AuthorizedKeysFile {base / "authorized_keys"}
PidFile {base / "sshd.pid"}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
"""
    )
    # sshd's privilege separation needs this directory; it is what openssh-server's unit creates.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    process = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE, text=True
    )
    server = SshServer(port=port, key=base / "client", known_hosts=base / "known_hosts")
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"sshd exited: {process.stderr.read() if process.stderr else ''}")
            if server.run("true").returncode == 0:
                break
            if time.monotonic() > deadline:
                pytest.fail("sshd did not accept the test key in time")
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()


def _settings(**extra: object) -> Settings:
    raw = {
        "provider": "custom",
        "custom_host": '{"host": "127.0.0.1", "user": "root"}',
        "allowed_ips": '["127.0.0.1/32"]',
        "kdf_version": "2.1.0-beta",
        "kdf_url": "https://example.org/unused.zip",
        "kdf_sha256": "0" * 64,
        "requirements": '{"min_memory_mb": 256, "min_disk_mb": 512}',
    }
    raw.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in extra.items()})
    return parse_settings(raw)


def _kdf_zip(directory: Path) -> KdfRelease:
    """A release zip shaped like an old KDF build: the binary named mm2 at the root."""
    path = directory / "kdf_test-linux-x86-64.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mm2", '#!/bin/sh\necho "Komodo DeFi Framework: 2.1.0-beta_test"\n')
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return KdfRelease(version="2.1.0-beta", url=f"file://{path}", sha256=digest)


def _render(
    root: Path, release: KdfRelease, settings: Settings | None = None
) -> tuple[str, Layout]:
    layout = Layout().under(str(root))
    script = render_install_script(
        BootstrapInput(
            settings=settings or _settings(),
            layout=layout,
            steps=BootstrapSteps(packages=False, users=False, venv=False),
            service_manager="none",
            release=release,
        )
    )
    return script, layout


def _mode(path: PurePosixPath) -> int:
    return stat.S_IMODE(Path(str(path)).stat().st_mode)


def test_install_script_lays_out_the_server_over_ssh(sshd: SshServer, tmp_path: Path) -> None:
    """The install script, sent as pulumi-command sends it, installs into the root with modes."""
    release = _kdf_zip(tmp_path)
    script, layout = _render(tmp_path / "root", release)
    result = sshd.run(install_command("root"), stdin=script)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "requirements met" in result.stdout
    assert Path(str(layout.marker)).read_text() == "ok 2.1.0-beta\n"

    binary = Path(str(layout.kdf_binary))
    assert subprocess.run([binary], capture_output=True, text=True, check=True).stdout.startswith(
        "Komodo DeFi Framework"
    )
    assert _mode(layout.kdf_binary) == 0o755
    expected_modes = {
        layout.secrets_dir: 0o700,
        layout.state_dir: 0o700,
        layout.tls_dir: 0o750,
        layout.log_dir: 0o750,
        layout.daemon_config: 0o600,
        layout.supervise_script: 0o755,
        layout.unit_dir / "kdf-remote-daemon.service": 0o644,
        layout.unit_dir / "kdf-remote-kdf@.service": 0o644,
        layout.polkit_rule: 0o644,
    }
    for path, mode in expected_modes.items():
        assert _mode(path) == mode, f"{path}: {oct(_mode(path))}, expected {oct(mode)}"
    config = Path(str(layout.daemon_config)).read_text()
    assert str(layout.kdf_binary) in config and "api_keys: []" in config

    # Idempotent: a second run (what every `pulumi up` does) keeps the binary and the config.
    before = binary.stat().st_mtime_ns
    again = sshd.run(install_command("root"), stdin=script)
    assert again.returncode == 0, again.stderr
    assert "already installed" in again.stdout
    assert binary.stat().st_mtime_ns == before


def test_secret_delivery_writes_private_files(sshd: SshServer, tmp_path: Path) -> None:
    """A secret travels only on stdin and lands 0600, atomically, decoded when base64."""
    layout = Layout().under(str(tmp_path / "root"))
    secret = os.urandom(64)
    import base64

    command = write_file_command(
        layout.jwt_key, mode="0600", owner="root:root", ssh_user="root", base64=True
    )
    assert base64.b64encode(secret).decode() not in command
    result = sshd.run(command, stdin=base64.b64encode(secret).decode())
    assert result.returncode == 0, result.stderr
    assert Path(str(layout.jwt_key)).read_bytes() == secret
    assert _mode(layout.jwt_key) == 0o600
    assert _mode(layout.jwt_key.parent) == 0o700  # created under umask 077
    leftovers = [p.name for p in Path(str(layout.secrets_dir)).iterdir() if p.name != "jwt.key"]
    assert leftovers == []


def test_checksum_mismatch_stops_the_install(sshd: SshServer, tmp_path: Path) -> None:
    """A zip whose sha256 differs from the pin is refused and nothing is installed."""
    good = _kdf_zip(tmp_path)
    bad = KdfRelease(version=good.version, url=good.url, sha256="f" * 64)
    script, layout = _render(tmp_path / "root", bad)
    result = sshd.run(install_command("root"), stdin=script)
    assert result.returncode == 1
    assert "KDF zip checksum mismatch: expected " + "f" * 64 in result.stderr
    assert not Path(str(layout.kdf_binary)).exists()
    assert Path(str(layout.marker)).read_text().startswith("failed: KDF zip checksum mismatch")


def test_unmet_requirements_fail_clearly(sshd: SshServer, tmp_path: Path) -> None:
    """Too little memory and disk, and a foreign OS: one line each, exit 2, nothing installed."""
    release = _kdf_zip(tmp_path)
    settings = _settings(requirements='{"min_memory_mb": 4194304, "min_disk_mb": 16777216}')
    os_release = tmp_path / "os-release"
    os_release.write_text("ID=alpine\nVERSION_ID=3.20\n")
    layout = Layout().under(str(tmp_path / "root"))
    script = render_install_script(
        BootstrapInput(
            settings=settings,
            layout=layout,
            steps=BootstrapSteps(packages=False, users=False, venv=False),
            service_manager="none",
            release=release,
            os_release=PurePosixPath(str(os_release)),
        )
    )
    result = sshd.run(install_command("root"), stdin=script)
    assert result.returncode == EXIT_REQUIREMENTS, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if "requirement not met" in line]
    assert any("os: found 'alpine'" in line for line in lines), lines
    assert any("memory: found" in line and "need 4194304 MiB" in line for line in lines), lines
    assert any("disk: found" in line and "need 16777216 MiB" in line for line in lines), lines
    assert not Path(str(layout.kdf_binary)).exists()
    assert not Path(str(layout.daemon_config)).exists()
