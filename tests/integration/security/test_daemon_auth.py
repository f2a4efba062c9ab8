"""Who may call the real daemon over TLS: deny by default, roles, keys, and access tokens.

Reference tests 1, 2, 3, 5 and 6 of style-and-security.md part B, against one daemon made by
``kdf-remote-daemon init`` (see ``harness.py``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from _loopback import wait_for

from .conftest import EXPIRED_KEY
from .harness import SecureDaemon, b64url, forge_token, run_cli, token_claims

pytestmark = [pytest.mark.integration, pytest.mark.security]

HEADER = {"alg": "HS256", "typ": "at+jwt"}
PROTECTED = (
    ("GET", "/v1/instances"),
    ("GET", "/v1/instances/main"),
    ("POST", "/v1/instances/main/stop"),
    ("GET", "/v1/audit"),
)
"""A route of each role, for the token attacks."""
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _concrete(path: str) -> str:
    return path.replace("{name}", "main")


def _statuses(daemon: SecureDaemon, token: str) -> set[int]:
    with daemon.client(token) as http:
        return {http.request(method, path).status_code for method, path in PROTECTED}


def _valid_claims(daemon: SecureDaemon) -> dict[str, Any]:
    """The claims of a real token of the admin key (tests change one thing at a time)."""
    return token_claims(daemon.token(daemon.admin_key))


def test_every_route_without_credentials_is_401_except_health(shared_daemon: SecureDaemon) -> None:
    """Reference 5: each documented operation and method, and unknown paths, need credentials."""
    with shared_daemon.client(shared_daemon.viewer_key) as http:
        document = http.get("/v1/schema/openapi.json").json()
    operations = [
        (method.upper(), _concrete(path))
        for path, item in document["paths"].items()
        for method in item
        if method.upper() in HTTP_METHODS
    ]
    assert ("POST", "/v1/auth/token") in operations and ("GET", "/v1/audit") in operations
    probes = {(method, path) for _, path in operations for method in HTTP_METHODS}
    probes |= {(m, p) for m in HTTP_METHODS for p in ("/", "/v1", "/v1/health/", "/v1/nope")}
    probes |= {("GET", "/v1/schema/openapi.json"), ("GET", "/v1/schema")}
    with shared_daemon.client() as anonymous:
        for method, path in sorted(probes):
            response = anonymous.request(method, path)
            if (method, path) in {("GET", "/v1/health"), ("HEAD", "/v1/health")}:
                assert response.status_code in (200, 405), (method, path)
                continue
            assert response.status_code == 401, (method, path, response.status_code)
            assert response.headers["www-authenticate"].startswith("Bearer")
            if method != "HEAD":
                assert response.json()["error"] == "unauthorized"
        assert anonymous.get("/v1/health").json()["status"] == "ok"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/instances/main/start", None),
        ("POST", "/v1/instances/main/stop", None),
        ("POST", "/v1/instances/main/restart", None),
        ("PUT", "/v1/instances/main/config", b"{}"),
        ("POST", "/v1/instances/main/rpc", b'{"method": "version"}'),
    ],
)
def test_viewer_cannot_start_stop_restart_configure_or_rpc(
    shared_daemon: SecureDaemon, method: str, path: str, body: bytes | None
) -> None:
    """Reference 6: a viewer key is refused every operator action with 403."""
    with shared_daemon.client(shared_daemon.viewer_key) as http:
        response = http.request(method, path, content=body)
    assert response.status_code == 403
    assert response.json()["error"] == "role_required"


def test_admin_actions_need_admin(shared_daemon: SecureDaemon) -> None:
    """Reference 6: viewers and operators cannot read the audit log or revoke others' tokens."""
    for key in (shared_daemon.viewer_key, shared_daemon.operator_key):
        with shared_daemon.client(key) as http:
            assert http.get("/v1/audit").status_code == 403
            revoke = http.post("/v1/auth/revoke", json={"jti": "someone-elses-token"})
            assert revoke.status_code == 403
    with shared_daemon.client(shared_daemon.admin_key) as http:
        assert http.get("/v1/audit", params={"limit": 1}).status_code == 200


