"""The daemon on a real port over kdf-sim: start, RPC, logs, health, stop, crash, re-adoption."""

from __future__ import annotations

import os
import signal

import pytest

from _loopback import wait_for

from .conftest import (
    PASSPHRASE,
    VIEWER_KEY,
    WALLET_PASSWORD,
    DaemonFactory,
    kill_pid,
    pid_alive,
    sse,
    startup_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_start_rpc_logs_stop(daemons: DaemonFactory) -> None:
    """The whole path: start -> running -> RPC (legacy, v2, batch) -> logs -> stop."""
    daemon = daemons.start(daemons.write_config(), "--stop-instances-on-exit")
    with daemon.client() as http:
        started = http.post("/v1/instances/main/start", json=startup_config())
        assert started.status_code == 200, started.text
        status = started.json()
        assert status["state"] == "running"
        assert status["kdf_version"]
        assert status["rpc_port"] == daemons.rpc_port
        pid = status["pid"]

        version = http.post("/v1/instances/main/rpc", content=b'{"method":"version"}')
        assert version.status_code == 200
        assert version.json()["result"] == status["kdf_version"]
        # A wrong caller userpass is replaced by the real one: the call is authenticated.
        coins = http.post(
            "/v1/instances/main/rpc",
            json={"method": "get_enabled_coins", "userpass": "not-the-password"},
        )
        assert coins.status_code == 200, coins.text
        assert coins.json() == {"result": []}
        v2 = http.post("/v1/instances/main/rpc", json={"mmrpc": "2.0", "method": "nope"})
        assert v2.status_code == 400
        assert v2.json()["error_type"] == "NoSuchMethod"
        batch = http.post(
            "/v1/instances/main/rpc", json=[{"method": "version"}, {"method": "get_enabled_coins"}]
        )
        assert batch.status_code == 200
        assert [item.get("result") is not None for item in batch.json()] == [True, True]
        legacy_error = http.post(
            "/v1/instances/main/rpc", json={"method": "my_balance", "coin": "NOPE"}
        )
        # KDF's own status and body come back unchanged (legacy errors are HTTP 500 in KDF).
        assert legacy_error.status_code == 500
        assert "No such coin" in legacy_error.json()["error"]

        tail = http.get("/v1/instances/main/logs", params={"tail": 50}).json()
        assert any("DEX stats" in entry["line"] for entry in tail["lines"])

        stopped = http.post("/v1/instances/main/stop")
        assert stopped.status_code == 200
        assert stopped.json()["state"] == "stopped"
        assert stopped.json()["pid"] is None
        wait_for(lambda: not pid_alive(pid), "KDF to exit")
        after = http.post("/v1/instances/main/rpc", content=b'{"method":"version"}')
        assert after.status_code == 409
        assert after.json()["error"] == "not_running"
        # Stopping again is a no-op, and a start without a body uses the stored config.
        assert http.post("/v1/instances/main/stop").json()["state"] == "stopped"
        again = http.post("/v1/instances/main/start")
        assert again.status_code == 200
        assert again.json()["state"] == "running"


def test_secrets_are_write_only_and_stored_0600(daemons: DaemonFactory) -> None:
    """Passphrase, wallet and RPC passwords never come back, nor reach the logs."""
    daemon = daemons.start(daemons.write_config(), "--stop-instances-on-exit")
    config = startup_config(
        wallet_name="itwallet", wallet_password=WALLET_PASSWORD, rpc_password="Rpc-Pass-1234!x"
    )
    seen: list[str] = []
    with daemon.client() as http:
        started = http.post("/v1/instances/main/start", json=config)
        assert started.status_code == 200, started.text
        seen.append(started.text)
        stored = http.put("/v1/instances/main/config", json=config)
        assert stored.json()["secrets_set"] == ["passphrase", "rpc_password", "wallet_password"]
        seen.append(stored.text)
        for path in ("/v1/instances", "/v1/instances/main", "/v1/instances/main/health"):
            seen.append(http.get(path).text)
        seen.append(http.get("/v1/instances/main/logs", params={"tail": 500}).text)
        with sse(http, "/v1/instances/main/logs?tail=500&follow=true") as stream:
            stream.next(lambda event, _: event == "log", "a log event")
    everything = "\n".join([*seen, daemon.log_text()])
    for secret in (PASSPHRASE, WALLET_PASSWORD, "Rpc-Pass-1234!x"):
        assert secret not in everything
    holding = [
        p
        for p in daemons.state_dir.rglob("*")
        if p.is_file() and WALLET_PASSWORD.encode() in p.read_bytes()
    ]
    assert holding
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in holding)


