"""Real daemons with the kdf_compat listener on loopback, in front of kdf-sim.

:class:`CompatStack` writes a daemon config (free ports picked by binding port 0), runs kdf-sim
through a wrapper that sets ``KDF_SIM_REQUEST_LOG`` (the supervisor passes KDF only an
allow-list of variables), starts ``kdf-remote-daemon``, waits for ``/v1/health`` and starts
``main`` with a known ``rpc_password``. Clients may bind another loopback address (127.0.0.2,
...) to appear as another peer. At teardown the daemon is stopped and the KDF it ran is killed
by PID, after checking it is the process the daemon recorded.
"""

from __future__ import annotations

import contextlib
import json
import signal
import ssl
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from _loopback import DEADLINE_S, free_port, wait_for
from kdf_remote.daemon.security.certs import init_tls
from kdf_remote.daemon.security.tokens import create_jwt_key_file

BIN = Path(sys.executable).parent
ADMIN_KEY = "compat-it-admin-key-0123456789"
VIEWER_KEY = "compat-it-viewer-key-0123456789"
RPC_PASSWORD = "Compat-Rpc-Pass-4-Tests!9"  # a test value
PASSPHRASE = "legal winner thank year wave sausage worth useful legal winner thank yellow"
COINS = [{"coin": "KMD", "pubtype": 60, "protocol": {"type": "UTXO"}}]


def startup_config(**overrides: object) -> dict[str, object]:
    """A KDF startup config kdf-sim accepts, with the test's rpc_password."""
    config: dict[str, object] = {
        "gui": "compat-it",
        "netid": 8762,
        "disable_p2p": True,
        "coins": COINS,
        "passphrase": PASSPHRASE,
        "rpc_password": RPC_PASSWORD,
    }
    config.update(overrides)
    return config


@dataclass
class CompatStack:
    """One daemon with kdf_compat enabled, supervising kdf-sim as ``main``."""

    root: Path
    tls: bool = False
    allowed_ips: tuple[str, ...] = ()
    source: str = "127.0.0.1"
    """The loopback address this stack's own clients bind to."""
    port: int = field(default_factory=free_port)
    compat_port: int = field(default_factory=free_port)
    kdf_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    ca_cert: Path | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def rest_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def compat_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.compat_port}"

    @property
    def kdf_url(self) -> str:
        """KDF itself (kdf-sim on loopback), for calling it directly."""
        return f"http://127.0.0.1:{self.kdf_port}"

    @property
    def request_log(self) -> Path:
        return self.root / "kdf-requests.jsonl"

    @property
    def output(self) -> Path:
        return self.root / "daemon.log"

    def client(
        self, base_url: str, *, key: str | None = ADMIN_KEY, source: str | None = None
    ) -> httpx.Client:
        """A client of ``base_url`` bound to ``source`` (this stack's address by default)."""
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(self.ca_cert)) if self.ca_cert else True
        )
        transport = httpx.HTTPTransport(local_address=source or self.source, verify=verify)
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(
            base_url=base_url, headers=headers, transport=transport, timeout=DEADLINE_S
        )

    def kdf_methods(self) -> list[str | None]:
        """Every method kdf-sim received so far (its request log)."""
        if not self.request_log.exists():
            return []
        lines = self.request_log.read_text().splitlines()
        return [json.loads(line)["method"] for line in lines if line.strip()]

    def _wrapper(self) -> Path:
        path = self.root / "kdf-wrapper.sh"
        path.write_text(
            "#!/bin/sh\n"
            f"export KDF_SIM_REQUEST_LOG='{self.request_log}'\n"
            f"exec '{BIN / 'kdf-sim'}' \"$@\"\n"
        )
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        return path

    def write_config(self) -> Path:
        """The daemon YAML for this stack."""
        state = self.root / "state"
        security = [f"  api_keys: [{ADMIN_KEY}, {{name: dash, role: viewer, key: {VIEWER_KEY}}}]"]
        if self.allowed_ips:
            security.append(f"  allowed_ips: [{', '.join(self.allowed_ips)}]")
        if self.tls:
            files = init_tls(self.root / "tls", ["127.0.0.1", "localhost"])
            self.ca_cert = Path(files.ca_cert)
            security.append(
                f"  ssl: {{cert_path: {files.server_cert}, key_path: {files.server_key}}}"
            )
        text = (
            f"daemon: {{port: {self.port}, host: 127.0.0.1, state_dir: {state}}}\n"
            f"kdf: {{binary_path: {self._wrapper()}, data_dir: {self.root / 'data'}, "
            f"rpc_port: {self.kdf_port}, start_timeout: 20s, stop_timeout: 5s}}\n"
            "worker_support: {enabled: false}\n"
            "security:\n" + "\n".join(security) + "\n"
            f"kdf_compat: {{enabled: true, port: {self.compat_port}, instance: main, "
            "deny_methods: [stop, withdraw]}\n"
        )
        path = self.root / "daemon.yaml"
        path.write_text(text)
        create_jwt_key_file(state / "jwt.key")
        return path

    def start(self, **config_overrides: object) -> None:
        """Start the daemon, wait for it, and start ``main``."""
        config = self.write_config()
        with self.output.open("wb") as sink:
            self.process = subprocess.Popen(
                [str(BIN / "kdf-remote-daemon"), "--config", str(config)],
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        with self.client(self.rest_url, key=None) as http:

            def healthy() -> bool:
                assert self.process is not None
                if self.process.poll() is not None:
                    pytest.fail(f"daemon exited:\n{self.output.read_text(errors='replace')}")
                with contextlib.suppress(httpx.HTTPError):
                    return http.get("/v1/health", timeout=2).status_code == 200
                return False

            wait_for(healthy, "the daemon to answer /v1/health")
        with self.client(self.rest_url) as http:
            started = http.post("/v1/instances/main/start", json=startup_config(**config_overrides))
            assert started.status_code == 200, started.text
            assert started.json()["state"] == "running"

    def _kdf_pid(self) -> int | None:
        path = self.root / "state" / "instances" / "main" / "state.json"
        try:
            record = json.loads(path.read_text())
            proc = psutil.Process(int(record["pid"]))
            if abs(proc.create_time() - float(record["create_time"])) > 0.05:
                return None
            return proc.pid
        except (OSError, ValueError, KeyError, psutil.Error):
            return None

    def stop(self) -> None:
        """Stop the daemon (SIGTERM), then kill the KDF it recorded, by PID."""
        pid = self._kdf_pid()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(DEADLINE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(DEADLINE_S)
        if pid is not None:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                if any("kdf" in part for part in proc.cmdline()):
                    proc.kill()
                    proc.wait(DEADLINE_S)


@contextlib.contextmanager
def running_stack(root: Path, **options: Any) -> Iterator[CompatStack]:
    """A started :class:`CompatStack`, stopped (and its KDF killed) at the end."""
    stack = CompatStack(root=root, **options)
    try:
        stack.start(
            event_streaming_configuration={"access_control_allow_origin": "*"},
            rpccors="https://app.example",
        )
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CompatStack]:
    """One plain-HTTP loopback stack shared by a module's tests (they never throttle it)."""
    with running_stack(tmp_path_factory.mktemp("compat")) as started:
        yield started
