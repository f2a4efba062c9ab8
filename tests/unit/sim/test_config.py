"""Config and coins resolution, password policy, P2P precheck, RPC address (kdf-facts 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdf_remote.sim.config import (
    DEFAULT_RPC_PORT,
    PanicError,
    StartupError,
    check_password,
    check_rpc_password,
    decode_config,
    load_coins,
    load_config_json,
    p2p_precheck,
    resolve_rpc_addr,
)

pytestmark = pytest.mark.unit


def _write(path: Path, value: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    return path


def test_argv_config_wins_over_files(tmp_path: Path) -> None:
    """argv[1] is the JSON text itself and is used instead of any config file."""
    conf = _write(tmp_path / "env.json", {"from": "env"})
    _write(tmp_path / "MM2.json", {"from": "cwd"})
    env = {"MM_CONF_PATH": str(conf), "HOME": str(tmp_path)}
    assert load_config_json('{"from": "argv"}', env, tmp_path) == {"from": "argv"}


def test_config_file_order(tmp_path: Path) -> None:
    """MM_CONF_PATH, then ./MM2.json, then ~/.kdf/MM2.json."""
    home = tmp_path / "home"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    _write(home / ".kdf" / "MM2.json", {"from": "home"})
    env = {"HOME": str(home)}
    assert load_config_json(None, env, cwd) == {"from": "home"}
    _write(cwd / "MM2.json", {"from": "cwd"})
    assert load_config_json(None, env, cwd) == {"from": "cwd"}
    conf = _write(tmp_path / "x.json", {"from": "env"})
    assert load_config_json(None, {**env, "MM_CONF_PATH": str(conf)}, cwd) == {"from": "env"}


def test_config_file_errors(tmp_path: Path) -> None:
    """Missing file, directory and bad JSON give KDF's messages; content is never echoed."""
    env = {"HOME": str(tmp_path)}
    with pytest.raises(StartupError, match=r"^File '.*/\.kdf/MM2\.json' is not present\.$"):
        load_config_json(None, env, tmp_path / "nowhere")
    with pytest.raises(StartupError, match="is a directory"):
        load_config_json(None, {**env, "MM_CONF_PATH": str(tmp_path)}, tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"passphrase": "secret words"')
    with pytest.raises(StartupError) as err:
        load_config_json(None, {**env, "MM_CONF_PATH": str(bad)}, tmp_path)
    assert str(err.value) == "Couldn't parse mm2 config to JSON format!"
    with pytest.raises(StartupError, match="Couldn't parse mm2 config"):
        load_config_json("{not json", env, tmp_path)


def test_missing_env_conf_path_is_an_error(tmp_path: Path) -> None:
    """An MM_CONF_PATH that does not exist is an error, not a fall-through."""
    _write(tmp_path / "MM2.json", {})
    env = {"HOME": str(tmp_path), "MM_CONF_PATH": str(tmp_path / "missing.json")}
    with pytest.raises(StartupError, match=r"missing\.json' is not present"):
        load_config_json(None, env, tmp_path)


def test_coins_sources(tmp_path: Path) -> None:
    """Inline `coins` wins; else MM_COINS_PATH, ./coins, ~/.kdf/coins."""
    home = tmp_path / "home"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {"HOME": str(home)}
    assert load_coins({"coins": [{"coin": "A"}]}, env, cwd) == [{"coin": "A"}]
    _write(home / ".kdf" / "coins", [{"coin": "HOME"}])
    assert load_coins({}, env, cwd) == [{"coin": "HOME"}]
    _write(cwd / "coins", [{"coin": "CWD"}])
    assert load_coins({}, env, cwd) == [{"coin": "CWD"}]
    path = _write(tmp_path / "c.json", [{"coin": "ENV"}])
    assert load_coins({}, {**env, "MM_COINS_PATH": str(path)}, cwd) == [{"coin": "ENV"}]


def test_coins_errors(tmp_path: Path) -> None:
    """Missing, empty and invalid coins files give KDF's messages."""
    env = {"HOME": str(tmp_path)}
    with pytest.raises(StartupError, match=r"\.kdf/coins' is not present\."):
        load_coins({}, env, tmp_path)
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(StartupError, match=r"No coins are set in JSON config and '.*empty'"):
        load_coins({}, {**env, "MM_COINS_PATH": str(empty)}, tmp_path)
    bad = tmp_path / "bad"
    bad.write_text("[{")
    with pytest.raises(StartupError, match="parsing the coins file, please ensure it contains"):
        load_coins({}, {**env, "MM_COINS_PATH": str(bad)}, tmp_path)


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("MyPassword1!", "Password can't contain the word password"),
        ("Ab1!", "Password length should be at least 8 characters long"),
        ("Abcdefg!", "Password should contain at least 1 digit"),
        ("ABCDEF1!", "Password should contain at least 1 lowercase character"),
        ("abcdef1!", "Password should contain at least 1 uppercase character"),
        ("Abcdef12", "Password should contain at least 1 special character"),
        ("Abc1!aaa", "Password can't contain the same character 3 times in a row"),
        ("Abc1!aab", None),
        ("Aé1!xxyz" * 6, None),
    ],
)
def test_password_policy(password: str, message: str | None) -> None:
    """KDF's rules, in order, first failure wins; no maximum length."""
    assert check_password(password) == message


