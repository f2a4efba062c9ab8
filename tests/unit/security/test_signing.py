"""Request signatures: canonical string, window, body binding, single-use nonces."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from kdf_remote.daemon.security.errors import SignatureError
from kdf_remote.daemon.security.signing import (
    NonceCache,
    SignatureHeaders,
    SignatureVerifier,
    canonical_request,
    derive_signing_key,
    sign,
)

from .conftest import FakeClock

pytestmark = [pytest.mark.unit, pytest.mark.security]

KEY = derive_signing_key("kdfr_" + "a" * 43)
NONCE = "n0nce-0123456789abcdef"


@pytest.fixture
def verifier(clock: FakeClock) -> SignatureVerifier:
    """A verifier with a 300 s window on the fake clock."""
    return SignatureVerifier(
        window=300, nonces=NonceCache(clock=clock.monotonic), wall_clock=clock.wall
    )


def _headers(
    clock: FakeClock,
    body: bytes = b"{}",
    *,
    target: str = "/v1/workers",
    nonce: str = NONCE,
    method: str = "POST",
    offset: float = 0,
) -> SignatureHeaders:
    ts = str(int(clock.wall() + offset))
    return SignatureHeaders(
        timestamp=ts, nonce=nonce, signature=sign(KEY, method, target, ts, nonce, body)
    )


def _verify(
    verifier: SignatureVerifier,
    headers: SignatureHeaders,
    body: bytes = b"{}",
    target: str = "/v1/workers",
    method: str = "POST",
) -> None:
    verifier.verify(
        signing_key=KEY,
        namespace="key-1",
        method=method,
        target=target,
        headers=headers,
        body=body,
    )


def test_canonical_string_matches_the_architecture_definition() -> None:
    """METHOD, target, timestamp, nonce and the body's SHA-256 hex, joined by newlines."""
    got = canonical_request("post", "/v1/x?a=1", "1700000000", NONCE, b"body")
    want = f"POST\n/v1/x?a=1\n1700000000\n{NONCE}\n{hashlib.sha256(b'body').hexdigest()}"
    assert got == want.encode()
    assert (
        hmac.new(b"kdfr_" + b"a" * 43, b"kdf-remote request signing v1", "sha256").digest() == KEY
    )


def test_valid_signature_is_accepted_once_and_replay_is_refused(
    verifier: SignatureVerifier, clock: FakeClock
) -> None:
    """The same signed request twice: the second is a replay."""
    headers = _headers(clock)
    _verify(verifier, headers)
    with pytest.raises(SignatureError, match="replayed"):
        _verify(verifier, headers)


def test_signature_binds_body_method_and_target(
    verifier: SignatureVerifier, clock: FakeClock
) -> None:
    """Changing the body, method, path or query invalidates the signature."""
    headers = _headers(clock, body=b'{"a":1}', target="/v1/workers?x=1")
    for body, method, target in (
        (b'{"a":2}', "POST", "/v1/workers?x=1"),
        (b'{"a":1}', "PUT", "/v1/workers?x=1"),
        (b'{"a":1}', "POST", "/v1/workers?x=2"),
        (b'{"a":1}', "POST", "/v1/workers/other?x=1"),
    ):
        with pytest.raises(SignatureError, match="does not match"):
            _verify(verifier, headers, body=body, method=method, target=target)


def test_timestamps_outside_the_window_are_refused(
    verifier: SignatureVerifier, clock: FakeClock
) -> None:
    """A timestamp more than the window away, in either direction, is refused."""
    _verify(verifier, _headers(clock, nonce="a" * 16, offset=-300))
    _verify(verifier, _headers(clock, nonce="b" * 16, offset=300))
    for offset, nonce in ((-301, "c" * 16), (301, "d" * 16)):
        with pytest.raises(SignatureError, match="window"):
            _verify(verifier, _headers(clock, nonce=nonce, offset=offset))


def test_malformed_headers_are_refused(verifier: SignatureVerifier, clock: FakeClock) -> None:
    """Bad timestamp, short nonce, wrong signature format are each named."""
    good = _headers(clock)
    cases = [
        (SignatureHeaders("soon", good.nonce, good.signature), "Timestamp"),
        (SignatureHeaders(good.timestamp, "short", good.signature), "Nonce"),
        (SignatureHeaders(good.timestamp, "x y" * 8, good.signature), "Nonce"),
        (SignatureHeaders(good.timestamp, good.nonce, good.signature[3:]), "Signature"),
        (SignatureHeaders(good.timestamp, good.nonce, "v2=" + good.signature[3:]), "Signature"),
    ]
    for headers, part in cases:
        with pytest.raises(SignatureError, match=part):
            _verify(verifier, headers)


def test_bad_signatures_do_not_consume_nonces(
    verifier: SignatureVerifier, clock: FakeClock
) -> None:
    """A forged request with a nonce does not stop the real one using it."""
    real = _headers(clock)
    forged = SignatureHeaders(real.timestamp, real.nonce, "v1=" + "0" * 64)
    with pytest.raises(SignatureError, match="does not match"):
        _verify(verifier, forged)
    _verify(verifier, real)


def test_nonces_expire_after_twice_the_window_and_are_per_key(clock: FakeClock) -> None:
    """A nonce is remembered per key for its TTL, then forgotten."""
    cache = NonceCache(clock=clock.monotonic)
    assert cache.remember("k1", NONCE, 600)
    assert not cache.remember("k1", NONCE, 600)
    assert cache.remember("k2", NONCE, 600)
    clock.advance(601)
    assert cache.remember("k1", NONCE, 600)


def test_full_nonce_cache_fails_closed(clock: FakeClock) -> None:
    """When every slot holds a live nonce, new signed requests are refused, not forgotten."""
    cache = NonceCache(clock=clock.monotonic, max_entries=2)
    cache.remember("k", "a" * 16, 600)
    cache.remember("k", "b" * 16, 600)
    with pytest.raises(SignatureError, match="retry"):
        cache.remember("k", "c" * 16, 600)
    assert not cache.remember("k", "a" * 16, 600)
