"""The request pipeline: legacy and v2 shapes, auth, rate limiting, local-only (kdf-facts 2)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdf_remote.sim.config import decode_config
from kdf_remote.sim.kdflog import KdfLog
from kdf_remote.sim.methods import LEGACY_METHODS, V2_METHODS
from kdf_remote.sim.node import Node
from kdf_remote.sim.protocol import Reply, handle_body

pytestmark = pytest.mark.unit

PW = "Unit-Pass-42!"
LOOPBACK = ("127.0.0.1", 50000)
REMOTE = ("203.0.113.9", 50000)


class _Logs(Protocol):
    def err_text(self) -> str: ...


class _Harness(Protocol):
    node: Node
    logs: _Logs

    def call(self, body: object, *, peer: tuple[str, int] = ..., method: str = ...) -> Reply: ...


Factory = Callable[..., _Harness]


def _v2(method: str, **extra: object) -> dict[str, object]:
    return {"mmrpc": "2.0", "method": method, "userpass": PW, **extra}


def test_non_json_body_is_500_with_serde_message(make_node: Factory) -> None:
    """A body that is not JSON gives 500 `{"error": <serde-style message>}`."""
    h = make_node()
    reply = h.call(b"not json")
    assert reply.status == 500
    assert isinstance(reply.payload, dict)
    assert re.fullmatch(r"expected value at line 1 column \d+", reply.payload["error"])
    empty = h.call(b"", method="GET")
    assert empty.status == 500
    assert empty.payload == {"error": "EOF while parsing a value at line 1 column 0"}


def test_non_post_with_json_is_500_only_post(make_node: Factory) -> None:
    """JSON is parsed before the method check; then non-POST is refused with KDF's text."""
    reply = make_node().call({"method": "version"}, method="PUT")
    assert reply.status == 500
    assert isinstance(reply.payload, dict)
    assert reply.payload["error"].endswith("] Only POST requests are supported!")


def test_version_is_public_and_legacy_shaped(make_node: Factory) -> None:
    """`version` needs no userpass and answers `{result, datetime}` with 200."""
    reply = make_node().call({"method": "version", "userpass": "wrong"})
    assert reply.status == 200
    assert reply.payload == {"result": "2.5.1-beta_unit", "datetime": "2025-07-28T09:40:51+00:00"}
    assert reply.json_content_type


def test_version_over_v2_is_no_such_method(make_node: Factory) -> None:
    """`version` is legacy only: with mmrpc 2.0 it is NoSuchMethod (400), id echoed."""
    reply = make_node().call(_v2("version", id=7))
    assert reply.status == 400
    assert reply.payload == {
        "mmrpc": "2.0",
        "error": "No such method",
        "error_path": "dispatcher",
        "error_trace": "dispatcher:122]",
        "error_type": "NoSuchMethod",
        "id": 7,
    }


def test_legacy_missing_and_wrong_userpass(make_node: Factory) -> None:
    """Legacy auth failures are 500 with `Userpass is not set!` / attempts-left messages."""
    h = make_node()
    missing = h.call({"method": "get_enabled_coins"})
    assert missing.status == 500
    assert isinstance(missing.payload, dict)
    assert missing.payload["error"].endswith("] Userpass is not set!")
    wrong = h.call({"method": "get_enabled_coins", "userpass": "nope"})
    assert wrong.status == 500
    assert isinstance(wrong.payload, dict)
    assert wrong.payload["error"].endswith("] Userpass is invalid! - Rate Limit attempts left: 9")


def test_v2_missing_and_wrong_userpass(make_node: Factory) -> None:
    """v2 auth failures are 403 UserpassIsNotSet / UserpassIsInvalid with NbAttemptsLeft data."""
    h = make_node()
    missing = h.call({"mmrpc": "2.0", "method": "get_enabled_coins"})
    assert missing.status == 403
    assert isinstance(missing.payload, dict)
    assert missing.payload["error_type"] == "UserpassIsNotSet"
    assert "error_data" not in missing.payload
    wrong = h.call({"mmrpc": "2.0", "method": "get_enabled_coins", "userpass": "x", "id": 1})
    assert wrong.status == 403
    assert isinstance(wrong.payload, dict)
    assert wrong.payload["error_type"] == "UserpassIsInvalid"
    assert wrong.payload["error"] == "Userpass is invalid! - Rate Limit attempts left: 9"
    assert wrong.payload["error_data"] == {"error_type": "NbAttemptsLeft", "error_data": 9}
    assert wrong.payload["id"] == 1


