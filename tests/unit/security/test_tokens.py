"""Access tokens: RFC 8725 attacks refused, claims enforced on a frozen clock, weak keys refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kdf_remote.daemon.principal import Role
from kdf_remote.daemon.security.errors import CredentialError, SecurityConfigError
from kdf_remote.daemon.security.files import write_private_file
from kdf_remote.daemon.security.keystore import KeyRecord, key_digest, key_id_for
from kdf_remote.daemon.security.tokens import (
    RevokedTokens,
    TokenPolicy,
    TokenService,
    check_key_strength,
    create_jwt_key_file,
    load_jwt_key,
    looks_like_jwt,
)

from .conftest import FakeClock

pytestmark = [pytest.mark.unit, pytest.mark.security]

POLICY = TokenPolicy(issuer="kdf-remote", audience="kdf-remote-daemon", ttl=600)
RECORD = KeyRecord(
    key_id=key_id_for(key_digest("k")), name="ci", role=Role.OPERATOR, digest=key_digest("k")
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(
    header: dict[str, Any], claims: dict[str, Any], key: bytes, digest: str = "sha256"
) -> str:
    """A token signed by hand (PyJWT refuses to produce some of these)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    mac = hmac.new(key, signing_input.encode(), getattr(hashlib, digest)).digest()
    return f"{signing_input}.{_b64(mac)}"


@pytest.fixture
def service(jwt_key: bytes, clock: FakeClock, tmp_path: Path) -> TokenService:
    """A token service on the fake clock."""
    return TokenService(
        jwt_key,
        POLICY,
        RevokedTokens(tmp_path / "revoked.json", wall_clock=clock.wall),
        wall_clock=clock.wall,
    )


def _claims(clock: FakeClock, **overrides: Any) -> dict[str, Any]:
    now = int(clock.wall())
    claims: dict[str, Any] = {
        "iss": "kdf-remote",
        "aud": "kdf-remote-daemon",
        "sub": "ci",
        "key_id": RECORD.key_id,
        "jti": "jti-0123456789",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


HEADER = {"alg": "HS256", "typ": "at+jwt"}


def test_issued_token_verifies_with_the_expected_claims(
    service: TokenService, clock: FakeClock
) -> None:
    """A token the service issued is accepted and names its key."""
    issued = service.issue(RECORD)
    assert looks_like_jwt(issued.access_token)
    assert issued.expires_in == 600
    claims = service.verify(issued.access_token)
    assert (claims.subject, claims.key_id, claims.jti) == ("ci", RECORD.key_id, issued.jti)
    assert jwt.get_unverified_header(issued.access_token) == HEADER


def test_hand_forged_token_with_the_right_key_is_accepted(
    service: TokenService, clock: FakeClock, jwt_key: bytes
) -> None:
    """The forging helper is faithful: with the real key and header the token passes."""
    assert service.verify(_forge(HEADER, _claims(clock), jwt_key)).subject == "ci"


def test_alg_none_and_stripped_signatures_are_refused(
    service: TokenService, clock: FakeClock
) -> None:
    """``alg: none``, an empty signature and a removed signature are all refused (RFC 8725 §2.1)."""
    valid = service.issue(RECORD).access_token
    header, payload, _ = valid.split(".")
    none_header = _b64(json.dumps({"alg": "none", "typ": "at+jwt"}).encode())
    for token in (f"{none_header}.{payload}.", f"{header}.{payload}.", f"{header}.{payload}"):
        with pytest.raises(CredentialError):
            service.verify(token)


def test_other_algorithms_and_key_confusion_are_refused(
    service: TokenService, clock: FakeClock, jwt_key: bytes
) -> None:
    """HS512 with the right key, RS256, and HS256 keyed with an RSA public key are refused."""
    hs512 = _forge({"alg": "HS512", "typ": "at+jwt"}, _claims(clock), jwt_key, "sha512")
    with pytest.raises(CredentialError, match="algorithm"):
        service.verify(hs512)
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rs256 = jwt.encode(_claims(clock), private, algorithm="RS256", headers={"typ": "at+jwt"})
    with pytest.raises(CredentialError, match="algorithm"):
        service.verify(rs256)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    confused = _forge(HEADER, _claims(clock), public_pem)
    with pytest.raises(CredentialError, match="signature"):
        service.verify(confused)


def test_tampered_payload_and_foreign_key_are_refused(
    service: TokenService, clock: FakeClock
) -> None:
    """Changing one claim, or signing with another key, breaks the signature."""
    valid = service.issue(RECORD).access_token
    header, payload, signature = valid.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "admin"
    tampered = f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"
    with pytest.raises(CredentialError, match="signature"):
        service.verify(tampered)
    with pytest.raises(CredentialError, match="signature"):
        service.verify(_forge(HEADER, _claims(clock), b"k" * 16 + bytes(range(32))))


def test_unexpected_header_fields_are_refused(
    service: TokenService, clock: FakeClock, jwt_key: bytes
) -> None:
    """``kid``/``jku`` headers and a missing ``typ`` are refused (one token kind, one key)."""
    for header in (
        {**HEADER, "kid": "../../etc/passwd"},
        {**HEADER, "jku": "https://evil.example/keys"},
        {"alg": "HS256", "typ": "JWT"},
    ):
        with pytest.raises(CredentialError, match="header"):
            service.verify(_forge(header, _claims(clock), jwt_key))


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"aud": "someone-else"}, "audience"),
        ({"aud": ["kdf-remote-daemon", "other"]}, "audience"),
        ({"iss": "evil"}, "issuer"),
        ({"aud": None}, "'aud'"),
        ({"iss": None}, "'iss'"),
        ({"exp": None}, "'exp'"),
        ({"iat": None}, "'iat'"),
        ({"sub": None}, "'sub'"),
        ({"jti": None}, "'jti'"),
        ({"key_id": None}, "key_id"),
        ({"exp": "tomorrow"}, "exp"),
    ],
)
def test_claims_are_required_and_checked(
    service: TokenService, clock: FakeClock, jwt_key: bytes, overrides: dict[str, Any], reason: str
) -> None:
    """Wrong or missing ``aud``/``iss`` and any missing required claim are refused."""
    with pytest.raises(CredentialError, match=reason):
        service.verify(_forge(HEADER, _claims(clock, **overrides), jwt_key))