def test_rpc_password_checks() -> None:
    """Non-string and empty rpc_password are errors; weak ones only without allow_weak_password."""
    with pytest.raises(StartupError, match=r"^rpc_password must be string$"):
        check_rpc_password({"rpc_password": 5})
    with pytest.raises(StartupError, match=r"^rpc_password must not be empty$"):
        check_rpc_password({"rpc_password": "", "allow_weak_password": True})
    with pytest.raises(StartupError, match="at least 8"):
        check_rpc_password({"rpc_password": "weak"})
    check_rpc_password({"rpc_password": "weak", "allow_weak_password": True})
    check_rpc_password({})


def test_defaults() -> None:
    """rpcip 127.0.0.1, rpc_local_only true, rpccors localhost:3000 (https variant)."""
    config = decode_config({}, [])
    assert config.rpcip == "127.0.0.1"
    assert config.rpc_local_only is True
    assert config.rpccors == "http://localhost:3000"
    assert decode_config({"https": True}, []).rpccors == "https://localhost:3000"
    assert decode_config({"rpc_local_only": "no"}, []).rpc_local_only is True
    assert resolve_rpc_addr(config) == ("127.0.0.1", DEFAULT_RPC_PORT)


def test_coin_entries() -> None:
    """Coins keep ticker, protocol type and pubtype; malformed entries are skipped."""
    coins = decode_config(
        {}, [{"coin": "KMD", "pubtype": 60}, {"coin": "ETH", "protocol": {"type": "ETH"}}, 5, {}]
    ).coins
    assert [(c.ticker, c.protocol, c.pubtype, c.is_utxo) for c in coins] == [
        ("KMD", "UTXO", 60, True),
        ("ETH", "ETH", 0, False),
    ]


@pytest.mark.parametrize(
    ("conf", "expected"),
    [
        ({"rpcport": 0}, ("127.0.0.1", 0)),
        ({"rpcport": "8000"}, ("127.0.0.1", 8000)),
        ({"rpcport": 1024, "rpcip": "0.0.0.0"}, ("0.0.0.0", 1024)),
        ({"rpcport": 65535, "rpcip": "::1"}, ("::1", 65535)),
    ],
)
def test_rpc_addr_accepted(conf: dict[str, object], expected: tuple[str, int]) -> None:
    """0 means ephemeral; numeric strings are accepted; IPv6 literals too."""
    assert resolve_rpc_addr(decode_config(conf, [])) == expected


@pytest.mark.parametrize(
    ("conf", "fragment"),
    [
        ({"rpcport": 1}, "rpcport < 1024"),
        ({"rpcport": 1023}, "rpcport < 1024"),
        ({"rpcport": 65536}, "rpcport > u16"),
        ({"rpcport": -5}, "Expected a positive integer"),
        ({"rpcport": "abc"}, "Expected a positive integer"),
        ({"rpcip": "localhost"}, "invalid IP address syntax"),
    ],
)
def test_rpc_addr_rejected_by_panic(conf: dict[str, object], fragment: str) -> None:
    """Bad ports and host names panic in spawn_rpc (`Invalid RPC port`, exit 101)."""
    with pytest.raises(PanicError, match="Invalid RPC port") as err:
        resolve_rpc_addr(decode_config(conf, []))
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    ("conf", "identity", "reason"),
    [
        ({}, False, "Bootstrap node must also be a seed node."),
        ({"seednodes": []}, False, "Bootstrap node must also be a seed node."),
        (
            {"is_bootstrap_node": True, "i_am_seed": True, "seednodes": ["a"]},
            True,
            "Bootstrap node cannot have seed nodes to connect.",
        ),
        (
            {"disable_p2p": True, "seednodes": ["a"]},
            False,
            "Cannot disable P2P while seed nodes are configured.",
        ),
        (
            {"disable_p2p": True, "p2p_in_memory": True},
            False,
            "Cannot disable P2P while using in-memory P2P mode.",
        ),
        ({"disable_p2p": True, "i_am_seed": True}, False, "Seed nodes cannot disable P2P."),
        (
            {"disable_p2p": False, "is_bootstrap_node": False},
            False,
            "Non-bootstrap node must have seed nodes configured to connect.",
        ),
        (
            {"i_am_seed": True, "seednodes": ["a"]},
            False,
            "Seed node requires a persistent identity to generate its P2P key.",
        ),
    ],
)
def test_p2p_precheck_failures(conf: dict[str, object], identity: bool, reason: str) -> None:
    """Each precheck failure aborts with `P2P initializing error: 'Precheck failed: '...''`."""
    with pytest.raises(StartupError) as err:
        p2p_precheck(decode_config(conf, []), identity)
    assert str(err.value) == f"P2P initializing error: 'Precheck failed: '{reason}''"


@pytest.mark.parametrize(
    "conf",
    [
        {"disable_p2p": True},
        {"seednodes": ["seed01.kmdefi.net"], "netid": 8762},
        {"i_am_seed": True, "is_bootstrap_node": True},
    ],
)
def test_p2p_precheck_passes(conf: dict[str, object]) -> None:
    """disable_p2p without seeds, seednodes with a netid, and a bootstrap seed are accepted."""
    p2p_precheck(decode_config(conf, []), has_identity=True)


def test_netid_limits() -> None:
    """Netid 7777 is deprecated and netids above 14428 are refused."""
    with pytest.raises(StartupError, match="deprecated"):
        p2p_precheck(decode_config({"netid": 7777, "disable_p2p": True}, []), False)
    with pytest.raises(StartupError, match="larger than max 14428"):
        p2p_precheck(decode_config({"netid": 14429, "disable_p2p": True}, []), False)
    p2p_precheck(decode_config({"netid": 14428, "disable_p2p": True}, []), False)
    with pytest.raises(PanicError):
        decode_config({"netid": 70000}, [])