def test_changing_the_method_never_widens_access(shared_daemon: SecureDaemon) -> None:
    """Reference 6: a viewer trying other methods on operator routes never gets a 2xx."""
    with shared_daemon.client(shared_daemon.viewer_key) as http:
        for method in ("GET", "PUT", "PATCH", "DELETE"):
            for action in ("start", "stop", "restart", "rpc"):
                response = http.request(method, f"/v1/instances/main/{action}")
                assert response.status_code in (403, 405), (method, action)
        assert http.request("DELETE", "/v1/instances/main").status_code in (403, 405)
        assert http.get("/v1/instances/main").json()["state"] == "stopped"


def test_expired_yaml_key_is_401(shared_daemon: SecureDaemon) -> None:
    """Reference 6: a key whose ``expires`` has passed is refused on every route, token too."""
    with shared_daemon.client(EXPIRED_KEY) as http:
        for method, path in (*PROTECTED, ("POST", "/v1/auth/token")):
            response = http.request(method, path)
            assert response.status_code == 401, (method, path)
            assert response.json()["detail"] == "API key 'old' has expired"


def test_key_and_its_tokens_stop_working_when_the_key_expires(shared_daemon: SecureDaemon) -> None:
    """Reference 6: a keys-file key with an expiry, and its token, are refused once it passes."""
    # Long enough for the checks before expiry to run on a loaded machine.
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=6)
    key = shared_daemon.add_key("short-lived", "viewer", "--expires", expires.isoformat())
    token = shared_daemon.token(key)
    assert token_claims(token)["exp"] <= int(expires.timestamp())
    with shared_daemon.client(key) as by_key, shared_daemon.client(token) as by_token:
        assert by_key.get("/v1/instances").status_code == 200
        wait_for(lambda: by_key.get("/v1/instances").status_code == 401, "the key to expire")
        wait_for(lambda: by_token.get("/v1/instances").status_code == 401, "the token to expire")


def test_revoked_key_and_its_tokens_are_401(shared_daemon: SecureDaemon) -> None:
    """Reference 6: ``keys revoke`` (a subprocess) takes effect on the running daemon."""
    key = shared_daemon.add_key("to-revoke", "operator")
    token = shared_daemon.token(key)
    with shared_daemon.client(key) as by_key, shared_daemon.client(token) as by_token:
        assert by_key.get("/v1/instances").status_code == 200
        assert by_token.get("/v1/instances").status_code == 200
        result = run_cli("keys", "revoke", "to-revoke", "--config", str(shared_daemon.config))
        assert result.returncode == 0, result.stderr
        wait_for(lambda: by_key.get("/v1/instances").status_code == 401, "the key revocation")
        refused = by_token.get("/v1/instances")
        assert refused.status_code == 401
        assert refused.json()["detail"] == "the key that issued this token was revoked or expired"


def test_unsigned_tokens_are_refused(shared_daemon: SecureDaemon) -> None:
    """Reference 1: ``alg: none``, an empty signature and a stripped signature get 401."""
    token = shared_daemon.token(shared_daemon.admin_key)
    claims = token_claims(token)
    head, body, _ = token.split(".")
    none_header = b64url(b'{"alg":"none","typ":"at+jwt"}')
    forgeries = [
        f"{none_header}.{body}.",
        jwt.encode(claims, key="", algorithm="none", headers={"typ": "at+jwt"}),
        f"{head}.{body}.",
        f"{head}.{body}",
    ]
    assert _statuses(shared_daemon, token) <= {200}
    for forged in forgeries:
        assert _statuses(shared_daemon, forged) == {401}, forged