def test_ten_failures_ban_the_ip_for_good(make_node: Factory) -> None:
    """Attempts left count 9..0; then every request from that IP, even `version`, is banned."""
    h = make_node()
    lefts = []
    for i in range(10):
        body = {"method": "stop", "userpass": "bad"} if i % 2 else _v2("x", userpass="bad")
        reply = h.call(body)
        assert isinstance(reply.payload, dict)
        text = str(reply.payload["error"])
        lefts.append(int(text.rsplit(" ", 1)[1]))
    assert lefts == list(range(9, -1, -1))
    banned_legacy = h.call({"method": "version"})
    assert banned_legacy.status == 500
    assert isinstance(banned_legacy.payload, dict)
    assert banned_legacy.payload["error"].endswith("] Your ip is banned.")
    banned_v2 = h.call(_v2("get_enabled_coins"))
    assert banned_v2.status == 403
    assert isinstance(banned_v2.payload, dict)
    assert banned_v2.payload["error_type"] == "Banned"
    assert banned_v2.payload["error"] == "Your ip is banned."
    other_ip = h.call({"method": "version"}, peer=("127.0.0.2", 1))
    assert other_ip.status == 200


def test_success_does_not_reset_the_counter(make_node: Factory) -> None:
    """A correct userpass between failures does not reset the per-IP count."""
    h = make_node()
    h.call({"method": "get_enabled_coins", "userpass": "bad"})
    assert h.call({"method": "get_enabled_coins", "userpass": PW}).status == 200
    reply = h.call({"method": "get_enabled_coins", "userpass": "bad"})
    assert isinstance(reply.payload, dict)
    assert str(reply.payload["error"]).endswith("attempts left: 8")


def test_rpc_local_only_blocks_remote_non_public(make_node: Factory) -> None:
    """With rpc_local_only (default) a non-loopback client gets only public methods."""
    h = make_node()
    assert h.call({"method": "version"}, peer=REMOTE).status == 200
    legacy = h.call({"method": "get_enabled_coins", "userpass": PW}, peer=REMOTE)
    assert legacy.status == 500
    assert isinstance(legacy.payload, dict)
    assert legacy.payload["error"].endswith(
        "Selected method is not allowed: Selected method can only be called from localhost."
    )
    v2 = h.call(_v2("get_enabled_coins"), peer=REMOTE)
    assert v2.status == 403
    assert isinstance(v2.payload, dict)
    assert v2.payload["error_type"] == "LocalHostOnly"


def test_rpc_local_only_false_allows_remote(make_node: Factory) -> None:
    """`rpc_local_only: false` lets remote clients call protected methods with the userpass."""
    h = make_node(rpc_local_only=False)
    assert h.call(_v2("get_enabled_coins"), peer=REMOTE).status == 200
    assert h.call({"method": "get_enabled_coins", "userpass": PW}, peer=REMOTE).status == 200


def test_ipv6_and_mapped_loopback_count_as_local(make_node: Factory) -> None:
    """::1 and ::ffff:127.0.0.1 are loopback clients."""
    h = make_node()
    for peer in (("::1", 1), ("::ffff:127.0.0.1", 1)):
        assert h.call(_v2("get_enabled_coins"), peer=peer).status == 200


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (_v2("get_enabled_coins", mm2=1), "unknown field `mm2`"),
        ({"mmrpc": "2.0", "userpass": PW}, "missing field `method`"),
        (_v2("get_enabled_coins", id="abc"), "expected usize"),
        (_v2("get_enabled_coins", id=-1), "expected usize"),
        ({"mmrpc": "2.0", "method": 5, "userpass": PW}, "invalid type: integer `5`"),
    ],
)
def test_v2_request_parse_errors_are_400(
    make_node: Factory, body: dict[str, object], fragment: str
) -> None:
    """MmRpcRequest has deny_unknown_fields and typed fields: errors are 400 InvalidRequest."""
    reply = make_node().call(body)
    assert reply.status == 400
    assert isinstance(reply.payload, dict)
    assert reply.payload["error_type"] == "InvalidRequest"
    assert reply.payload["error"].startswith("Error parsing request: ")
    assert fragment in reply.payload["error"]
    assert reply.payload["id"] is None


def test_wrong_mmrpc_version(make_node: Factory) -> None:
    """An mmrpc other than "2.0" is InvalidMmRpcVersion, 400."""
    reply = make_node().call({"mmrpc": "1.0", "method": "get_enabled_coins", "userpass": PW})
    assert reply.status == 400
    assert isinstance(reply.payload, dict)
    assert reply.payload["error_type"] == "InvalidMmRpcVersion"


