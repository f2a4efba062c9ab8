"""The KDF_SIM_* failure modes, each proven on a real process (docs/architecture.md)."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kdf_remote.sim.harness import RunningSim, spawn_sim, start_sim, wait_until

pytestmark = pytest.mark.integration

ConfigFactory = Callable[..., dict[str, object]]
FLOOD = r"kdf_sim_flood:1\] line "


def _env(**modes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MM_", "KDF_SIM_"))}
    env.update(modes)
    return env


def _flood_count(sim: RunningSim) -> int:
    return len(re.findall(FLOOD, sim.stdout_text()))


def test_version_override(tmp_path: Path, sim_config: ConfigFactory) -> None:
    """KDF_SIM_VERSION changes the banner and the `version` RPC."""
    with start_sim(
        sim_config(), env=_env(KDF_SIM_VERSION="2.6.0-beta_abc1234"), cwd=tmp_path
    ) as sim:
        assert sim.rpc({"method": "version"})[1] == {
            "result": "2.6.0-beta_abc1234",
            "datetime": "2025-07-28T09:40:51+00:00",
        }
        assert "Komodo DeFi Framework 2.6.0-beta_abc1234 DT" in sim.stdout_text()


def test_start_delay_postpones_binding(tmp_path: Path, sim_config: ConfigFactory) -> None:
    """KDF_SIM_START_DELAY: the RPC comes up no earlier than the delay after the banner."""
    before = int(time.time())
    with start_sim(sim_config(), env=_env(KDF_SIM_START_DELAY="1"), cwd=tmp_path) as sim:
        ready = re.search(r"unixtime\.(\d+)", sim.stdout_text())
        assert ready is not None
        assert int(ready.group(1)) >= before + 1
        assert sim.rpc({"method": "version"})[0] == 200


def test_exit_after_with_code(tmp_path: Path, sim_config: ConfigFactory) -> None:
    """KDF_SIM_EXIT_AFTER/KDF_SIM_EXIT_CODE: exits with that code after the RPC was up."""
    env = _env(KDF_SIM_EXIT_AFTER="0.2", KDF_SIM_EXIT_CODE="42")
    with spawn_sim(sim_config(), env=env, cwd=tmp_path) as sim:
        sim.wait_ready()
        assert sim.wait_exit() == 42


def test_exit_after_defaults_to_code_1(tmp_path: Path, sim_config: ConfigFactory) -> None:
    """Without KDF_SIM_EXIT_CODE the exit code is 1."""
    with spawn_sim(sim_config(), env=_env(KDF_SIM_EXIT_AFTER="0"), cwd=tmp_path) as sim:
        sim.wait_ready()
        assert sim.wait_exit() == 1


def test_hang_never_binds(tmp_path: Path, sim_config: ConfigFactory) -> None:
    """KDF_SIM_HANG: banner, then no RPC while time passes (measured by flood lines)."""
    env = _env(KDF_SIM_HANG="1", KDF_SIM_LOG_RATE="40")
    with spawn_sim(sim_config(), env=env, cwd=tmp_path) as sim:
        assert sim.wait_stdout("Komodo DeFi Framework")
        assert wait_until(lambda: _flood_count(sim) >= 20)
        assert "DEX stats" not in sim.stdout_text()
        assert sim.process.poll() is None
        sim.process.send_signal(signal.SIGINT)
        assert sim.wait_exit() == 0


def test_ignore_stop(tmp_path: Path, sim_config: ConfigFactory, rpc_password: str) -> None:
    """KDF_SIM_IGNORE_STOP: `stop` answers success but the node keeps serving."""
    env = _env(KDF_SIM_IGNORE_STOP="1", KDF_SIM_LOG_RATE="40")
    with start_sim(sim_config(), env=env, cwd=tmp_path) as sim:
        assert sim.rpc({"method": "stop", "userpass": rpc_password}) == (200, {"result": "success"})
        seen = _flood_count(sim)
        assert wait_until(lambda: _flood_count(sim) >= seen + 20)
        assert sim.process.poll() is None
        assert sim.rpc({"method": "version"})[0] == 200


def test_ignore_sigint(tmp_path: Path, sim_config: ConfigFactory) -> None:
    """KDF_SIM_IGNORE_SIGINT: SIGINT changes nothing; SIGKILL is then needed."""
    env = _env(KDF_SIM_IGNORE_SIGINT="1", KDF_SIM_LOG_RATE="40")
    with start_sim(sim_config(), env=env, cwd=tmp_path) as sim:
        sim.process.send_signal(signal.SIGINT)
        seen = _flood_count(sim)
        assert wait_until(lambda: _flood_count(sim) >= seen + 20)
        assert sim.process.poll() is None
        assert sim.rpc({"method": "version"})[0] == 200
        sim.process.kill()
        assert sim.wait_exit() == -signal.SIGKILL


def test_log_rate_and_line_size(tmp_path: Path, sim_config: ConfigFactory) -> None:
    """KDF_SIM_LOG_RATE/KDF_SIM_LOG_LINE_BYTES: lines of exactly that many bytes keep coming."""
    env = _env(KDF_SIM_LOG_RATE="200", KDF_SIM_LOG_LINE_BYTES="256")
    with start_sim(sim_config(), env=env, cwd=tmp_path) as sim:
        assert wait_until(lambda: _flood_count(sim) >= 100)
        lines = [
            line for line in sim.stdout_text().splitlines(keepends=True) if "kdf_sim_flood" in line
        ]
        assert all(len(line.encode()) == 256 for line in lines[:100])
        numbers = [int(re.search(r"line (\d+) ", line).group(1)) for line in lines[:100]]  # type: ignore[union-attr]
        assert numbers == list(range(100))


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_grow_memory(tmp_path: Path, sim_config: ConfigFactory) -> None:
    """KDF_SIM_GROW_MEMORY: resident memory keeps growing."""
    env = _env(KDF_SIM_GROW_MEMORY=str(100 * 1024 * 1024))
    with start_sim(sim_config(), env=env, cwd=tmp_path) as sim:
        start = _rss_bytes(sim.pid)
        assert wait_until(lambda: _rss_bytes(sim.pid) >= start + 60 * 1024 * 1024)


def test_request_log(tmp_path: Path, sim_config: ConfigFactory, rpc_password: str) -> None:
    """KDF_SIM_REQUEST_LOG: one JSON line per RPC (batch items too) with method and peer."""
    log = tmp_path / "requests.jsonl"
    with start_sim(sim_config(), env=_env(KDF_SIM_REQUEST_LOG=str(log)), cwd=tmp_path) as sim:
        sim.rpc({"method": "version"})
        sim.rpc(
            [
                {"method": "get_enabled_coins", "userpass": rpc_password},
                {"mmrpc": "2.0", "method": "x"},
            ]
        )
        sim.request("POST", "/", b"not json")
        entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["method"], e["mmrpc"]) for e in entries] == [
        ("version", None),
        ("get_enabled_coins", None),
        ("x", "2.0"),
    ]
    assert all(re.fullmatch(r"127\.0\.0\.1:\d+", e["peer"]) for e in entries)
    assert rpc_password not in log.read_text()
