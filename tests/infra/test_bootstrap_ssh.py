"""The bootstrap over real SSH: sshd on 127.0.0.1 with a throwaway key, the rendered commands run
exactly as pulumi-command sends them (command line + stdin), into a temporary root.

The end-to-end test runs the Pulumi program itself (a ``custom`` stack pointing at the local
sshd) under :class:`live_mocks.LiveMocks`, which stand in for pulumi-random and pulumi-tls with
real keys and certificates, then executes every ``remote.Command`` the program registered, in
dependency order, over SSH: the install script, the secret deliveries, the restart (which runs
``kdf-remote-daemon check-config`` first) and the ``/v1/health`` wait over TLS. It ends with
``kdf-remote profile import --file`` on the program's outputs and ``kdf-remote status``, ``start``,
``rpc version`` and ``stop`` over TLS, as a user would.

What differs from a real server, and why:

* the install goes into a temporary root (``Layout().under(...)``), skips OS packages and user
  creation, and the daemon account is ``root`` (the test must not add users to the host);
* no systemd: ``service_manager="none"`` always uses the documented fallback, ``supervise.sh``,
  launched in the background by the restart command (``/var/lib/kdf-remote/supervise.pid``);
* the virtualenv is installed offline: this checkout is built once per session as a wheel
  (``pip wheel --no-deps``, without build isolation when hatchling is installed); pip installs
  ``kdf-remote[daemon]==<version>`` from it with ``--no-index --find-links``, and finds the
  dependencies already satisfied through a ``.pth`` naming a copy (symlinks) of this
  environment's site-packages without kdf-remote itself
  (:class:`~kdf_remote.infra.bootstrap_script.PipSource`); the virtualenv is created by the
  interpreter this environment is based on, so compiled dependencies match;
* KDF is ``kdf-sim`` inside a fake release zip (``tests/_release_fixtures.py``) served from a
  ``file://`` URL, checked against its sha256 like a real release.

Every process the test causes to start (sshd, supervise.sh, the daemon, KDF) is stopped by pid.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import sysconfig
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

import psutil
import pytest
from infra_mocks import Registered, deploy  # type: ignore[import-not-found]
from live_mocks import LiveMocks  # type: ignore[import-not-found]

from _release_fixtures import release_zip, sha256  # type: ignore[import-not-found,unused-ignore]
from kdf_remote.infra.bootstrap_script import (
    EXIT_REQUIREMENTS,
    EXTRA_SITE_PTH,
    BootstrapInput,
    BootstrapSteps,
    InstallTarget,
    PipSource,
    render_install_script,
)
from kdf_remote.infra.layout import DAEMON_UNIT, Layout
from kdf_remote.infra.remote_commands import install_command, write_file_command
from kdf_remote.infra.settings import KdfRelease, Settings, parse_settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
CHECKOUT = Path(__file__).resolve().parents[2]
DEADLINE_S = 30.0
COMMAND_TIMEOUT_S = 300
KDF_VERSION = "2.4.0-beta"


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
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free ports on 127.0.0.1 (all bound at once, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _stop(process: psutil.Process) -> None:
    """Terminate one process we started (if it is still that process), then kill it."""
    try:
        if not process.is_running():
            return
        process.terminate()
        process.wait(timeout=15)
    except psutil.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)
    except psutil.NoSuchProcess:
        return


@dataclass
class Started:
    """Processes this test caused to start, each pinned by pid and start time (psutil)."""

    processes: list[psutil.Process] = field(default_factory=list)

    def add(self, pid: int) -> psutil.Process:
        """Remember ``pid`` (and its start time, so a recycled pid is never signalled)."""
        process = psutil.Process(pid)
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        """Stop everything, parents first; children are collected before their parent goes."""
        pending = list(self.processes)
        while pending:
            process = pending.pop(0)
            try:
                children = process.children(recursive=True) if process.is_running() else []
            except psutil.NoSuchProcess:
                children = []
            _stop(process)
            pending += [c for c in children if all(c.pid != p.pid for p in pending)]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """sshd on 127.0.0.1:<free port>, root login by a throwaway Ed25519 key only."""
    if not Path(SSHD).exists() or shutil.which("ssh") is None:
        pytest.skip("openssh-server and openssh-client are needed: apt-get install openssh-server")
    if os.geteuid() != 0:
        pytest.fail(
            "the SSH bootstrap test runs sshd and logs in as root: run it as root (CI does)"
        )
    base = tmp_path_factory.mktemp("sshd")
    for name in ("host", "client"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / name)], check=True
        )
    (base / "authorized_keys").write_text((base / "client.pub").read_text())
    port = _free_ports(1)[0]
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


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout built once as a wheel.

    Offline when this environment has the build backend (hatchling); otherwise pip fetches it
    into an isolated build environment, as ``install.sh`` did for the editable install.
    """
    out = tmp_path_factory.mktemp("wheelhouse")
    isolation = [] if importlib.util.find_spec("hatchling") is None else ["--no-build-isolation"]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            *isolation,
            "--disable-pip-version-check",
            "-w",
            str(out),
            str(CHECKOUT),
        ],
        check=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    assert list(out.glob("kdf_remote-*.whl")), sorted(p.name for p in out.iterdir())
    return out