def test_v2_success_shape(make_node: Factory) -> None:
    """v2 success: `{mmrpc, result, id}`, id null when absent."""
    h = make_node()
    assert h.call(_v2("get_enabled_coins")).payload == {
        "mmrpc": "2.0",
        "result": {"coins": []},
        "id": None,
    }
    assert h.call(_v2("get_enabled_coins", id=42)).payload == {
        "mmrpc": "2.0",
        "result": {"coins": []},
        "id": 42,
    }


def test_v2_unit_request_rejects_params_object(make_node: Factory) -> None:
    """get_enabled_coins' request is a unit struct: `params: {}` fails, `params: null` works."""
    h = make_node()
    assert h.call(_v2("get_enabled_coins", params={})).status == 400
    assert h.call(_v2("get_enabled_coins", params=None)).status == 200


def test_unknown_legacy_method_is_rerouted_to_v2(make_node: Factory) -> None:
    """A legacy call of a v2-only method gets a v2 answer, and KDF's reroute line is logged."""
    h = make_node()
    reply = h.call({"method": "get_wallet_names", "userpass": PW})
    assert reply.status == 200
    assert reply.payload == {
        "mmrpc": "2.0",
        "result": {"wallet_names": [], "activated_wallet": None},
        "id": None,
    }
    assert (
        "Couldn't resolve 'get_wallet_names' RPC using the legacy API, trying v2 (mmrpc: 2.0) "
        "instead." in h.logs.err_text()
    )
    unknown = h.call({"method": "no_such_thing", "userpass": PW})
    assert unknown.status == 400
    assert isinstance(unknown.payload, dict)
    assert unknown.payload["error_type"] == "NoSuchMethod"


def test_batch_returns_array_of_bodies(make_node: Factory) -> None:
    """A JSON array gets an array of per-item bodies with HTTP 200, errors included."""
    h = make_node()
    reply = h.call(
        [
            {"method": "version"},
            _v2("get_enabled_coins", id=3),
            {"method": "get_enabled_coins", "userpass": "bad"},
            _v2("nope"),
        ]
    )
    assert reply.status == 200
    assert isinstance(reply.payload, list)
    assert len(reply.payload) == 4
    assert reply.payload[0]["result"] == "2.5.1-beta_unit"
    assert reply.payload[1] == {"mmrpc": "2.0", "result": {"coins": []}, "id": 3}
    assert reply.payload[2]["error"].endswith("attempts left: 9")
    assert reply.payload[3]["error_type"] == "NoSuchMethod"
    assert h.call([]).payload == []


def test_missing_rpc_password_v2_compares_empty(make_node: Factory) -> None:
    """Without rpc_password the v2 path compares against "" and legacy rejects every call."""
    h = make_node(rpc_password=None)
    assert h.call({"mmrpc": "2.0", "method": "get_enabled_coins", "userpass": ""}).status == 200
    assert "'rpc_password' is not set in the config" in h.logs.err_text()
    legacy = h.call({"method": "get_enabled_coins", "userpass": ""})
    assert legacy.status == 500


def test_peer_id_with_p2p_disabled_aborts(make_node: Factory) -> None:
    """get_my_peer_id panics in KDF when P2P is off: 500 `The RPC service aborted...`."""
    reply = make_node().call({"method": "get_my_peer_id", "userpass": PW})
    assert reply.status == 500
    assert reply.payload == {"error": "The RPC service aborted without responding."}


def test_peer_id_with_p2p(make_node: Factory) -> None:
    """With P2P on (seednodes), get_my_peer_id returns the libp2p peer id."""
    h = make_node(passphrase="seed words", disable_p2p=None, seednodes=["seed01.kmdefi.net"])
    reply = h.call({"method": "get_my_peer_id", "userpass": PW})
    assert reply.status == 200
    assert isinstance(reply.payload, dict)
    assert str(reply.payload["result"]).startswith("12D3KooW")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=8,
)


@given(_JSON)
def test_any_json_gets_a_kdf_shaped_answer(value: object) -> None:
    """Whatever JSON arrives, the answer is legacy- or v2-shaped with a KDF status code."""
    config = decode_config({"rpc_password": PW, "disable_p2p": True}, [])
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        node = Node(
            config=config,
            version="v",
            datetime="d",
            log=KdfLog(mm_log=None, rust_log=None, stdout_fd=devnull, stderr_fd=devnull),
            db_root=Path("/nonexistent-kdf-sim"),
            identity=None,
            peer_id="p",
        )
        body = json.dumps(value).encode()
        reply = handle_body(node, LEGACY_METHODS, V2_METHODS, "POST", body, peer=LOOPBACK)
    finally:
        os.close(devnull)
    assert reply.status in (200, 400, 403, 500)
    items = reply.payload if isinstance(value, list) else [reply.payload]
    assert isinstance(items, list)
    for item in items:
        assert isinstance(item, dict)
        assert "result" in item or "error" in item
