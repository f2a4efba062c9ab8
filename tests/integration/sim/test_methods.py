"""The RPC methods over HTTP, against a running kdf-sim (kdf-facts 2.5, 6.7)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from kdf_remote.sim.harness import RunningSim, start_sim

pytestmark = pytest.mark.integration

ConfigFactory = Callable[..., dict[str, object]]
WALLET_PW = "Wallet-Pass-9!"


def _legacy(method: str, userpass: str, **params: object) -> dict[str, object]:
    return {"method": method, "userpass": userpass, **params}


def _v2(method: str, userpass: str, params: object = None) -> dict[str, object]:
    body: dict[str, object] = {"mmrpc": "2.0", "method": method, "userpass": userpass}
    if params is not None:
        body["params"] = params
    return body


def test_no_login_enabled_coins_is_empty(sim: RunningSim, rpc_password: str) -> None:
    """In no-login mode get_enabled_coins works and is empty (legacy and v2)."""
    assert sim.rpc(_legacy("get_enabled_coins", rpc_password)) == (200, {"result": []})
    assert sim.rpc(_v2("get_enabled_coins", rpc_password)) == (
        200,
        {"mmrpc": "2.0", "result": {"coins": []}, "id": None},
    )


def test_enable_requires_a_passphrase(sim: RunningSim, rpc_password: str) -> None:
    """Without a passphrase there is no key to derive an address from: activation fails."""
    status, body = sim.rpc(_legacy("electrum", rpc_password, coin="KMD", servers=[]))
    assert status == 500
    assert isinstance(body, dict)
    assert "crypto context" in str(body["error"])


def test_activation_then_enabled_coins_and_balance(
    wallet_sim: RunningSim, rpc_password: str
) -> None:
    """electrum/enable activate listed coins, which then show in get_enabled_coins and balances."""
    status, kmd = wallet_sim.rpc(
        _legacy("electrum", rpc_password, coin="KMD", servers=[{"url": "e:1"}])
    )
    assert status == 200
    assert isinstance(kmd, dict)
    assert kmd["result"] == "success"
    assert str(kmd["address"]).startswith("R")
    status, eth = wallet_sim.rpc(_legacy("enable", rpc_password, coin="ETH", urls=["http://node"]))
    assert status == 200
    assert isinstance(eth, dict)
    assert str(eth["address"]).startswith("0x")
    assert wallet_sim.rpc(_legacy("get_enabled_coins", rpc_password)) == (
        200,
        {
            "result": [
                {"ticker": "KMD", "address": kmd["address"]},
                {"ticker": "ETH", "address": eth["address"]},
            ]
        },
    )
    status, v2 = wallet_sim.rpc(_v2("get_enabled_coins", rpc_password))
    assert isinstance(v2, dict)
    assert v2["result"] == {"coins": [{"ticker": "KMD"}, {"ticker": "ETH"}]}
    assert wallet_sim.rpc(_legacy("my_balance", rpc_password, coin="KMD")) == (
        200,
        {"address": kmd["address"], "balance": "0", "unspendable_balance": "0", "coin": "KMD"},
    )


def test_activation_errors(wallet_sim: RunningSim, rpc_password: str) -> None:
    """Unknown coins, double activation and balances of inactive coins are legacy 500 errors."""
    status, body = wallet_sim.rpc(_legacy("electrum", rpc_password, coin="BTC", servers=[]))
    assert status == 500
    assert "not found in the coins config" in str(body)
    assert wallet_sim.rpc(_legacy("electrum", rpc_password, coin="KMD", servers=[]))[0] == 200
    status, body = wallet_sim.rpc(_legacy("electrum", rpc_password, coin="KMD", servers=[]))
    assert status == 500
    assert "already initialized" in str(body)
    status, body = wallet_sim.rpc(_legacy("my_balance", rpc_password, coin="ETH"))
    assert status == 500
    assert "No such coin: ETH" in str(body)


def test_addresses_are_deterministic(
    tmp_path: Path, sim_config: ConfigFactory, rpc_password: str
) -> None:
    """The same passphrase gives the same address in a later process."""
    addresses = []
    for run in range(2):
        config = sim_config(passphrase="stable words", dbdir=str(tmp_path / f"db{run}"))
        with start_sim(config, cwd=tmp_path) as sim:
            _, body = sim.rpc(_legacy("electrum", rpc_password, coin="KMD", servers=[]))
            assert isinstance(body, dict)
            addresses.append(body["address"])
    assert addresses[0] == addresses[1]


def test_show_priv_key_is_fake(wallet_sim: RunningSim, rpc_password: str) -> None:
    """show_priv_key answers obviously fake key material for an enabled coin."""
    wallet_sim.rpc(_legacy("electrum", rpc_password, coin="KMD", servers=[]))
    status, body = wallet_sim.rpc(_legacy("show_priv_key", rpc_password, coin="KMD"))
    assert status == 200
    assert isinstance(body, dict)
    assert body["result"]["coin"] == "KMD"
    assert body["result"]["priv_key"].startswith("kdfsim-fake-privkey-")


def test_named_wallet_mnemonic_and_wallet_names(
    tmp_path: Path, sim_config: ConfigFactory, rpc_password: str
) -> None:
    """A named wallet: get_wallet_names lists it; get_mnemonic needs the wallet password."""
    config = sim_config(wallet_name="alice", wallet_password=WALLET_PW, dbdir=str(tmp_path / "db"))
    with start_sim(config, cwd=tmp_path) as sim:
        assert (tmp_path / "db" / "alice.json").is_file()
        status, body = sim.rpc(_v2("get_wallet_names", rpc_password))
        assert status == 200
        assert isinstance(body, dict)
        assert body["result"] == {"wallet_names": ["alice"], "activated_wallet": "alice"}
        status, body = sim.rpc(
            _v2("get_mnemonic", rpc_password, {"format": "plaintext", "password": WALLET_PW})
        )
        assert status == 200
        assert isinstance(body, dict)
        assert body["result"]["format"] == "plaintext"
        assert body["result"]["mnemonic"].startswith("kdfsim fake mnemonic ")
        status, body = sim.rpc(
            _v2("get_mnemonic", rpc_password, {"format": "plaintext", "password": "nope"})
        )
        assert status == 400
        status, body = sim.rpc(_v2("get_mnemonic", rpc_password, {"format": "encrypted"}))
        assert status == 200
        assert isinstance(body, dict)
        assert set(body["result"]["encrypted_mnemonic_data"]) >= {"iv", "ciphertext", "tag"}


def test_peer_id_with_p2p_config(
    tmp_path: Path, sim_config: ConfigFactory, rpc_password: str
) -> None:
    """With seednodes + netid (P2P on), get_my_peer_id returns a 12D3KooW... id."""
    config = sim_config(disable_p2p=False, seednodes=["seed01.kmdefi.net"], passphrase="p2p words")
    with start_sim(config, cwd=tmp_path) as sim:
        status, body = sim.rpc(_legacy("get_my_peer_id", rpc_password))
        assert status == 200
        assert isinstance(body, dict)
        assert str(body["result"]).startswith("12D3KooW")
        assert "P2P is disabled" not in sim.stderr_text()


def test_wrong_userpass_bans_after_ten(sim: RunningSim) -> None:
    """Over HTTP: ten wrong userpasses ban 127.0.0.1, after which even `version` fails."""
    for left in range(9, -1, -1):
        status, body = sim.rpc(_legacy("get_enabled_coins", "wrong"))
        assert status == 500
        assert str(body).endswith(f"attempts left: {left}'}}")
    status, body = sim.rpc({"method": "version"})
    assert status == 500
    assert "Your ip is banned." in str(body)


def test_v2_error_statuses_over_http(sim: RunningSim, rpc_password: str) -> None:
    """Over HTTP: v2 auth errors are 403, parse errors and unknown methods 400, id echoed."""
    status, body = sim.rpc({"mmrpc": "2.0", "method": "get_enabled_coins", "id": 4})
    assert status == 403
    assert isinstance(body, dict)
    assert (body["error_type"], body["id"]) == ("UserpassIsNotSet", 4)
    status, body = sim.rpc({**_v2("get_enabled_coins", rpc_password), "mm2": 1})
    assert status == 400
    assert isinstance(body, dict)
    assert body["error_type"] == "InvalidRequest"
    status, body = sim.rpc({**_v2("version", rpc_password), "id": 5})
    assert status == 400
    assert isinstance(body, dict)
    assert (body["error_type"], body["id"]) == ("NoSuchMethod", 5)
    status, body = sim.rpc({"method": "get_wallet_names", "userpass": rpc_password})
    assert status == 200
    assert isinstance(body, dict)
    assert body["mmrpc"] == "2.0"
    assert sim.wait_stderr(r"Couldn't resolve 'get_wallet_names' RPC using the legacy API")
