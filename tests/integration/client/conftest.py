"""A real kdf-remote daemon over TLS on 127.0.0.1 (kdf-sim as KDF) for the client's tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from _loopback import free_port
from kdf_remote.daemon.security.certs import init_tls
from kdf_remote.daemon.security.tokens import create_jwt_key_file

API_KEY = "kdfr_" + "i" * 43


def make_tls(directory: Path) -> tuple[Path, Path, str]:
    """A throw-away CA and a server certificate for 127.0.0.1 (the daemon's own `tls init`).

    Returns (server cert path, server key path, CA PEM).
    """
    files = init_tls(directory, ["127.0.0.1", "localhost"], days=1)
    return Path(files.server_cert), Path(files.server_key), Path(files.ca_cert).read_text()


@dataclass
class RealDaemon:
    """A daemon process we started; `restart()` keeps its port, keys and certificate."""

    root: Path
    config: Path
    port: int
    ca_pem: str
    api_key: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = (self.root / "daemon.log").open("ab")
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "kdf-remote-daemon"), "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        ca = self.root / "ca.pem"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError((self.root / "daemon.log").read_text()[-2000:])
            try:
                import ssl

                context = ssl.create_default_context(cafile=str(ca))
                if httpx.get(f"{self.url}/v1/health", verify=context, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("daemon did not become healthy")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


def write_daemon(root: Path) -> RealDaemon:
    """Config, certificates and state for a daemon on a free loopback port (not started)."""
    cert, key, ca_pem = make_tls(root / "tls")
    (root / "ca.pem").write_text(ca_pem)
    port = free_port()
    workers = free_port()
    config = {
        "daemon": {
            "host": "127.0.0.1",
            "port": port,
            "state_dir": str(root / "state"),
            "health_check_interval": "1s",
            "stop_instances_on_exit": True,
        },
        "worker_support": {
            "enabled": False,
            "worker_ports": f"{workers}-{workers}",
            "max_workers": 1,
        },
        "kdf": {
            "binary_path": str(Path(sys.executable).parent / "kdf-sim"),
            "data_dir": str(root / "kdf"),
            "rpc_port": free_port(),
        },
        "security": {
            "api_keys": [API_KEY],
            "allowed_ips": ["127.0.0.1/32"],
            "ssl": {"cert_path": str(cert), "key_path": str(key)},
            "rate_limit": {"requests_per_minute": 100000, "auth_per_minute": 10000},
        },
    }
    path = root / "daemon.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    # The daemon refuses to start without its token-signing key (made at install time).
    create_jwt_key_file(root / "state" / "jwt.key")
    return RealDaemon(root=root, config=path, port=port, ca_pem=ca_pem, api_key=API_KEY)


@pytest.fixture
def real_daemon(tmp_path: Path) -> Iterator[RealDaemon]:
    """A running daemon over TLS on 127.0.0.1, stopped (with its KDF) at the end."""
    daemon = write_daemon(tmp_path / "daemon")
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def other_ca_pem(tmp_path: Path) -> str:
    """The PEM of a CA that did not issue the daemon's certificate."""
    return make_tls(tmp_path / "other-tls")[2]