def _belongs_to_kdf_remote(name: str) -> bool:
    return name.startswith(("kdf_remote", "_kdf_remote", "__editable__")) or name.endswith(".pth")


@pytest.fixture(scope="session")
def dependency_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This environment's site-packages without kdf-remote (symlinks): the deps, installed."""
    purelib = Path(sysconfig.get_path("purelib"))
    assert purelib == Path(sysconfig.get_path("platlib")), "split site-packages not handled"
    out = tmp_path_factory.mktemp("dependency-site")
    for entry in purelib.iterdir():
        if not _belongs_to_kdf_remote(entry.name):
            (out / entry.name).symlink_to(entry)
    return out


def _base_python() -> str:
    """The interpreter this environment was created from (same ABI as its compiled deps)."""
    major, minor = sys.version_info[:2]
    path = Path(sys.base_prefix) / "bin" / f"python{major}.{minor}"
    assert path.exists(), f"{path} is missing: cannot create a virtualenv matching this one"
    return str(path)


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
    return KdfRelease(version="2.1.0-beta", url=f"file://{path}", sha256=sha256(path.read_bytes()))


def _tree_target(root: Path, release: KdfRelease, **extra: Any) -> InstallTarget:
    return InstallTarget(
        layout=Layout().under(str(root)),
        steps=BootstrapSteps(packages=False, users=False, venv=False),
        service_manager="none",
        release=release,
        **extra,
    )


def _mode(path: PurePosixPath) -> int:
    return stat.S_IMODE(Path(str(path)).stat().st_mode)


def test_install_script_lays_out_the_server_over_ssh(sshd: SshServer, tmp_path: Path) -> None:
    """The install script, sent as pulumi-command sends it, installs into the root with modes."""
    target = _tree_target(tmp_path / "root", _kdf_zip(tmp_path))
    layout = target.layout
    script = render_install_script(BootstrapInput(settings=_settings(), target=target))
    result = sshd.run(install_command("root"), stdin=script)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "requirements met" in result.stdout
    assert Path(str(layout.marker)).read_text() == "ok 2.1.0-beta\n"

    binary = Path(str(layout.kdf_binary))
    assert subprocess.run([binary], capture_output=True, text=True, check=True).stdout.startswith(
        "Komodo DeFi Framework"
    )
    expected_modes = {
        layout.kdf_binary: 0o755,
        layout.secrets_dir: 0o700,
        layout.state_dir: 0o700,
        layout.kdf_data_dir: 0o700,
        layout.tls_dir: 0o750,
        layout.log_dir: 0o750,
        layout.daemon_config: 0o600,
        layout.supervise_script: 0o755,
        layout.unit_dir / DAEMON_UNIT: 0o644,
    }
    for path, mode in expected_modes.items():
        assert _mode(path) == mode, f"{path}: {oct(_mode(path))}, expected {oct(mode)}"
    assert sorted(p.name for p in Path(str(layout.unit_dir)).iterdir()) == [DAEMON_UNIT]
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
    target = _tree_target(tmp_path / "root", bad)
    script = render_install_script(BootstrapInput(settings=_settings(), target=target))
    result = sshd.run(install_command("root"), stdin=script)
    assert result.returncode == 1
    assert "KDF zip checksum mismatch: expected " + "f" * 64 in result.stderr
    assert not Path(str(target.layout.kdf_binary)).exists()
    marker = Path(str(target.layout.marker)).read_text()
    assert marker.startswith("failed: KDF zip checksum mismatch")


