"""Start-up via the real executable: config sources, validation, MM_LOG, dbdir (facts 1, 3)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from kdf_remote.sim.harness import RunningSim, spawn_sim, wait_until

pytestmark = pytest.mark.integration

ConfigFactory = Callable[..., dict[str, object]]


def _clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MM_", "KDF_SIM_"))}
    env["HOME"] = str(home)
    env.update(extra)
    return env


def _run_to_exit(
    args: list[str], cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kdf_remote.sim", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_config_from_argv(tmp_path: Path, sim_config: ConfigFactory) -> None:
    """argv[1] holds the JSON config text (the SDK's way)."""
    env = _clean_env(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "kdf_remote.sim", json.dumps(sim_config())],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    with RunningSim(process, tmp_path) as sim:
        sim.wait_ready()
        assert sim.rpc({"method": "version"})[0] == 200


@pytest.mark.parametrize("place", ["cwd", "home"])
def test_config_from_default_files(tmp_path: Path, sim_config: ConfigFactory, place: str) -> None:
    """Without argv or MM_CONF_PATH, ./MM2.json then ~/.kdf/MM2.json are read."""
    home = tmp_path / "home"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    target = cwd / "MM2.json" if place == "cwd" else home / ".kdf" / "MM2.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(sim_config()))
    with spawn_sim(None, env=_clean_env(home), cwd=cwd, keep_home=True) as sim:
        sim.wait_ready()
        assert sim.rpc({"method": "version"})[0] == 200


def test_coins_from_mm_coins_path(
    tmp_path: Path, sim_config: ConfigFactory, rpc_password: str
) -> None:
    """Without a `coins` key the coins file comes from MM_COINS_PATH."""
    coins = tmp_path / "coins.json"
    coins.write_text(json.dumps([{"coin": "DOC", "pubtype": 60}]))
    config = sim_config(passphrase="words for coins")
    del config["coins"]
    env = _clean_env(tmp_path, MM_COINS_PATH=str(coins))
    with spawn_sim(config, env=env, cwd=tmp_path) as sim:
        sim.wait_ready()
        enable = {"method": "electrum", "coin": "DOC", "servers": [], "userpass": rpc_password}
        assert sim.rpc(enable)[0] == 200


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"rpc_password": "short"}, "Password length should be at least 8 characters long"),
        ({"rpc_password": ""}, "rpc_password must not be empty"),
        ({"rpc_password": 12345678}, "rpc_password must be string"),
        ({"disable_p2p": None}, "P2P initializing error: 'Precheck failed: 'Bootstrap node"),
        ({"wallet_name": "w"}, "The 'wallet_password' field not found in the config"),
    ],
)
def test_startup_errors_exit_1_with_message(
    tmp_path: Path, sim_config: ConfigFactory, overrides: dict[str, object], message: str
) -> None:
    """Start-up errors are logged on stdout after the banner and exit with code 1; no RPC."""
    config = {k: v for k, v in sim_config(**overrides).items() if v is not None}
    result = _run_to_exit([json.dumps(config)], tmp_path, _clean_env(tmp_path))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert "Komodo DeFi Framework" in lines[0]
    assert lines[-1].endswith("] " + message) or message in lines[-1]
    assert "DEX stats" not in result.stdout


def test_weak_password_allowed(tmp_path: Path, sim_config: ConfigFactory) -> None:
    """allow_weak_password skips the policy."""
    config = sim_config(rpc_password="weak", allow_weak_password=True)
    with spawn_sim(config, env=_clean_env(tmp_path), cwd=tmp_path) as sim:
        sim.wait_ready()
        assert sim.rpc({"method": "get_enabled_coins", "userpass": "weak"})[0] == 200


def test_missing_config_file(tmp_path: Path) -> None:
    """No config anywhere: `File '~/.kdf/MM2.json' is not present.`, exit 1."""
    result = _run_to_exit([], tmp_path, _clean_env(tmp_path))
    assert result.returncode == 1
    assert f"File '{tmp_path}/.kdf/MM2.json' is not present." in result.stdout


