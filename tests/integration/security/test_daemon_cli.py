"""The daemon's security commands as subprocesses, and start-up refusals (reference test 4).

``init``, ``keys add|list|revoke``, ``tls init``, ``audit verify`` and ``check-config`` run as
``kdf-remote-daemon`` subprocesses, as operators, the bootstrap and ``kdf-remote deploy
--provider local`` run them; then ``deploy_local`` itself drives them end to end.
"""

from __future__ import annotations

import base64
import json
import ssl
import stat
from pathlib import Path

import httpx
import pytest

from _loopback import free_port, wait_for

from .harness import KDF_SIM, SecureDaemon, make_daemon, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.security]

PLAIN_YAML_KEY = "plain-yaml-key-0123456789"


def _write_jwt_key(daemon: SecureDaemon, key: bytes) -> None:
    path = daemon.state_dir / "jwt.key"
    path.write_bytes(base64.urlsafe_b64encode(key).rstrip(b"=") + b"\n")
    path.chmod(0o600)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing", "security.jwt.key_file: got '{path}', expected an existing file"),
        ("short", "(16 bytes)', expected at least 32 random bytes"),
        ("pattern", "(a repetitive byte pattern)"),
        ("readable", "chmod 600"),
    ],
)
def test_weak_or_missing_jwt_key_stops_startup(tmp_path: Path, damage: str, message: str) -> None:
    """Reference 4: the daemon exits 1 naming the key file; check-config reports the same."""
    daemon = make_daemon(tmp_path / "daemon")
    key_path = daemon.state_dir / "jwt.key"
    if damage == "missing":
        key_path.unlink()
    elif damage == "short":
        _write_jwt_key(daemon, bytes(range(16)))
    elif damage == "pattern":
        _write_jwt_key(daemon, b"\x00\x01" * 32)
    else:
        key_path.chmod(0o644)
    expected = message.format(path=key_path)
    started = daemon.run_to_exit()
    assert started.returncode == 1
    assert expected in started.stderr
    checked = run_cli("check-config", str(daemon.config))
    assert checked.returncode == 1
    assert f"{daemon.config}: error: security.jwt.key_file" in checked.stderr
    assert expected in checked.stderr


def test_init_writes_a_complete_setup_and_prints_the_key_once(tmp_path: Path) -> None:
    """``init`` output starts a daemon reachable at its URL with its CA and its admin key."""
    daemon = make_daemon(tmp_path / "fresh")
    assert stat.S_IMODE(daemon.config.stat().st_mode) == 0o600
    assert stat.S_IMODE(daemon.root.stat().st_mode) == 0o700
    checked = run_cli("check-config", str(daemon.config))
    assert checked.returncode == 0, checked.stderr
    stored = [p.read_bytes() for p in daemon.root.rglob("*") if p.is_file()]
    assert not any(daemon.admin_key.encode() in data for data in stored)
    again = run_cli("init", "--state-dir", str(daemon.root), "--kdf-binary", str(KDF_SIM), "--json")
    assert again.returncode == 1
    assert "already initialised" in again.stderr and again.stdout == ""
    daemon.start()
    try:
        pinned = ssl.create_default_context(cafile=str(daemon.ca_cert))
        response = httpx.get(
            f"{daemon.url}/v1/instances/main",
            headers={"Authorization": f"Bearer {daemon.admin_key}"},
            verify=pinned,
            timeout=30,
        )
        assert response.status_code == 200
        assert response.json()["state"] == "stopped"
    finally:
        daemon.stop()


def test_init_refuses_a_wildcard_host_without_a_name(tmp_path: Path) -> None:
    """On 0.0.0.0 the certificate needs the name clients use: ``--san`` is then required."""
    args = ["init", "--state-dir", str(tmp_path / "d"), "--kdf-binary", str(KDF_SIM)]
    refused = run_cli(*args, "--host", "0.0.0.0")
    assert refused.returncode == 1 and "--san" in refused.stderr
    made = run_cli(
        *args, "--host", "0.0.0.0", "--san", "kdf.example.com", "--port", str(free_port())
    )
    assert made.returncode == 0, made.stderr
    assert "admin API key 'admin', shown only this once:" in made.stdout
    assert "url            https://kdf.example.com:" in made.stdout