def test_log_follow_streams_lines_as_they_are_written(daemons: DaemonFactory) -> None:
    """A follower receives the tail, then new lines while KDF keeps writing."""
    binary = daemons.wrapper({"KDF_SIM_LOG_RATE": "20"})
    daemon = daemons.start(daemons.write_config(binary=binary), "--stop-instances-on-exit")
    with daemon.client() as http:
        assert http.post("/v1/instances/main/start", json=startup_config()).status_code == 200
        with sse(http, "/v1/instances/main/logs?tail=1&follow=true") as stream:
            assert stream.status == 200
            first = stream.next(lambda event, _: event == "log", "the tail line")
            lines = {first["line"]}
            while len(lines) < 6:
                lines.add(stream.next(lambda event, _: event == "log", "new log lines")["line"])


def test_follower_sees_a_crash_and_the_restart(daemons: DaemonFactory) -> None:
    """KDF killed while a follower is attached: the stream reports the exit and the restart."""
    daemon = daemons.start(daemons.write_config(), "--stop-instances-on-exit")
    with daemon.client() as http:
        pid = http.post("/v1/instances/main/start", json=startup_config()).json()["pid"]
        with sse(http, "/v1/instances/main/logs?tail=0&follow=true") as stream:
            os.kill(pid, signal.SIGKILL)
            exited = stream.next(lambda e, d: e == "state" and d["kind"] == "exited", "the exit")
            assert exited["exit"]["signal"] == "SIGKILL"
            assert exited["pid"] == pid
            running = stream.next(
                lambda e, d: e == "state" and d["state"] == "running" and d["kind"] == "state",
                "the restart",
            )
            assert running["pid"] != pid
            banner = stream.next(
                lambda e, d: e == "log" and "DEX stats" in d["line"], "the new KDF's banner"
            )
            assert banner["line"]
        status = http.get("/v1/instances/main").json()
        assert status["restarts"] == 1
        assert status["last_exit"]["signal"] == "SIGKILL"


def test_health_sample_and_watch(daemons: DaemonFactory) -> None:
    """One sample on request; a watch stream pushes at once and again on a state change."""
    daemon = daemons.start(
        daemons.write_config(daemon=", health_check_interval: 1h"), "--stop-instances-on-exit"
    )
    with daemon.client(VIEWER_KEY) as viewer, daemon.client() as http:
        http.post("/v1/instances/main/start", json=startup_config())
        sample = viewer.get("/v1/instances/main/health").json()
        assert sample["healthy"] is True
        assert sample["rpc_ok"] is True
        assert sample["rss_bytes"] > 0
        with sse(viewer, "/v1/instances/main/health?watch=true") as stream:
            first = stream.next(lambda e, _: e == "health", "the first sample")
            assert first["state"] == "running"
            http.post("/v1/instances/main/stop")
            stream.next(lambda e, d: e == "health" and d["state"] == "stopped", "the change")


def test_daemon_sigkill_then_restart_readopts_kdf(daemons: DaemonFactory) -> None:
    """Daemon killed with KDF running: the next daemon adopts the same pid, no restart."""
    config = daemons.write_config()
    first = daemons.start(config)
    with first.client() as http:
        pid = http.post("/v1/instances/main/start", json=startup_config()).json()["pid"]
    first.kill()
    assert pid_alive(pid)
    second = daemons.start(config, "--stop-instances-on-exit")
    with second.client() as http:
        status = wait_for(
            lambda: (s := http.get("/v1/instances/main").json())["state"] == "running" and s,
            "the adopted KDF to be running",
        )
        assert status["pid"] == pid
        assert status["restarts"] == 0
        version = http.post("/v1/instances/main/rpc", content=b'{"method":"version"}')
        assert version.status_code == 200
    assert "re-adopted KDF pid" in second.log_text()


def test_sigterm_leaves_kdf_running_unless_asked(daemons: DaemonFactory) -> None:
    """SIGTERM: KDF survives by default; with --stop-instances-on-exit it is stopped."""
    config = daemons.write_config()
    keeper = daemons.start(config)
    with keeper.client() as http:
        pid = http.post("/v1/instances/main/start", json=startup_config()).json()["pid"]
    keeper.terminate()
    assert pid_alive(pid)
    stopper = daemons.start(config, "--stop-instances-on-exit")
    with stopper.client() as http:
        wait_for(lambda: http.get("/v1/instances/main").json()["pid"] == pid, "re-adoption")
    stopper.terminate()
    wait_for(lambda: not pid_alive(pid), "KDF to be stopped with the daemon")
    kill_pid(pid)