def test_expiry_is_enforced_with_a_few_seconds_of_leeway(
    service: TokenService, clock: FakeClock
) -> None:
    """A token is accepted until ``exp`` + leeway (5 s) on the frozen clock, then refused."""
    issued = service.issue(RECORD)
    clock.advance(600 + 4)
    service.verify(issued.access_token)
    clock.advance(1)
    with pytest.raises(CredentialError, match="expired"):
        service.verify(issued.access_token)


def test_lifetime_above_the_configured_maximum_and_future_iat_are_refused(
    service: TokenService, clock: FakeClock, jwt_key: bytes
) -> None:
    """``exp - iat`` over the TTL, or ``iat``/``nbf`` in the future, are refused."""
    now = int(clock.wall())
    with pytest.raises(CredentialError, match="lifetime"):
        service.verify(_forge(HEADER, _claims(clock, exp=now + 86400), jwt_key))
    with pytest.raises(CredentialError, match="future"):
        service.verify(_forge(HEADER, _claims(clock, iat=now + 60, exp=now + 120), jwt_key))
    with pytest.raises(CredentialError, match="not yet valid"):
        service.verify(_forge(HEADER, _claims(clock, nbf=now + 60), jwt_key))


def test_revoked_jti_is_refused_and_the_revocation_survives_a_restart(
    service: TokenService, clock: FakeClock, jwt_key: bytes, tmp_path: Path
) -> None:
    """A revoked token is refused, also by a new service reading the persisted list."""
    issued = service.issue(RECORD)
    service.revoke(service.verify(issued.access_token))
    with pytest.raises(CredentialError, match="revoked"):
        service.verify(issued.access_token)
    restarted = TokenService(
        jwt_key,
        POLICY,
        RevokedTokens(tmp_path / "revoked.json", wall_clock=clock.wall),
        wall_clock=clock.wall,
    )
    with pytest.raises(CredentialError, match="revoked"):
        restarted.verify(issued.access_token)
    assert service.issue(RECORD).jti != issued.jti


def test_token_never_outlives_its_key(service: TokenService, clock: FakeClock) -> None:
    """A key expiring in 60 s gets a token valid for 60 s, not the full TTL."""
    record = KeyRecord(
        key_id=RECORD.key_id,
        name="ci",
        role=Role.VIEWER,
        digest=RECORD.digest,
        expires_at=clock.wall() + 60,
    )
    assert service.issue(record).expires_in == 60


@pytest.mark.parametrize(
    "key",
    [b"", b"short-secret", b"\x00" * 64, b"ab" * 32, b"changeme" * 4],
)
def test_weak_keys_refuse_start(key: bytes, clock: FakeClock) -> None:
    """Short, empty, constant or repetitive key material stops the token service."""
    with pytest.raises(SecurityConfigError, match=r"security\.jwt\.key_file"):
        TokenService(key, POLICY, RevokedTokens(None), wall_clock=clock.wall)
    with pytest.raises(SecurityConfigError):
        check_key_strength(key)


def test_key_file_must_exist_be_private_and_hold_generated_text(tmp_path: Path) -> None:
    """Missing, world-readable, passphrase-like or short key files refuse start-up."""
    path = tmp_path / "jwt.key"
    with pytest.raises(SecurityConfigError, match="existing file"):
        load_jwt_key(path)
    assert create_jwt_key_file(path)
    assert not create_jwt_key_file(path)  # never overwritten
    assert len(load_jwt_key(path)) == 64
    path.chmod(0o640)
    with pytest.raises(SecurityConfigError, match="chmod 600"):
        load_jwt_key(path)
    path.chmod(0o600)
    path.write_text("correct horse battery staple, surely long enough!\n")
    with pytest.raises(SecurityConfigError, match="base64url"):
        load_jwt_key(path)
    path.write_text("Grüße aus Köln, ein Passwort ist kein Schlüssel: nein!\n")
    with pytest.raises(SecurityConfigError, match="raw random bytes"):
        load_jwt_key(path)
    path.write_text(_b64(b"\x01\x02" * 8) + "\n")
    with pytest.raises(SecurityConfigError, match="at least 32"):
        load_jwt_key(path)


def test_key_file_of_raw_random_bytes_is_accepted(tmp_path: Path) -> None:
    """The bootstrap delivers 64 raw random bytes: used as they are; 16 raw bytes are too few."""
    path = tmp_path / "jwt.key"
    raw = bytes(range(256))[::4] + b"\x00\xff" + bytes(range(1, 31))
    write_private_file(path, raw)
    assert load_jwt_key(path) == raw
    write_private_file(path, b"\x00\x81" + bytes(range(200, 214)))
    with pytest.raises(SecurityConfigError, match="at least 32"):
        load_jwt_key(path)


def test_policy_refuses_long_lifetimes(jwt_key: bytes) -> None:
    """Access tokens are short-lived: a TTL above one hour is refused."""
    with pytest.raises(SecurityConfigError, match=r"security\.jwt\.ttl"):
        TokenService(
            jwt_key,
            TokenPolicy(issuer="i", audience="a", ttl=86400),
            RevokedTokens(None),
        )