def test_bad_json_is_not_echoed(tmp_path: Path) -> None:
    """Invalid JSON config: KDF's message, without the (possibly secret) content."""
    result = _run_to_exit(['{"passphrase": "very secret words"'], tmp_path, _clean_env(tmp_path))
    assert result.returncode == 1
    assert "Couldn't parse mm2 config to JSON format!" in result.stdout
    assert "very secret" not in result.stdout + result.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    """An unknown flag is a clap usage error: exit 2."""
    result = _run_to_exit(["--frobnicate"], tmp_path, _clean_env(tmp_path))
    assert result.returncode == 2
    assert "unexpected argument '--frobnicate'" in result.stderr


def test_bad_failure_mode_variable_exits_2(tmp_path: Path) -> None:
    """A malformed KDF_SIM_* variable is refused before anything starts."""
    result = _run_to_exit(["--version"], tmp_path, _clean_env(tmp_path, KDF_SIM_HANG="perhaps"))
    assert result.returncode == 2
    assert "KDF_SIM_HANG" in result.stderr


def test_mm_log_file_receives_stdout_lines(tmp_path: Path, sim_config: ConfigFactory) -> None:
    """With MM_LOG=*.log the banner and readiness line go to the file; stderr keeps env lines."""
    log_file = tmp_path / "kdf.log"
    env = _clean_env(tmp_path, MM_LOG=str(log_file))
    with spawn_sim(sim_config(), env=env, cwd=tmp_path) as sim:
        assert sim.wait_stderr(r"INFO Version: ")
        assert wait_until(lambda: log_file.exists() and "DEX stats" in log_file.read_text())
        text = log_file.read_text()
        assert "Komodo DeFi Framework 2.5.1-beta_kdfsim0" in text
        assert ">>>>>>>>>> DEX stats 127.0.0.1:" in text
        assert "INFO Version: " in text
        assert "DEX stats" not in sim.stdout_text()


def test_no_login_creates_only_the_db_root(tmp_path: Path, sim_config: ConfigFactory) -> None:
    """Without a passphrase the DB root is created but no wallet dirs (no-login mode)."""
    dbdir = tmp_path / "db"
    with spawn_sim(sim_config(dbdir=str(dbdir)), env=_clean_env(tmp_path), cwd=tmp_path) as sim:
        sim.wait_ready()
        assert dbdir.is_dir()
        assert list(dbdir.iterdir()) == []


def test_passphrase_creates_wallet_dir_with_sqlite(
    tmp_path: Path, sim_config: ConfigFactory
) -> None:
    """With a passphrase the per-wallet dir holds a real SQLite MM2.db and KDF's subdirs."""
    config = sim_config(passphrase="words for db")
    env = _clean_env(tmp_path)
    with spawn_sim(config, env=env, cwd=tmp_path) as sim:
        sim.wait_ready()
        root = tmp_path / ".kdf" / "DB"
        databases = list(root.glob("*/MM2.db"))
        assert len(databases) == 1
        wallet_dir = databases[0].parent
        assert len(wallet_dir.name) == 40
        assert (wallet_dir / "SWAPS" / "STATS" / "TAKER").is_dir()
        connection = sqlite3.connect(databases[0])
        try:
            assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        finally:
            connection.close()
        assert len(list(root.glob("*/MM2-shared.db"))) == 1


def test_local_db_dir_is_preferred(tmp_path: Path, sim_config: ConfigFactory) -> None:
    """An existing ./DB is the DB root when dbdir is not set."""
    (tmp_path / "DB").mkdir()
    config = sim_config(passphrase="words for local db")
    with spawn_sim(config, env=_clean_env(tmp_path / "home"), cwd=tmp_path, keep_home=True) as sim:
        sim.wait_ready()
        assert len(list((tmp_path / "DB").glob("*/MM2.db"))) == 1