def test_algorithm_pinning_holds(shared_daemon: SecureDaemon) -> None:
    """Reference 2: HS/RS confusion, RS256, HS512, a foreign key and one changed byte get 401."""
    claims = _valid_claims(shared_daemon)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    real = forge_token(HEADER, claims, shared_daemon.jwt_key)
    head, body, signature = real.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    forgeries = {
        "hs256 keyed with an RSA public key": forge_token(HEADER, claims, public_pem),
        "rs256": jwt.encode(claims, rsa_key, algorithm="RS256", headers={"typ": "at+jwt"}),
        "hs512 with the real key": forge_token(
            {"alg": "HS512", "typ": "at+jwt"}, claims, shared_daemon.jwt_key, hashlib.sha512
        ),
        "another key": forge_token(HEADER, claims, b"k" * 16 + bytes(range(48))),
        "one signature byte changed": f"{head}.{body}.{flipped}",
        "payload changed": f"{head}.{b64url(b'{}')}{body[2:]}.{signature}",
    }
    assert _statuses(shared_daemon, real) <= {200}, "the control token must be accepted"
    for what, forged in forgeries.items():
        assert _statuses(shared_daemon, forged) == {401}, what


def test_claims_are_enforced(shared_daemon: SecureDaemon) -> None:
    """Reference 3: expiry, lifetime, audience, issuer, subject, key and type are all checked."""
    base = _valid_claims(shared_daemon)
    now = int(time.time())

    def variant(**changes: Any) -> dict[str, Any]:
        claims = {**base, **changes}
        return {k: v for k, v in claims.items() if v is not None}

    key = shared_daemon.jwt_key
    cases = {
        "expired": forge_token(HEADER, variant(iat=now - 700, nbf=now - 700, exp=now - 100), key),
        "no exp": forge_token(HEADER, variant(exp=None), key),
        "lifetime over the maximum": forge_token(HEADER, variant(exp=now + 86400), key),
        "issued in the future": forge_token(HEADER, variant(iat=now + 3600, exp=now + 3900), key),
        "wrong audience": forge_token(HEADER, variant(aud="another-service"), key),
        "no audience": forge_token(HEADER, variant(aud=None), key),
        "audience list": forge_token(HEADER, variant(aud=[base["aud"], "x"]), key),
        "wrong issuer": forge_token(HEADER, variant(iss="someone-else"), key),
        "no jti": forge_token(HEADER, variant(jti=None), key),
        "unknown subject": forge_token(HEADER, variant(sub="nobody"), key),
        "unknown key id": forge_token(HEADER, variant(key_id="0" * 16), key),
        "refresh token type": forge_token({"alg": "HS256", "typ": "refresh+jwt"}, base, key),
        "untyped": forge_token({"alg": "HS256"}, base, key),
        "kid header": forge_token({**HEADER, "kid": "../../etc/passwd"}, base, key),
    }
    assert _statuses(shared_daemon, forge_token(HEADER, base, key)) <= {200}
    for what, token in cases.items():
        assert _statuses(shared_daemon, token) == {401}, what


def test_revoked_token_is_401(shared_daemon: SecureDaemon) -> None:
    """Reference 3: a token revoked by its holder, or by an admin by ``jti``, is refused."""
    own = shared_daemon.token(shared_daemon.operator_key)
    with shared_daemon.client(own) as http:
        assert http.post("/v1/auth/revoke", json={}).json() == {"revoked": token_claims(own)["jti"]}
        assert http.get("/v1/instances").status_code == 401
    other = shared_daemon.token(shared_daemon.viewer_key)
    with shared_daemon.client(shared_daemon.admin_key) as admin:
        jti = token_claims(other)["jti"]
        assert admin.post("/v1/auth/revoke", json={"jti": jti}).status_code == 200
    with shared_daemon.client(other) as http:
        response = http.get("/v1/instances")
    assert response.status_code == 401 and response.json()["detail"] == "token revoked"


def test_token_endpoint_takes_api_keys_only(shared_daemon: SecureDaemon) -> None:
    """A token cannot mint another token (no refresh chain from a stolen token)."""
    token = shared_daemon.token(shared_daemon.viewer_key)
    with shared_daemon.client(token) as http:
        response = http.post("/v1/auth/token")
    assert response.status_code == 401
    issued = shared_daemon.token(shared_daemon.viewer_key)
    claims = token_claims(issued)
    assert claims["exp"] - claims["iat"] == 600
    assert {"exp", "iat", "iss", "aud", "sub", "jti"} <= set(claims)
