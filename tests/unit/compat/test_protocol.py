"""KDF's wire shapes as the kdf_compat listener reads and writes them (pure functions)."""

from __future__ import annotations

import json
import re

import pytest

from kdf_remote.daemon.compat.protocol import (
    DEFAULT_DENY_METHODS,
    BatchMismatchError,
    JsonBodyError,
    Refusal,
    Reply,
    RpcCall,
    forwarded_batch,
    judge,
    merge_batch,
    parse_request,
    refusal_reply,
)

pytestmark = pytest.mark.unit

PASSWORD = "Right-Pass-42!x"


def _ok(given: str) -> bool:
    return given == PASSWORD


def test_parse_legacy_v2_and_batch() -> None:
    """A flat object is legacy, ``mmrpc`` makes it v2, an array is a batch of both."""
    legacy = parse_request(b'{"method":"my_balance","coin":"KMD","userpass":"x"}')
    assert not legacy.batch
    assert legacy.calls == (RpcCall(method="my_balance", v2=False, userpass="x", request_id=None),)
    v2 = parse_request(b'{"mmrpc":"2.0","method":"get_enabled_coins","id":7}')
    assert v2.calls == (RpcCall(method="get_enabled_coins", v2=True, userpass=None, request_id=7),)
    batch = parse_request(b'[{"method":"version"}, 5, {"mmrpc":null,"method":"stop"}]')
    assert batch.batch
    assert [(c.method, c.v2) for c in batch.calls] == [
        ("version", False),
        (None, False),
        ("stop", False),
    ]


def test_non_string_fields_read_as_missing() -> None:
    """A non-string method or userpass is treated as absent; a negative or bool id as null."""
    (call,) = parse_request(b'{"mmrpc":"2.0","method":1,"userpass":2,"id":-1}').calls
    assert call == RpcCall(method=None, v2=True, userpass=None, request_id=None)
    assert call.public
    (flag,) = parse_request(b'{"mmrpc":"2.0","method":"x","id":true}').calls
    assert flag.request_id is None


def test_an_empty_body_gets_serde_eof_message() -> None:
    """An empty body (KDF's answer to a plain ``GET /``) is serde's EOF error."""
    with pytest.raises(JsonBodyError) as caught:
        parse_request(b"")
    assert caught.value.message == "EOF while parsing a value at line 1 column 0"


@pytest.mark.parametrize("body", [b'{"method"', b"nope", b"[1,]", b"{}\n x", b"\xff"])
def test_non_json_bodies_get_serde_style_messages(body: bytes) -> None:
    """Any other non-JSON body gets a serde-style message naming a line and a column."""
    with pytest.raises(JsonBodyError) as caught:
        parse_request(body)
    assert re.fullmatch(
        r"(EOF while parsing a value|expected value|trailing comma|trailing characters)"
        r" at line \d+ column \d+",
        caught.value.message,
    )


def test_public_methods_skip_the_userpass_check() -> None:
    """``version`` (public) goes through with no or a wrong userpass; the check is not run."""
    checked: list[str] = []

    def spy(given: str) -> bool:
        checked.append(given)
        return False

    for body in (b'{"method":"version"}', b'{"method":"version","userpass":"wrong"}'):
        (call,) = parse_request(body).calls
        assert judge(call, userpass_ok=spy, deny=DEFAULT_DENY_METHODS) is None
    assert checked == []


def test_auth_comes_before_the_deny_list() -> None:
    """A denied method with a wrong userpass is an auth failure (it counts toward lock-out)."""
    (wrong,) = parse_request(b'{"method":"show_priv_key","coin":"KMD","userpass":"bad"}').calls
    assert judge(wrong, userpass_ok=_ok, deny=DEFAULT_DENY_METHODS) is Refusal.USERPASS_INVALID
    (unset,) = parse_request(b'{"mmrpc":"2.0","method":"get_mnemonic"}').calls
    assert judge(unset, userpass_ok=_ok, deny=DEFAULT_DENY_METHODS) is Refusal.USERPASS_NOT_SET
    (right,) = parse_request(
        json.dumps({"mmrpc": "2.0", "method": "get_mnemonic", "userpass": PASSWORD}).encode()
    ).calls
    assert judge(right, userpass_ok=_ok, deny=DEFAULT_DENY_METHODS) is Refusal.METHOD_DENIED


