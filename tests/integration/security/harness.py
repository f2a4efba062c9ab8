"""A real ``kdf-remote-daemon`` over TLS on loopback, set up by ``kdf-remote-daemon init``.

Each :class:`SecureDaemon` lives in its own directory: ``init`` writes the configuration, the
private CA and server certificate, the JWT key and an admin key; the test then adjusts the YAML
(free KDF port, limits, allow-list) and runs the daemon as a subprocess with kdf-sim as KDF.
Clients pin the CA ``init`` made and may bind another loopback address (127.0.0.2, ...) to
appear as a different peer. Stopping a daemon stops its KDF, and any KDF it left behind is
killed by PID after checking it is the process the daemon recorded.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from _loopback import DEADLINE_S, free_port, wait_for

BIN = Path(sys.executable).parent
DAEMON = str(BIN / "kdf-remote-daemon")
KDF_SIM = BIN / "kdf-sim"
PASSPHRASE = "legal winner thank year wave sausage worth useful legal winner thank yellow"
WALLET_PASSWORD = "Wallet-Pass-42!x"  # a test value
RPC_PASSWORD = "Rpc-Pass-Only-4-Tests!9"  # a test value
COINS = [{"coin": "KMD", "pubtype": 60, "protocol": {"type": "UTXO"}}]
GENEROUS_LIMITS = {
    "requests_per_minute": 1_000_000,
    "auth_per_minute": 1_000_000,
    "lockout_after": 1_000_000,
}
"""For daemons shared by many tests: no test may be throttled by another's requests."""


def startup_config(**overrides: object) -> dict[str, object]:
    """A KDF startup config kdf-sim accepts, holding every kind of KDF secret."""
    config: dict[str, object] = {
        "gui": "security-it",
        "netid": 8762,
        "disable_p2p": True,
        "coins": COINS,
        "passphrase": PASSPHRASE,
        "wallet_password": WALLET_PASSWORD,
        "rpc_password": RPC_PASSWORD,
    }
    config.update(overrides)
    return config


