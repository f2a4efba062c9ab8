"""The ``kdf-remote`` CLI's workers, status, backup and update commands against a real daemon
process on loopback (plain HTTP to 127.0.0.1), kdf-sim as KDF and fake releases on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from _loopback import free_port
from _release_fixtures import ReleaseServer, release_script, release_zip, sha256
from kdf_remote.client.profiles import Profile, save_profile
from kdf_remote.daemon.security.tokens import create_jwt_key_file

from .conftest import ADMIN_KEY, free_range, startup_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed ``kdf-remote`` with the test's profile."""
    return subprocess.run(
        [str(BIN / "kdf-remote"), *args, "--profile", "dw"],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
        check=False,
    )


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[str]:
    """A ``kdf-remote-daemon`` process with workers, updates and backups configured."""
    server = ReleaseServer().__enter__()
    initial = tmp_path / "kdf-initial"
    initial.write_bytes(release_script("1.0.0"))
    initial.chmod(stat.S_IRWXU)
    first, last = free_range(3)
    port = free_port()
    state = tmp_path / "state"
    config = tmp_path / "daemon.yaml"
    config.write_text(
        f"daemon: {{host: 127.0.0.1, port: {port}, state_dir: {state},"
        " stop_instances_on_exit: true, health_check_interval: 200ms}\n"
        f"kdf: {{binary_path: {initial}, data_dir: {tmp_path / 'data'}, rpc_port: {free_port()},"
        f" bin_dir: {tmp_path / 'bin'}, release_origins: ['{server.origin}'],"
        " start_timeout: 20s, stop_timeout: 5s}\n"
        f"worker_support: {{max_workers: 2, worker_ports: '{first}-{last}',"
        " resource_limits: {memory_per_worker: 64M, max_total_memory: 256M}}\n"
        "backup: {retention: 3}\n"
        f"security: {{api_keys: [{ADMIN_KEY}], rate_limit: {{requests_per_minute: 100000}}}}\n"
    )
    create_jwt_key_file(state / "jwt.key")
    log = (tmp_path / "daemon.log").open("ab")
    process = subprocess.Popen(
        [str(BIN / "kdf-remote-daemon"), "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, (tmp_path / "daemon.log").read_text()[-2000:]
        try:
            if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    save_profile(Profile(name="dw", url=url, api_key=ADMIN_KEY))
    good = release_zip("2.0.0")
    bad = release_zip("3.0.0", mode="exits_at_start")
    server.add("/good.zip", good)
    server.add("/bad.zip", bad)
    os.environ["DW_RELEASES"] = json.dumps(
        {
            "good": [server.url("/good.zip"), sha256(good)],
            "bad": [server.url("/bad.zip"), sha256(bad)],
        }
    )
    try:
        yield url
    finally:
        os.environ.pop("DW_RELEASES", None)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        server.__exit__(None, None, None)


def test_workers_status_backup_and_update_commands(daemon: str, tmp_path: Path) -> None:
    """workers add/list/remove, status with per-worker figures, backup create/list/restore, and
    update (success, then a rollback that exits 1), with --json shapes and exit codes."""
    config = tmp_path / "worker.json"
    config.write_text(json.dumps(startup_config()))
    added = cli("workers", "add", "w1", "--config", str(config), "--memory", "96M", "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["state"] == "running"
    listed = json.loads(cli("workers", "list", "--json").stdout)
    assert [w["name"] for w in listed["workers"]] == ["w1"]
    assert listed["capacity"]["memory_left"] == 160 * 1024 * 1024
    human = cli("workers", "list")
    assert "w1" in human.stdout and "limits by" in human.stdout
    too_big = cli("workers", "add", "w2", "--memory", "1G", "--no-start")
    assert too_big.returncode == 1
    assert "left" in too_big.stderr
    status = json.loads(cli("status", "--json").stdout)
    w1 = next(
        s
        for s in (status if isinstance(status, list) else status["instances"])
        if s["name"] == "w1"
    )
    assert w1["limits"]["memory_bytes"] == 96 * 1024 * 1024

    created = cli("backup", "create", "w1", "--json")
    assert created.returncode == 0, created.stderr
    backup_id = json.loads(created.stdout)["id"]
    listed_backups = json.loads(cli("backup", "list", "w1", "--json").stdout)
    assert [b["id"] for b in listed_backups["backups"]] == [backup_id]
    assert cli("backup", "list", "w1").returncode == 0
    refused = cli("backup", "restore", "w1", backup_id)
    assert refused.returncode == 1
    assert "stopped" in refused.stderr
    assert cli("stop", "w1").returncode == 0
    restored = cli("backup", "restore", "w1", backup_id, "--json")
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["backup_id"] == backup_id
    removed = cli("workers", "remove", "w1", "--purge", "--json")
    assert json.loads(removed.stdout)["purged"] is True

    releases = json.loads(os.environ["DW_RELEASES"])
    assert cli("start", "main", "--json").returncode == 0
    url, digest = releases["good"]
    updated = cli(
        "update", "main", "--version", "2.0.0", "--url", url, "--sha256", digest, "--json"
    )
    assert updated.returncode == 0, updated.stdout + updated.stderr
    assert json.loads(updated.stdout)["outcome"] == "updated"
    url, digest = releases["bad"]
    rolled = cli("update", "main", "--version", "3.0.0", "--url", url, "--sha256", digest)
    assert rolled.returncode == 1
    assert "rolled_back" in rolled.stdout and "rolled back to 2.0.0" in rolled.stdout
    assert "2.0.0" in cli("rpc", "version").stdout
    assert cli("update", "main", "--version", "4.0.0").returncode == 2
