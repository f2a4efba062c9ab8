"""kdf-sim as a process: start-up, readiness, stop, signals, exit codes (kdf-facts 1, 3)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from kdf_remote.sim.harness import RunningSim, spawn_sim, start_sim

pytestmark = pytest.mark.integration

ConfigFactory = Callable[..., dict[str, object]]


def test_version_flag_prints_kdf_format() -> None:
    """`--version` prints `Komodo DeFi Framework: <version>` and exits 0."""
    result = subprocess.run(
        [sys.executable, "-m", "kdf_remote.sim", "--version"],
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0
    assert result.stdout == b"Komodo DeFi Framework: 2.5.1-beta_kdfsim0\n"


def test_start_version_stop_exits_zero(sim: RunningSim, rpc_password: str) -> None:
    """The basic path: readiness line, `version` without auth, `stop` answers success, exit 0."""
    status, body = sim.rpc({"method": "version"})
    assert status == 200
    assert body == {"result": "2.5.1-beta_kdfsim0", "datetime": "2025-07-28T09:40:51+00:00"}
    status, body = sim.rpc({"method": "stop", "userpass": rpc_password})
    assert (status, body) == (200, {"result": "success"})
    assert sim.wait_exit() == 0


def test_banner_then_readiness_line_on_stdout(sim: RunningSim) -> None:
    """stdout carries the banner first, then the dashboard readiness line with the bound port."""
    lines = sim.stdout_text().splitlines()
    assert "] Komodo DeFi Framework 2.5.1-beta_kdfsim0 DT " in lines[0]
    ready = [line for line in lines if ">>>>>>>>>> DEX stats " in line]
    assert len(ready) == 1
    assert ready[0].startswith("\U0001f609 ")
    assert f"DEX stats 127.0.0.1:{sim.port} DEX stats API enabled at unixtime." in ready[0]
    assert ready[0].endswith(" <<<<<<<<<")
    assert sim.wait_stderr(r"\] INFO Version: 2\.5\.1-beta_kdfsim0 DT ")
    assert sim.wait_stderr(r"\] WARN P2P is disabled\.")


def test_sigint_is_graceful(sim: RunningSim) -> None:
    """SIGINT logs KDF's shutdown line and exits 0."""
    sim.process.send_signal(signal.SIGINT)
    assert sim.wait_exit() == 0
    assert "Wrapping things up and shutting down..." in sim.stdout_text()


def test_sigterm_is_not_handled(sim: RunningSim) -> None:
    """SIGTERM kills the process by the default action, as KDF installs no handler."""
    sim.process.send_signal(signal.SIGTERM)
    assert sim.wait_exit() == -signal.SIGTERM
    assert "Wrapping things up" not in sim.stdout_text()


def test_busy_port_panics_with_101(tmp_path: Path, sim_config: ConfigFactory) -> None:
    """A port already in use makes kdf-sim panic with KDF's bind message and exit 101."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        with spawn_sim(sim_config(rpcport=port), cwd=tmp_path) as sim:
            assert sim.wait_exit() == 101
            assert f"Failed to bind rpc server on 127.0.0.1:{port}: " in sim.stdout_text()
            assert "Address already in use" in sim.stdout_text()
    finally:
        holder.close()


@pytest.mark.parametrize("port", [1, 80, 1023])
def test_privileged_rpcport_is_rejected(
    tmp_path: Path, sim_config: ConfigFactory, port: int
) -> None:
    """rpcport 1-1023 is rejected in spawn_rpc: `Invalid RPC port` panic, exit 101."""
    with spawn_sim(sim_config(rpcport=port), cwd=tmp_path) as sim:
        assert sim.wait_exit() == 101
        assert "Invalid RPC port" in sim.stdout_text()
        assert "rpcport < 1024" in sim.stdout_text()


def test_fixed_port_and_numeric_string(tmp_path: Path, sim_config: ConfigFactory) -> None:
    """A numeric-string rpcport is accepted and bound as given."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with start_sim(sim_config(rpcport=str(port)), cwd=tmp_path) as sim:
        assert sim.port == port
        assert sim.rpc({"method": "version"})[0] == 200
