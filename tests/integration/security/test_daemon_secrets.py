"""The KDF secrets never leak, scanned after a full run of the real daemon over TLS.

The run stores, starts, calls, restarts and stops an instance whose config holds a passphrase,
a wallet password and an RPC password, and touches every read route on the way. While KDF runs,
the argv and environment of the daemon and all its descendants are scanned; afterwards every
response body, the daemon's output, the audit log, every log file, and every file under the
deployment (a file that holds a secret must be 0600).
"""

from __future__ import annotations

import stat
from pathlib import Path

import psutil
import pytest

from _loopback import wait_for

from .harness import (
    PASSPHRASE,
    RPC_PASSWORD,
    WALLET_PASSWORD,
    SecureDaemon,
    make_daemon,
    startup_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.security, pytest.mark.slow]

SECRETS = {
    "passphrase": PASSPHRASE,
    "wallet_password": WALLET_PASSWORD,
    "rpc_password": RPC_PASSWORD,
}


def _exposed_by_processes(daemon: SecureDaemon) -> list[str]:
    """Secrets in the argv or environment of the daemon or any of its descendants (KDF)."""
    assert daemon.process is not None
    root = psutil.Process(daemon.process.pid)
    found = []
    for process in [root, *root.children(recursive=True)]:
        argv = " ".join(process.cmdline())
        environment = " ".join(f"{k}={v}" for k, v in process.environ().items())
        found += [
            f"{name} in the argv or environment of {process.name()} ({process.pid})"
            for name, secret in SECRETS.items()
            if secret in argv or secret in environment
        ]
    return found


def _full_run(daemon: SecureDaemon) -> list[str]:
    """Exercise every route that touches an instance; returns what the process scans found."""
    operator = daemon.add_key("ops", "operator")
    with daemon.client(operator) as ops, daemon.client(daemon.admin_key) as admin:
        assert ops.put("/v1/instances/main/config", json=startup_config()).status_code == 200
        assert ops.post("/v1/instances/main/start").json()["state"] == "running"
        assert daemon.kdf_process() is not None
        exposed = _exposed_by_processes(daemon)
        token = daemon.token(operator)
        with daemon.client(token) as by_token:
            assert by_token.post("/v1/instances/main/rpc", json={"method": "version"}).is_success
        calls = [{"method": "get_enabled_coins"}, {"method": "my_balance", "coin": "KMD"}]
        assert ops.post("/v1/instances/main/rpc", json=calls).status_code == 200
        ops.post("/v1/instances/main/rpc", json={"method": "version", "userpass": "guess"})
        ops.get("/v1/instances")
        ops.get("/v1/instances/main")
        ops.get("/v1/instances/main/health")
        ops.get("/v1/instances/main/logs", params={"tail": 200})
        restarted = ops.post("/v1/instances/main/restart", json=startup_config())
        assert restarted.json()["state"] == "running"
        exposed += _exposed_by_processes(daemon)
        ops.get("/v1/instances/main/logs", params={"tail": 500})
        admin.get("/v1/audit", params={"limit": 1000})
        kdf = daemon.kdf_process()
        assert kdf is not None
        assert ops.post("/v1/instances/main/stop").json()["state"] == "stopped"
        wait_for(lambda: not kdf.is_running(), "KDF to exit")
    return exposed


def _files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and not path.is_symlink()]


def test_kdf_secrets_never_leak(tmp_path: Path) -> None:
    """No secret in any response, log, audit line, argv or environment, or file others can read."""
    daemon = make_daemon(tmp_path / "deployment")
    daemon.start()
    try:
        exposed = _full_run(daemon)
    finally:
        daemon.stop()
    assert not exposed, exposed
    # The scan covers the answers that could carry a secret: stored config, RPC, logs, audit.
    for marker in ('"config":{', '"result":', '"lines":[', '"entries":['):
        assert any(marker in text for text in daemon.responses), marker
    for name, secret in SECRETS.items():
        assert not [r for r in daemon.responses if secret in r], f"{name} in a response"
        assert secret not in daemon.log_text(), f"{name} in the daemon's output"
        assert secret not in daemon.audit_log.read_text(), f"{name} in the audit log"
    logs = [path for path in _files(daemon.root) if ".log" in path.name]
    assert any(path.parent.name == "main" for path in logs), "KDF's log was not found"
    problems = []
    for path in _files(daemon.root):
        data = path.read_bytes()
        for name, secret in SECRETS.items():
            if secret.encode() not in data:
                continue
            if path in logs:
                problems.append(f"{name} in the log {path}")
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                problems.append(f"{name} in {path}, which group or others can read ({mode:o})")
    assert not problems, problems