def test_unmet_requirements_fail_clearly(sshd: SshServer, tmp_path: Path) -> None:
    """Too little memory and disk, and a foreign OS: one line each, exit 2, nothing installed."""
    settings = _settings(requirements='{"min_memory_mb": 4194304, "min_disk_mb": 16777216}')
    os_release = tmp_path / "os-release"
    os_release.write_text("ID=alpine\nVERSION_ID=3.20\n")
    target = _tree_target(
        tmp_path / "root", _kdf_zip(tmp_path), os_release=PurePosixPath(str(os_release))
    )
    script = render_install_script(BootstrapInput(settings=settings, target=target))
    result = sshd.run(install_command("root"), stdin=script)
    assert result.returncode == EXIT_REQUIREMENTS, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if "requirement not met" in line]
    assert any("os: found 'alpine'" in line for line in lines), lines
    assert any("memory: found" in line and "need 4194304 MiB" in line for line in lines), lines
    assert any("disk: found" in line and "need 16777216 MiB" in line for line in lines), lines
    assert not Path(str(target.layout.kdf_binary)).exists()
    assert not Path(str(target.layout.daemon_config)).exists()


# --- the whole `pulumi up` of a custom stack, executed for real ----------------------------------


def _in_dependency_order(commands: list[Registered]) -> list[Registered]:
    """The commands in an order the engine could run them: each after its dependencies."""
    by_urn = {c.urn: c for c in commands}
    done: set[str] = set()
    ordered: list[Registered] = []
    while len(ordered) < len(commands):
        ready = [
            c
            for c in commands
            if c.urn not in done and all(d in done for d in c.dependencies if d in by_urn)
        ]
        assert ready, "the remote commands depend on each other in a cycle"
        ordered += ready
        done.update(c.urn for c in ready)
    return ordered


def _cli(venv_bin: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The operator's `kdf-remote` (this environment's), with the test's XDG directories."""
    return subprocess.run(
        [str(venv_bin / "kdf-remote"), *args],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )


def _cli_json(venv_bin: Path, *args: str) -> Any:
    result = _cli(venv_bin, *args, "--json")
    assert result.returncode == 0, f"kdf-remote {' '.join(args)}: {result.stdout}{result.stderr}"
    return json.loads(result.stdout)