def test_keys_add_list_revoke_as_subprocesses(shared_daemon: SecureDaemon) -> None:
    """Keys made and revoked by the CLI work and stop working on the running daemon."""
    config = str(shared_daemon.config)
    key = shared_daemon.add_key("ci-deployer", "operator")
    assert key.startswith("kdfr_") and len(key) == 48
    with shared_daemon.client(key, header="x-api-key") as http:
        assert http.post("/v1/instances/main/stop").status_code == 200
    listed = run_cli("keys", "list", "--config", config, "--json")
    assert listed.returncode == 0
    entries = {entry["name"]: entry for entry in json.loads(listed.stdout)}
    assert entries["ci-deployer"]["role"] == "operator"
    assert entries["ci-deployer"]["status"] == "active"
    assert key not in listed.stdout
    revoked = run_cli("keys", "revoke", "ci-deployer", "--config", config)
    assert revoked.returncode == 0, revoked.stderr
    after = json.loads(run_cli("keys", "list", "--config", config, "--json").stdout)
    assert {e["name"]: e["status"] for e in after}["ci-deployer"] == "revoked"
    with shared_daemon.client(key) as http:
        wait_for(lambda: http.get("/v1/instances").status_code == 401, "the revocation")
    assert run_cli("keys", "revoke", "ci-deployer", "--config", config).returncode == 1


def test_tls_init_writes_files_clients_can_pin(tmp_path: Path) -> None:
    """``tls init --json`` prints the four paths; keys are 0600; the CA verifies the server."""
    result = run_cli("tls", "init", "--dir", str(tmp_path / "tls"), "--san", "127.0.0.1", "--json")
    assert result.returncode == 0, result.stderr
    files = json.loads(result.stdout)
    for name in ("ca_key", "server_key"):
        assert stat.S_IMODE(Path(files[name]).stat().st_mode) == 0o600
    context = ssl.create_default_context(cafile=files["ca_cert"])
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(files["server_cert"], files["server_key"])
    assert context.cert_store_stats()["x509_ca"] == 1
    twice = run_cli("tls", "init", "--dir", str(tmp_path / "tls"), "--san", "127.0.0.1")
    assert twice.returncode == 1


def test_check_config_warns_about_plain_yaml_keys(tmp_path: Path) -> None:
    """A plain key in the YAML is hashed on load with a warning that names it, not shows it."""
    daemon = make_daemon(tmp_path / "daemon", {"security": {"api_keys": [PLAIN_YAML_KEY]}})
    checked = run_cli("check-config", str(daemon.config))
    assert checked.returncode == 0, checked.stderr
    assert "warning: security.api_keys[0] (name 'key1', line" in checked.stderr
    assert PLAIN_YAML_KEY not in checked.stderr
    daemon.start()
    try:
        with daemon.client(PLAIN_YAML_KEY) as http:
            assert http.get("/v1/audit").status_code == 200  # plain YAML keys are admin
    finally:
        daemon.stop()
    log = daemon.log_text()
    assert "security.api_keys[0] (name 'key1', line" in log and "plain key" in log
    assert PLAIN_YAML_KEY not in log


# deploy_local drops its Popen handle of the detached daemon while it runs (reported to the
# client's owner); that ResourceWarning is about the client, not about what this test checks.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_local_deploy_runs_on_these_commands(tmp_path: Path) -> None:
    """``kdf-remote deploy --provider local`` (its library call) deploys, serves and destroys."""
    from kdf_remote.client._sync import RemoteKdfController
    from kdf_remote.client.local_deploy import LocalDeployOptions, deploy_local, destroy_local
    from kdf_remote.client.profiles import load_profile

    state = tmp_path / "local"
    result = deploy_local(LocalDeployOptions(state_dir=state, kdf_binary=KDF_SIM))
    try:
        assert result.url.startswith("https://127.0.0.1:")
        with RemoteKdfController.from_profile(load_profile(result.profile)) as kdf:
            assert [status.name for status in kdf.instances()] == ["main"]
    finally:
        destroyed = destroy_local(state_dir=state, purge=True)
    assert destroyed.stopped_pid == result.pid
