"""KDF RPC shapes: builders, userpass injection, method names and response parsing."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdf_remote.kdf import KdfProtocolError, KdfRpcError, method_names, rpc, with_userpass

pytestmark = pytest.mark.unit

REAL = "Real!Pass1x"


def decode(body: bytes) -> object:
    """Decode JSON for assertions."""
    return msgspec.json.decode(body)


def test_with_userpass_replaces_caller_userpass() -> None:
    """A caller's userpass is dropped and the real one put in its place."""
    body = with_userpass(b'{"method":"my_balance","coin":"KMD","userpass":"guess"}', REAL)
    assert decode(body) == {"method": "my_balance", "coin": "KMD", "userpass": REAL}


def test_with_userpass_adds_when_missing_and_keeps_v2_shape() -> None:
    """A v2 call gets userpass and no other top-level field (KDF rejects unknown v2 fields)."""
    body = with_userpass(b'{"mmrpc":"2.0","method":"get_enabled_coins","id":7}', REAL)
    assert decode(body) == {
        "mmrpc": "2.0",
        "method": "get_enabled_coins",
        "id": 7,
        "userpass": REAL,
    }


def test_with_userpass_batch_every_object_element() -> None:
    """Every object of a batch gets the real userpass; other elements pass through untouched."""
    body = with_userpass(b'[{"method":"version"},{"method":"stop","userpass":"x"},5,"s"]', REAL)
    assert decode(body) == [
        {"method": "version", "userpass": REAL},
        {"method": "stop", "userpass": REAL},
        5,
        "s",
    ]


@pytest.mark.parametrize("body", [b"", b"not json", b'"a string"', b"42", b"null"])
def test_with_userpass_rejects_non_calls(body: bytes) -> None:
    """A body that is neither an object nor an array is a protocol error."""
    with pytest.raises(KdfProtocolError):
        with_userpass(body, REAL)


def test_protocol_error_does_not_echo_the_body() -> None:
    """Malformed JSON is reported without quoting the body (it may hold a userpass)."""
    with pytest.raises(KdfProtocolError) as info:
        with_userpass(b'{"userpass":"secretValue1!"', REAL)
    assert "secretValue1!" not in str(info.value)
    assert info.value.__cause__ is None


@given(
    st.lists(
        st.dictionaries(st.sampled_from(["method", "userpass", "coin", "mmrpc"]), st.text()),
        max_size=5,
    )
)
def test_with_userpass_property(calls: list[dict[str, str]]) -> None:
    """For any batch of objects, each element ends with exactly the real userpass."""
    result = decode(with_userpass(msgspec.json.encode(calls), REAL))
    assert isinstance(result, list)
    assert len(result) == len(calls)
    for original, injected in zip(calls, result, strict=True):
        assert injected == {**original, "userpass": REAL}


def test_method_names() -> None:
    """Method names of one call and of each batch element; missing or non-string gives ""."""
    assert method_names(b'{"method":"stop"}') == ["stop"]
    assert method_names(b'[{"method":"version"},{"mmrpc":"2.0"},{"method":5},[]]') == [
        "version",
        "",
        "",
        "",
    ]
    with pytest.raises(KdfProtocolError):
        method_names(b"7")


def test_builders() -> None:
    """Request builders produce KDF's legacy and v2 shapes."""
    assert decode(rpc.version_request()) == {"method": "version"}
    assert decode(rpc.stop_request(REAL)) == {"method": "stop", "userpass": REAL}
    assert decode(rpc.get_enabled_coins_request(REAL)) == {
        "method": "get_enabled_coins",
        "userpass": REAL,
    }
    assert decode(rpc.legacy_request("my_balance", coin="KMD")) == {
        "method": "my_balance",
        "coin": "KMD",
    }
    assert decode(rpc.v2_request("get_enabled_coins", userpass=REAL, request_id=1)) == {
        "mmrpc": "2.0",
        "method": "get_enabled_coins",
        "userpass": REAL,
        "id": 1,
    }
    assert "version" in rpc.PUBLIC_METHODS
    assert "stop" not in rpc.PUBLIC_METHODS


def test_parse_version() -> None:
    """The version answer's opaque string and build time are read."""
    info = rpc.parse_version(
        200, b'{"result":"2.5.1-beta_a9fbf60","datetime":"2025-07-28T00:00:00+00:00"}'
    )
    assert info.result == "2.5.1-beta_a9fbf60"
    assert info.datetime == "2025-07-28T00:00:00+00:00"
    with pytest.raises(KdfProtocolError):
        rpc.parse_version(200, b'{"result":5}')


def test_parse_enabled_coins_both_shapes() -> None:
    """get_enabled_coins parses in the legacy and the v2 shape."""
    legacy = rpc.parse_enabled_coins(200, b'{"result":[{"ticker":"KMD","address":"RX"}]}')
    assert [(c.ticker, c.address) for c in legacy] == [("KMD", "RX")]
    v2 = rpc.parse_enabled_coins(
        200, b'{"mmrpc":"2.0","result":{"coins":[{"ticker":"BTC"}]},"id":null}'
    )
    assert [(c.ticker, c.address) for c in v2] == [("BTC", None)]
    assert rpc.parse_enabled_coins(200, b'{"result":[]}') == []


def test_auth_errors_are_recognised_in_both_protocols() -> None:
    """A wrong userpass is an auth failure whether KDF answers legacy 500 or v2 403."""
    with pytest.raises(KdfRpcError) as legacy:
        rpc.parse_enabled_coins(
            500, b'{"error":"rpc:184] Userpass is invalid! - Rate Limit attempts left: 9"}'
        )
    assert legacy.value.is_auth_failure
    assert legacy.value.status == 500
    with pytest.raises(KdfRpcError) as v2:
        rpc.parse_result(
            403,
            b'{"mmrpc":"2.0","error":"Userpass is invalid!","error_path":"dispatcher",'
            b'"error_trace":"dispatcher:1]","error_type":"UserpassIsInvalid","id":null}',
        )
    assert v2.value.is_auth_failure
    assert v2.value.error_type == "UserpassIsInvalid"
    with pytest.raises(KdfRpcError) as other:
        rpc.parse_result(
            400, b'{"mmrpc":"2.0","error":"No such method","error_type":"NoSuchMethod"}'
        )
    assert not other.value.is_auth_failure


def test_parse_result_without_result() -> None:
    """A 200 answer without result is a protocol error; an empty error body too."""
    with pytest.raises(KdfProtocolError):
        rpc.parse_result(200, b'{"something":1}')
    with pytest.raises(KdfRpcError):
        rpc.parse_result(502, b"{}")
    assert rpc.parse_result(200, b'{"result":"success"}') == "success"