def test_deny_list_matches_names_in_either_protocol() -> None:
    """KDF retries unknown legacy methods as v2, so a legacy ``get_mnemonic`` is denied too."""
    (legacy,) = parse_request(
        json.dumps({"method": "get_mnemonic", "userpass": PASSWORD}).encode()
    ).calls
    assert judge(legacy, userpass_ok=_ok, deny=DEFAULT_DENY_METHODS) is Refusal.METHOD_DENIED
    (public,) = parse_request(b'{"method":"orderbook"}').calls
    assert judge(public, userpass_ok=_ok, deny=frozenset({"orderbook"})) is Refusal.METHOD_DENIED
    assert {
        "show_priv_key",
        "get_mnemonic",
        "get_private_keys",
        "sim_panic",
    } <= DEFAULT_DENY_METHODS


def test_legacy_refusals_are_500_with_an_error_string() -> None:
    """Legacy refusals: HTTP 500 ``{"error": "<location>] <KDF's message>"}``."""
    (call,) = parse_request(b'{"method":"my_balance","userpass":"bad"}').calls
    invalid = refusal_reply(call, Refusal.USERPASS_INVALID, attempts_left=3)
    assert invalid.status == 500
    assert json.loads(invalid.body) == {
        "error": "kdf_remote] Userpass is invalid! - Rate Limit attempts left: 3"
    }
    unset = refusal_reply(call, Refusal.USERPASS_NOT_SET, attempts_left=0)
    assert json.loads(unset.body) == {"error": "kdf_remote] Userpass is not set!"}
    denied = refusal_reply(call, Refusal.METHOD_DENIED, attempts_left=0)
    assert denied.status == 500
    assert json.loads(denied.body)["error"].startswith(
        "kdf_remote] Selected method is not allowed: my_balance is disabled"
    )


def test_v2_refusals_use_the_mmerror_shape() -> None:
    """v2 refusals: 403 with mmrpc, error, error_path, error_trace, error_type, error_data, id."""
    (call,) = parse_request(
        b'{"mmrpc":"2.0","method":"get_enabled_coins","userpass":"x","id":4}'
    ).calls
    invalid = refusal_reply(call, Refusal.USERPASS_INVALID, attempts_left=2)
    assert invalid.status == 403
    assert json.loads(invalid.body) == {
        "mmrpc": "2.0",
        "error": "Userpass is invalid! - Rate Limit attempts left: 2",
        "error_path": "kdf_remote",
        "error_trace": "kdf_remote]",
        "error_type": "UserpassIsInvalid",
        "error_data": {"error_type": "NbAttemptsLeft", "error_data": 2},
        "id": 4,
    }
    unset = json.loads(refusal_reply(call, Refusal.USERPASS_NOT_SET, attempts_left=0).body)
    assert unset["error_type"] == "UserpassIsNotSet"
    assert "error_data" not in unset
    denied = refusal_reply(call, Refusal.METHOD_DENIED, attempts_left=0)
    assert denied.status == 403
    assert json.loads(denied.body)["error_type"] == "MethodNotAllowed"


def test_batch_split_and_merge_keep_order_and_bytes() -> None:
    """Only unrefused elements are forwarded (byte for byte); KDF's answers slot back in order."""
    request = parse_request(b'[{"method":"version"} ,{"method":"x"},  {"a": 1.50}]')
    refused: list[Reply | None] = [None, Reply(500, b'{"error":"no"}'), None]
    assert forwarded_batch(request, refused) == b'[{"method":"version"},{"a": 1.50}]'
    merged = merge_batch(refused, b'[{"result":"2.5"}, {"result": 1.50}]')
    assert merged == b'[{"result":"2.5"},{"error":"no"},{"result": 1.50}]'


@pytest.mark.parametrize("answer", [b'{"error":"x"}', b"[1]", b"[1,2,3]", b"garbage"])
def test_merge_refuses_an_answer_of_the_wrong_shape(answer: bytes) -> None:
    """KDF's answer to a forwarded batch must be an array with one element per call sent."""
    with pytest.raises(BatchMismatchError):
        merge_batch([None, Reply(500, b"{}"), None], answer)