def run_cli(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """``kdf-remote-daemon ARGS`` as a subprocess (never raises for a non-zero exit)."""
    return subprocess.run(
        [DAEMON, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def b64url(data: bytes) -> str:
    """Unpadded base64url, as JWTs use."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge_token(
    header: Mapping[str, object],
    claims: Mapping[str, object],
    key: bytes,
    digest: Callable[[], Any] = hashlib.sha256,
) -> str:
    """A JWT built by hand: any header, any claims, an HMAC under ``key`` with ``digest``."""
    signing_input = (
        f"{b64url(json.dumps(dict(header)).encode())}.{b64url(json.dumps(dict(claims)).encode())}"
    )
    signature = hmac.new(key, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64url(signature)}"


def token_claims(token: str) -> dict[str, Any]:
    """The claims of ``token`` (not verified: tests read their own tokens)."""
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def sign_headers(
    api_key: str, method: str, target: str, body: bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    """The three request-signing headers of architecture.md for one request."""
    signing_key = hmac.new(api_key.encode(), b"kdf-remote request signing v1", hashlib.sha256)
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    nonce = secrets.token_urlsafe(18)
    canonical = "\n".join([method, target, stamp, nonce, hashlib.sha256(body).hexdigest()]).encode()
    signature = hmac.new(signing_key.digest(), canonical, hashlib.sha256).hexdigest()
    return {"X-KDF-Timestamp": stamp, "X-KDF-Nonce": nonce, "X-KDF-Signature": f"v1={signature}"}


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


@dataclass
class SecureDaemon:
    """One daemon made by ``init`` in ``root``; started with :meth:`start`."""

    root: Path
    config: Path
    url: str
    port: int
    ca_cert: Path
    admin_key: str
    process: subprocess.Popen[bytes] | None = None
    viewer_key: str = ""
    operator_key: str = ""
    """Keys a fixture added with :meth:`add_key`, when it did."""
    output: Path = field(init=False)
    responses: list[str] = field(default_factory=list)
    """Every response body this harness's clients received (for the secret scans)."""

    def __post_init__(self) -> None:
        self.output = self.root / "daemon.out"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def audit_log(self) -> Path:
        return self.state_dir / "audit.log"

    @property
    def jwt_key(self) -> bytes:
        """The daemon's token-signing key (tests forge tokens with it)."""
        raw = (self.state_dir / "jwt.key").read_bytes().strip()
        return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))

    def settings(self) -> dict[str, Any]:
        """The YAML document as written now."""
        loaded: dict[str, Any] = yaml.safe_load(self.config.read_text())
        return loaded

    def write_settings(self, document: Mapping[str, Any]) -> None:
        """Replace the YAML with ``document`` (before :meth:`start`)."""
        self.config.write_text(yaml.safe_dump(dict(document), sort_keys=False))

    def update_config(self, changes: Mapping[str, Any]) -> None:
        """Merge ``changes`` into the YAML (before :meth:`start`)."""
        document = self.settings()
        _merge(document, changes)
        self.write_settings(document)

    def context(self) -> ssl.SSLContext:
        """A client context pinning this daemon's CA."""
        return ssl.create_default_context(cafile=str(self.ca_cert))

    def start(self, *args: str, health_peer: str = "127.0.0.1") -> None:
        """Run the daemon and wait until ``GET /v1/health`` answers over TLS to ``health_peer``.

        Tests of per-address limits probe from an address of their own, so the probe does not
        spend the budget of the address under test.
        """
        with self.output.open("ab") as sink:
            self.process = subprocess.Popen(
                [DAEMON, "--config", str(self.config), *args],
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        process = self.process
        transport = httpx.HTTPTransport(verify=self.context(), local_address=health_peer)

        def healthy() -> bool:
            if process.poll() is not None:
                pytest.fail(f"daemon exited with {process.returncode}:\n{self.log_text()}")
            with contextlib.suppress(httpx.HTTPError):
                return probe.get("/v1/health").is_success
            return False

        with httpx.Client(base_url=self.url, transport=transport, timeout=5) as probe:
            wait_for(healthy, "the daemon to answer /v1/health over TLS")

    def run_to_exit(self) -> subprocess.CompletedProcess[str]:
        """Run the daemon expecting it to refuse to start; its exit status and output."""
        return subprocess.run(
            [DAEMON, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=DEADLINE_S * 2,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def log_text(self) -> str:
        """Everything the daemon wrote to stdout and stderr."""
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    @contextlib.contextmanager
    def client(
        self,
        key: str | None = None,
        *,
        local_address: str | None = None,
        header: str = "authorization",
    ) -> Iterator[httpx.Client]:
        """An HTTPS client pinning the CA, sending ``key`` (as ``header``), from a loopback IP."""
        headers: dict[str, str] = {}
        if key is not None:
            headers = (
                {"X-API-Key": key} if header == "x-api-key" else {"Authorization": f"Bearer {key}"}
            )
        transport = httpx.HTTPTransport(verify=self.context(), local_address=local_address)
        recorded = self.responses

        def record(response: httpx.Response) -> None:
            # Event streams are read by the test itself; reading them here would never end.
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                response.read()
                recorded.append(response.text)

        with httpx.Client(
            base_url=self.url,
            headers=headers,
            transport=transport,
            timeout=DEADLINE_S,
            event_hooks={"response": [record]},
        ) as http:
            yield http

    def token(self, key: str, *, local_address: str | None = None) -> str:
        """An access token for ``key``."""
        with self.client(key, local_address=local_address) as http:
            response = http.post("/v1/auth/token")
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def add_key(self, name: str, role: str, *extra: str) -> str:
        """``keys add --json`` against this daemon's configuration; the plain key."""
        result = run_cli(
            "keys",
            "add",
            "--config",
            str(self.config),
            "--name",
            name,
            "--role",
            role,
            "--json",
            *extra,
        )
        assert result.returncode == 0, result.stderr
        added = json.loads(result.stdout)
        assert set(added) == {"name", "role", "key"}
        key: str = added["key"]
        return key

    def audit_entries(self) -> list[dict[str, Any]]:
        """Every audit line, parsed."""
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines()]

    def kdf_process(self) -> psutil.Process | None:
        """The KDF process recorded in main's state file, if it is alive and is that process."""
        path = self.state_dir / "instances" / "main" / "state.json"
        try:
            record = json.loads(path.read_text())
            proc = psutil.Process(int(record["pid"]))
            if abs(proc.create_time() - float(record["create_time"])) > 0.05:
                return None
        except (OSError, ValueError, KeyError, psutil.Error):
            return None
        return proc

    def stop(self) -> None:
        """SIGTERM the daemon (it stops KDF), then kill a KDF it left behind, by PID."""
        kdf = self.kdf_process()
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(DEADLINE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(DEADLINE_S)
        if kdf is not None:
            with contextlib.suppress(psutil.Error):
                kdf.kill()
                kdf.wait(DEADLINE_S)


def make_daemon(root: Path, changes: Mapping[str, Any] | None = None) -> SecureDaemon:
    """``kdf-remote-daemon init`` in ``root`` with kdf-sim, adjusted for tests (not started).

    The YAML gets a free KDF port (``init`` prefers 7783, which parallel tests would share),
    short timeouts, ``stop_instances_on_exit``, and then ``changes`` merged in.
    """
    port = free_port()
    result = run_cli(
        "init",
        "--state-dir",
        str(root),
        "--port",
        str(port),
        "--kdf-binary",
        str(KDF_SIM),
        "--max-workers",
        "1",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    made = json.loads(result.stdout)
    assert set(made) == {"config_path", "api_key", "ca_cert_path", "url"}
    daemon = SecureDaemon(
        root=root,
        config=Path(made["config_path"]),
        url=made["url"],
        port=port,
        ca_cert=Path(made["ca_cert_path"]),
        admin_key=made["api_key"],
    )
    worker_port = free_port()
    daemon.update_config(
        {
            "daemon": {"health_check_interval": "1s", "stop_instances_on_exit": True},
            "worker_support": {"enabled": False, "worker_ports": f"{worker_port}-{worker_port}"},
            "kdf": {"rpc_port": free_port(), "start_timeout": "20s", "stop_timeout": "5s"},
        }
    )
    if changes:
        daemon.update_config(changes)
    return daemon
