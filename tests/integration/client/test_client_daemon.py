"""The client library and CLI against a real daemon over TLS on loopback, and local mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from kdf_remote.client import connect, errors
from kdf_remote.client._core import Backoff
from kdf_remote.client._sync import RemoteKdfController
from kdf_remote.client.profiles import (
    LocalSettings,
    Profile,
    load_profile,
    save_profile,
    set_current_profile,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the installed kdf-remote console script."""
    return subprocess.run(
        [str(BIN / "kdf-remote"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def daemon_profile(daemon: Any, name: str = "remote", key: str | None = None) -> Profile:
    save_profile(
        Profile(name=name, url=daemon.url, api_key=key or daemon.api_key), ca_pem=daemon.ca_pem
    )
    return load_profile(name)


def app_code(profile: str) -> list[str]:
    """What an app writes: nothing in it says whether KDF is local or remote."""
    with connect(profile) as kdf:
        started = kdf.start_default()
        version = kdf.rpc("version")
        health = kdf.health()
        stopped = kdf.stop_kdf()
    return [started.state, str(version.result), str(health.healthy), stopped.state]


def test_app_switches_local_to_remote_by_profile(
    real_daemon: Any, tmp_path: Path, venv_bin: Path
) -> None:
    """The same app code runs against a local profile and a remote one."""
    port_holder = __import__("socket").socket()
    port_holder.bind(("127.0.0.1", 0))
    rpc_port = port_holder.getsockname()[1]
    port_holder.close()
    save_profile(
        Profile(
            name="laptop",
            kind="local",
            local=LocalSettings(
                binary_path=str(venv_bin / "kdf-sim"),
                data_dir=str(tmp_path / "local-data"),
                run_dir=str(tmp_path / "local-run"),
                rpc_port=rpc_port,
            ),
        )
    )
    daemon_profile(real_daemon)
    local = app_code("laptop")
    remote = app_code("remote")
    assert local == remote == ["running", "2.5.1-beta_kdfsim0", "True", "stopped"]


def test_library_over_tls_with_token_exchange(real_daemon: Any) -> None:
    """The library exchanges the key for a JWT and drives KDF over pinned TLS."""
    profile = daemon_profile(real_daemon)
    with RemoteKdfController.from_profile(profile) as kdf:
        assert kdf.connect().status == "ok"
        status = kdf.start_default()
        assert status.state == "running"
        assert kdf.rpc("version").ok
        assert [s.name for s in kdf.instances()] == ["main"]
        with pytest.raises(errors.NotFound):
            kdf.status("ghost")
        assert any("DEX stats" in line.line for line in kdf.logs(tail=50))
        kdf.stop_kdf()


def test_wrong_ca_is_refused(real_daemon: Any, other_ca_pem: str) -> None:
    """A daemon certificate not issued by the pinned CA fails verification (no insecure path)."""
    profile = Profile(name="pinned", url=real_daemon.url, api_key=real_daemon.api_key)
    save_profile(profile, ca_pem=other_ca_pem)
    with connect("pinned") as kdf, pytest.raises(errors.ConnectError, match="TLS verification"):
        kdf.status()
    assert cli("status", "--profile", "pinned").returncode == 3


def test_health_stream_survives_daemon_restart(real_daemon: Any) -> None:
    """monitor_health keeps going across a daemon restart: reconnecting, reconnected, samples."""
    profile = daemon_profile(real_daemon)
    kinds: list[str] = []
    restarted = threading.Event()
    with RemoteKdfController.from_profile(profile) as kdf:
        kdf.start_default()
        for event in kdf.monitor_health(backoff=Backoff(initial=0.2, cap=1.0), give_up_after=60):
            kinds.append(event.kind)
            if event.kind == "sample" and not restarted.is_set():
                restarted.set()
                threading.Thread(target=real_daemon.restart).start()
            if kinds.count("reconnected") and kinds[-1] == "sample":
                break
    assert "reconnecting" in kinds
    assert kinds.index("reconnected") > kinds.index("reconnecting")
    assert kinds[-1] == "sample"


class TestCliSubprocess:
    def test_exit_codes_and_json(self, real_daemon: Any) -> None:
        """start/status/rpc/stop via the console script; unknown instance 1; bad args 2."""
        daemon_profile(real_daemon)
        set_current_profile("remote")
        started = cli("start", "main", "--json")
        assert started.returncode == 0, started.stderr
        assert json.loads(started.stdout)["state"] == "running"
        status = cli("status", "--json")
        assert json.loads(status.stdout)["instances"][0]["state"] == "running"
        rpc = cli("rpc", "version")
        assert json.loads(rpc.stdout)["result"] == "2.5.1-beta_kdfsim0"
        assert cli("status", "ghost").returncode == 1
        assert cli("status", "--bogus").returncode == 2
        assert cli("stop", "main", "--json").returncode == 0

    def test_daemon_down_and_wrong_key_exit_3(self, real_daemon: Any) -> None:
        """Wrong key → 3; daemon down → 3 with a clear message."""
        daemon_profile(real_daemon, name="badkey", key="kdfr_" + "x" * 43)
        wrong = cli("status", "--profile", "badkey")
        assert wrong.returncode == 3
        assert "refused" in wrong.stderr or "unauthorized" in wrong.stderr
        daemon_profile(real_daemon)
        real_daemon.stop()
        down = cli("status", "--profile", "remote")
        assert down.returncode == 3
        assert f"cannot reach the daemon at {real_daemon.url}" in down.stderr

    def test_status_all_concurrently(self, real_daemon: Any) -> None:
        """status --all over several profiles pointing at one daemon."""
        for index in range(5):
            daemon_profile(real_daemon, name=f"p{index}")
        done = cli("status", "--all", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        assert [p["ok"] for p in json.loads(done.stdout)["profiles"]] == [True] * 5


def test_help_and_status_import_neither_pulumi_nor_litestar(real_daemon: Any) -> None:
    """`--help` and `status` load no pulumi or litestar module."""
    daemon_profile(real_daemon)
    probe = (
        "import sys\n"
        "from kdf_remote.client.cli.app import main\n"
        "sys.argv = ['kdf-remote', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
        "bad = sorted(m for m in sys.modules\n"
        "    if m.split('.')[0] in ('pulumi', 'litestar') or m.startswith('kdf_remote.daemon'))\n"
        "print('LOADED', bad, 'EXIT', code)\n"
    )
    for args in (
        ["--help"],
        ["status", "--profile", "remote"],
        ["status", "--json", "--profile", "remote"],
    ):
        done = subprocess.run(
            [sys.executable, "-c", probe, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert "LOADED [] EXIT 0" in done.stdout, (args, done.stdout[-500:], done.stderr[-500:])