def test_pulumi_up_over_ssh_ends_with_a_working_profile(
    sshd: SshServer,
    wheelhouse: Path,
    dependency_site: Path,
    venv_bin: Path,
    tmp_path: Path,
) -> None:
    """The program's own commands install, configure and start the daemon over SSH; its outputs
    make a profile that reaches the daemon over TLS and drives the installed KDF."""
    archive = tmp_path / "kdf-release.zip"
    archive.write_bytes(release_zip(KDF_VERSION))
    release = KdfRelease(
        version=KDF_VERSION, url=f"file://{archive}", sha256=sha256(archive.read_bytes())
    )
    target = InstallTarget(
        layout=replace(Layout(), daemon_user="root").under(str(tmp_path / "root")),
        steps=BootstrapSteps(packages=False, users=False),
        service_manager="none",
        release=release,
        python=_base_python(),
        pip=PipSource(
            no_index=True,
            find_links=(PurePosixPath(str(wheelhouse)),),
            extra_site_dirs=(PurePosixPath(str(dependency_site)),),
        ),
    )
    layout = target.layout
    daemon_port, rpc_port, worker_port = _free_ports(3)
    config = {
        "kdf-remote:provider": "custom",
        "kdf-remote:custom_host": json.dumps(
            {"host": "127.0.0.1", "user": "root", "port": sshd.port}
        ),
        "kdf-remote:ssh_private_key": sshd.key.read_text(),
        "kdf-remote:manage_firewall": "false",
        "kdf-remote:allowed_ips": '["127.0.0.1/32"]',
        "kdf-remote:daemon_port": str(daemon_port),
        "kdf-remote:kdf_rpc_port": str(rpc_port),
        "kdf-remote:worker_ports": f"{worker_port}-{worker_port}",
        "kdf-remote:max_workers": "1",
        "kdf-remote:kdf_version": KDF_VERSION,
        "kdf-remote:kdf_url": "https://example.org/kdf-release.zip",
        "kdf-remote:kdf_sha256": release.sha256,
        "kdf-remote:requirements": '{"min_memory_mb": 256, "min_disk_mb": 512}',
    }
    deployment = deploy(
        config,
        secret_keys=("kdf-remote:ssh_private_key",),
        stack="live",
        mocks=LiveMocks(),
        target=target,
    )
    commands = _in_dependency_order(deployment.of_type("command:remote:Command"))
    names = [c.name.removeprefix("primary-bootstrap-") for c in commands]
    assert names[0] == "install" and names[-2:] == ["restart", "health"], names
    assert sorted(names[1:-2]) == ["daemon-config", "jwt-key", "tls-ca", "tls-cert", "tls-key"]

    started = Started()
    try:
        for command in commands:
            connection = command.inputs["connection"]
            where = (connection["host"], int(connection["port"]), connection["user"])
            assert where == ("127.0.0.1", sshd.port, "root"), f"{command.urn}: {connection}"
            assert connection["privateKey"] == sshd.key.read_text()
            result = sshd.run(command.inputs["create"], stdin=command.inputs.get("stdin", ""))
            assert result.returncode == 0, f"{command.name}:\n{result.stdout}\n{result.stderr}"
            if command.name.endswith("-restart"):
                pidfile = Path(str(layout.state_dir / "supervise.pid"))
                started.add(int(pidfile.read_text()))
            if command.name.endswith("-health"):
                assert "kdf-remote: daemon healthy:" in result.stdout, result.stdout

        # The virtualenv runs the wheel's code, not this checkout's.
        venv_python = Path(str(layout.venv / "bin" / "python"))
        where_from = subprocess.run(
            [venv_python, "-c", "import kdf_remote.daemon as d; print(d.__file__)"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert where_from.startswith(str(layout.venv)), where_from
        site = Path(str(layout.venv)).glob(f"lib/python*/site-packages/{EXTRA_SITE_PTH}")
        assert [p.read_text() for p in site] == [f"{dependency_site}\n"]
        assert Path(str(layout.marker)).read_text() == f"ok {KDF_VERSION}\n"

        outputs = deployment.outputs
        assert outputs["daemon_url"] == f"https://127.0.0.1:{daemon_port}"
        assert outputs["api_key"].startswith("kdfr_")
        outputs_file = tmp_path / "outputs.json"
        outputs_file.write_text(json.dumps(outputs))
        outputs_file.chmod(0o600)

        imported = _cli_json(venv_bin, "profile", "import", "--file", str(outputs_file))
        assert imported["url"] == outputs["daemon_url"]
        status = _cli_json(venv_bin, "status")
        assert [(i["name"], i["state"]) for i in status["instances"]] == [("main", "stopped")]

        running = _cli_json(venv_bin, "start", "main", "--timeout", "60")
        assert running["state"] == "running", running
        started.add(int(running["pid"]))
        answer = _cli_json(venv_bin, "rpc", "version")
        assert answer["result"] == KDF_VERSION, answer
        stopped = _cli_json(venv_bin, "stop", "main")
        assert stopped["state"] == "stopped", stopped

        # A wrong key is refused over the same TLS channel: the profile's key is what works.
        wrong = tmp_path / "wrong.json"
        wrong.write_text(json.dumps(dict(outputs, api_key="kdfr_" + "x" * 43)))
        _cli_json(venv_bin, "profile", "import", "--file", str(wrong), "--name", "wrong")
        refused = _cli(venv_bin, "status", "--profile", "wrong", "--json")
        assert refused.returncode == 3, refused.stdout + refused.stderr
    finally:
        started.stop_all()
