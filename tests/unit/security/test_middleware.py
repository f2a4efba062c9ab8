"""The security gate, guards and controllers against a minimal Litestar app of this test's own.

The app has one route per role, an undeclared route, a failing route and an echo route; requests
go through ``httpx.ASGITransport`` with a chosen peer address, so no socket is opened.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jwt
import pytest
from litestar import Litestar, Request, get, post
from litestar.params import FromPath, JSONBody

from kdf_remote.daemon.errors import exception_handlers
from kdf_remote.daemon.principal import Principal, Role
from kdf_remote.daemon.security.audit import verify_audit_log
from kdf_remote.daemon.security.guards import require_role, undeclared_handlers
from kdf_remote.daemon.security.keystore import derive_signing_key, revoke_key
from kdf_remote.daemon.security.middleware import note_audit
from kdf_remote.daemon.security.plugin import SecurityPlugin
from kdf_remote.daemon.security.runtime import RateLimits, SecurityRuntime
from kdf_remote.daemon.security.signing import sign

from .conftest import CONFIG_ADMIN_KEY, FakeClock, RuntimeFactory

pytestmark = [pytest.mark.unit, pytest.mark.security]

PEER = "198.51.100.20"


@get("/v1/health", sync_to_thread=False)
def health() -> dict[str, str]:
    """Public liveness: declares no role, and is one of the gate's public routes."""
    return {"status": "ok"}


@get("/v1/instances", guards=[require_role("viewer")], sync_to_thread=False)
def instances(request: Request[Any, Any, Any]) -> dict[str, str]:
    """Viewer route; echoes who called."""
    user = request.user
    assert isinstance(user, Principal)
    return {"name": user.name, "role": user.role.label, "via": user.via}


@post("/v1/instances/{name:str}/start", guards=[require_role("operator")], sync_to_thread=False)
def start(name: FromPath[str]) -> dict[str, str]:
    """Operator route with a path parameter (the audit target)."""
    return {"started": name}


@post("/v1/echo", guards=[require_role(Role.OPERATOR)], sync_to_thread=False)
def echo(request: Request[Any, Any, Any], data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
    """Operator route reading a JSON body."""
    note_audit(request, target="echo", detail=f"{len(data)} keys")
    return {"got": data}


@post("/v1/workers", guards=[require_role("admin")], status_code=201, sync_to_thread=False)
def add_worker(data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
    """Admin route."""
    return {"created": data.get("name")}


@get("/v1/forgotten", sync_to_thread=False)
def forgotten() -> dict[str, str]:
    """A handler whose author forgot to declare a role."""
    return {"oops": "reachable"}


@get("/v1/boom", guards=[require_role("viewer")], sync_to_thread=False)
def boom() -> None:
    """Fails with an internal detail that must not leak."""
    raise RuntimeError("cannot open /var/lib/kdf-remote/secret.json")


HANDLERS = [health, instances, start, echo, add_worker, forgotten, boom]


def build_app(runtime: SecurityRuntime, *, install: bool = True) -> Litestar:
    """The test app with the security plugin (and the gate unless ``install`` is False)."""
    plugin = SecurityPlugin(runtime)
    app = Litestar(
        route_handlers=HANDLERS,
        plugins=[plugin],
        exception_handlers=exception_handlers(),
        logging_config=None,
        debug=False,
    )
    return plugin.install(app) if install else app


Client = Callable[..., Any]


@asynccontextmanager
async def client_for(
    app: Any, peer: str = PEER, *, https: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to ``app`` in-process as TCP peer ``peer``."""
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    base = "https://kdf.test" if https else "http://kdf.test"
    async with httpx.AsyncClient(transport=transport, base_url=base) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    """An Authorization header."""
    return {"Authorization": f"Bearer {key}"}


def audit_lines(factory: RuntimeFactory) -> list[dict[str, Any]]:
    """Every audit record so far (those queued for the next loop turn written out first)."""
    for log in factory.audit_logs:
        log.flush()
    if not factory.audit_path.exists():
        return []
    return [json.loads(line) for line in factory.audit_path.read_text().splitlines()]


@pytest.fixture
def keys(make_runtime: RuntimeFactory) -> dict[str, str]:
    """One key per role in the keys file, plus one that must sign."""
    make_runtime.add("watcher", Role.VIEWER)
    make_runtime.add("ops", Role.OPERATOR)
    make_runtime.add("boss", Role.ADMIN)
    make_runtime.add("signer", Role.OPERATOR, require_signing=True)
    return make_runtime.keys.plain


# -------------------------------------------------------------------------------------------
# Deny by default, roles


async def test_every_route_but_health_needs_credentials(make_runtime: RuntimeFactory) -> None:
    """Enumerating the app's routes and methods: all answer 401 without credentials but health."""
    app = build_app(make_runtime())
    async with client_for(app) as client:
        assert (await client.get("/v1/health")).status_code == 200
        for route in app.routes:
            for method in sorted(getattr(route, "methods", set())):
                if (method, route.path) in {("GET", "/v1/health"), ("HEAD", "/v1/health")}:
                    continue
                path = route.path.replace("{name:str}", "main")
                response = await client.request(method, path)
                assert response.status_code == 401, (method, path)
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert response.json()["error"] == "unauthorized"
        assert (await client.get("/v1/no-such-route")).status_code == 401


async def test_undeclared_handler_is_closed_even_to_admins(
    make_runtime: RuntimeFactory, keys: dict[str, str]
) -> None:
    """A handler without a role guard answers 403, and the start-up check lists it."""
    app = build_app(make_runtime())
    assert undeclared_handlers(app) == ["GET /v1/forgotten"]
    async with client_for(app) as client:
        response = await client.get("/v1/forgotten", headers=bearer(keys["boss"]))
    assert response.status_code == 403
    assert response.json() == {"error": "forbidden", "detail": "this endpoint declares no role"}


async def test_roles_are_enforced_per_handler(
    make_runtime: RuntimeFactory, keys: dict[str, str]
) -> None:
    """Viewer reads only; operator also starts; admin does everything; method changes don't help."""
    app = build_app(make_runtime())
    async with client_for(app) as client:
        viewer, operator, admin = (bearer(keys[n]) for n in ("watcher", "ops", "boss"))
        assert (await client.get("/v1/instances", headers=viewer)).json()["role"] == "viewer"
        denied = await client.post("/v1/instances/main/start", headers=viewer)
        assert denied.status_code == 403 and denied.json()["error"] == "role_required"
        assert (await client.post("/v1/instances/main/start", headers=operator)).status_code == 201
        assert (await client.post("/v1/workers", headers=operator, json={})).status_code == 403
        assert (
            await client.post("/v1/workers", headers=admin, json={"name": "w1"})
        ).status_code == 201
        assert (await client.put("/v1/instances/main/start", headers=viewer)).status_code in (
            403,
            405,
        )
        assert (await client.get("/v1/audit/", headers=operator)).status_code == 403
        assert (await client.get("/schema/openapi.json", headers=viewer)).status_code == 200
        assert (await client.get("/schema/openapi.json")).status_code == 401


async def test_public_routes_open_only_handlers_that_declare_no_role(
    make_runtime: RuntimeFactory, keys: dict[str, str]
) -> None:
    """Listing a route as public does not lift a role its handler declares: it stays closed.

    The gate does not authenticate public routes, so such a handler is refused even with a key.
    """
    listed = frozenset({("GET", "/v1/health"), ("GET", "/v1/instances"), ("GET", "/v1/forgotten")})
    app = build_app(make_runtime(public_routes=listed))
    assert undeclared_handlers(app, listed) == []
    async with client_for(app) as client:
        assert (await client.get("/v1/forgotten")).json() == {"oops": "reachable"}
        refused = await client.get("/v1/instances")
        assert refused.status_code == 401 and refused.json()["detail"] == "missing credentials"
        viewer = await client.get("/v1/instances", headers=bearer(keys["watcher"]))
        assert viewer.status_code == 401


async def test_gate_missing_fails_closed(
    make_runtime: RuntimeFactory, keys: dict[str, str]
) -> None:
    """With the plugin but without ``install``, every request is refused, health included."""
    app = build_app(make_runtime(), install=False)
    async with client_for(app) as client:
        for path in ("/v1/health", "/v1/instances", "/v1/audit/"):
            response = await client.get(path, headers=bearer(keys["boss"]))
            assert response.status_code == 403
            assert response.json()["detail"] == "the security layer is not installed"


# -------------------------------------------------------------------------------------------
# Credentials, tokens


async def test_api_key_via_either_header_but_not_both(
    make_runtime: RuntimeFactory, keys: dict[str, str]
) -> None:
    """``Authorization: Bearer`` and ``X-API-Key`` both work; sending both is refused; Basic too."""
    app = build_app(make_runtime())
    async with client_for(app) as client:
        assert (
            await client.get("/v1/instances", headers={"X-API-Key": keys["ops"]})
        ).status_code == 200
        both = {**bearer(keys["ops"]), "X-API-Key": keys["ops"]}
        assert (await client.get("/v1/instances", headers=both)).status_code == 401
        basic = {"Authorization": "Basic b3BzOm9wcw=="}
        assert (await client.get("/v1/instances", headers=basic)).status_code == 401
        yaml_admin = await client.get("/v1/instances", headers=bearer(CONFIG_ADMIN_KEY))
        assert yaml_admin.json() == {"name": "yaml-admin", "role": "admin", "via": "api_key"}


async def test_token_exchange_and_use(make_runtime: RuntimeFactory, keys: dict[str, str]) -> None:
    """An API key gets a token; the token authenticates; a token cannot mint another."""
    app = build_app(make_runtime())
    async with client_for(app) as client:
        issued = await client.post("/v1/auth/token", headers=bearer(keys["ops"]))
        assert issued.status_code == 200
        body = issued.json()
        assert body["token_type"] == "Bearer" and body["expires_in"] == 600
        assert issued.headers["cache-control"] == "no-store"
        token = body["access_token"]
        me = await client.get("/v1/instances", headers=bearer(token))
        assert me.json() == {"name": "ops", "role": "operator", "via": "jwt"}
        again = await client.post("/v1/auth/token", headers=bearer(token))
        assert again.status_code == 401
        assert "API key is required" in again.json()["detail"]


async def test_alg_none_and_expired_tokens_get_401(
    make_runtime: RuntimeFactory, keys: dict[str, str], clock: FakeClock
) -> None:
    """An unsigned copy of a valid token and an expired token are refused on a protected route."""
    app = build_app(make_runtime())
    async with client_for(app) as client:
        token = (await client.post("/v1/auth/token", headers=bearer(keys["ops"]))).json()[
            "access_token"
        ]
        claims = jwt.decode(token, options={"verify_signature": False})
        unsigned = jwt.encode(claims, "", algorithm="none", headers={"typ": "at+jwt"})
        assert (await client.get("/v1/instances", headers=bearer(unsigned))).status_code == 401
        clock.advance(606)
        expired = await client.get("/v1/instances", headers=bearer(token))
        assert expired.status_code == 401 and expired.json()["detail"] == "token expired"


async def test_revoking_a_key_revokes_its_tokens(
    make_runtime: RuntimeFactory, keys: dict[str, str], clock: FakeClock
) -> None:
    """After ``keys revoke`` the key and every token it obtained are refused."""
    factory = make_runtime
    app = build_app(factory())
    async with client_for(app) as client:
        token = (await client.post("/v1/auth/token", headers=bearer(keys["ops"]))).json()[
            "access_token"
        ]
        assert (await client.get("/v1/instances", headers=bearer(token))).status_code == 200
        revoke_key(factory.keys_file, "ops")
        clock.advance(2)
        assert (await client.get("/v1/instances", headers=bearer(token))).status_code == 401
        assert (await client.get("/v1/instances", headers=bearer(keys["ops"]))).status_code == 401


async def test_revoke_endpoint_for_own_token_and_admin_by_jti(
    make_runtime: RuntimeFactory, keys: dict[str, str]
) -> None:
    """Anyone may revoke the token they use; revoking someone else's needs admin."""
    app = build_app(make_runtime())
    async with client_for(app) as client:
        mine = (await client.post("/v1/auth/token", headers=bearer(keys["watcher"]))).json()[
            "access_token"
        ]
        assert (
            await client.post("/v1/auth/revoke", headers=bearer(mine), json={})
        ).status_code == 200
        assert (await client.get("/v1/instances", headers=bearer(mine))).status_code == 401
        theirs = (await client.post("/v1/auth/token", headers=bearer(keys["ops"]))).json()[
            "access_token"
        ]
        jti = jwt.decode(theirs, options={"verify_signature": False})["jti"]
        viewer2 = (await client.post("/v1/auth/token", headers=bearer(keys["watcher"]))).json()[
            "access_token"
        ]
        refused = await client.post("/v1/auth/revoke", headers=bearer(viewer2), json={"jti": jti})
        assert refused.status_code == 403
        done = await client.post("/v1/auth/revoke", headers=bearer(keys["boss"]), json={"jti": jti})
        assert done.json() == {"revoked": jti}
        assert (await client.get("/v1/instances", headers=bearer(theirs))).status_code == 401


# -------------------------------------------------------------------------------------------
# Addresses and rate limits


async def test_allow_list_uses_the_real_peer(
    make_runtime: RuntimeFactory, keys: dict[str, str]
) -> None:
    """A valid key from a non-listed peer gets 403; a v4-mapped peer matches its IPv4 entry."""
    app = build_app(make_runtime(allowed_ips=["203.0.113.0/24"]))
    key = bearer(keys["ops"])
    async with client_for(app, peer="198.51.100.1") as client:
        refused = await client.get(
            "/v1/instances", headers={**key, "X-Forwarded-For": "203.0.113.5"}
        )
        assert refused.status_code == 403 and refused.json()["error"] == "ip_not_allowed"
        assert (await client.get("/v1/health")).status_code == 403
    async with client_for(app, peer="::ffff:203.0.113.9") as client:
        assert (await client.get("/v1/instances", headers=key)).status_code == 200


async def test_host_matching_is_literal(make_runtime: RuntimeFactory, keys: dict[str, str]) -> None:
    """Reference 9: with allowed host kdf.test, kdfXtest and evil.com get 400; so does a
    forged X-Forwarded-Host; a listed name with any port, and a wildcard's subdomain, pass."""
    factory = make_runtime
    app = build_app(factory(allowed_hosts=["kdf.test", "*.fleet.test"]))
    key = bearer(keys["ops"])
    async with client_for(app) as client:
        for host in ("kdfXtest", "evil.com", "kdf.test.evil.com", "fleet.test", "kdf.test:x"):
            refused = await client.get("/v1/instances", headers={**key, "Host": host})
            assert refused.status_code == 400, host
            assert refused.json()["error"] == "host_not_allowed"
        forged = await client.get(
            "/v1/instances", headers={**key, "Host": "evil.com", "X-Forwarded-Host": "kdf.test"}
        )
        assert forged.status_code == 400
        # Refused before credentials are even looked at: the public route too.
        assert (await client.get("/v1/health", headers={"Host": "evil.com"})).status_code == 400
        for host in ("kdf.test", "KDF.test:8443", "w1.fleet.test", "a.b.fleet.test:1"):
            answer = await client.get("/v1/instances", headers={**key, "Host": host})
            assert answer.status_code == 200, host
    denied = [e for e in audit_lines(factory) if e["status"] == 400]
    assert denied and denied[0]["detail"].startswith("host_not_allowed")


async def test_forwarded_for_is_honoured_only_from_trusted_proxies(
    make_runtime: RuntimeFactory, keys: dict[str, str]
) -> None:
    """Behind a trusted proxy the forwarded client is checked; the proxy itself is not enough."""
    app = build_app(make_runtime(allowed_ips=["203.0.113.0/24"], trusted_proxies=["10.0.0.1"]))
    key = bearer(keys["ops"])
    async with client_for(app, peer="10.0.0.1") as client:
        ok = await client.get("/v1/instances", headers={**key, "X-Forwarded-For": "203.0.113.5"})
        assert ok.status_code == 200
        bad = await client.get("/v1/instances", headers={**key, "X-Forwarded-For": "198.51.100.7"})
        assert bad.status_code == 403
        spoof = "203.0.113.5, 198.51.100.7"
        assert (
            await client.get("/v1/instances", headers={**key, "X-Forwarded-For": spoof})
        ).status_code == 403


async def test_rotating_forwarded_headers_never_yields_a_fresh_bucket(
    make_runtime: RuntimeFactory, keys: dict[str, str]
) -> None:
    """From an untrusted peer, a new X-Forwarded-For/X-Real-IP per request still hits one bucket."""
    runtime = make_runtime(limits=RateLimits(requests_per_minute=20, auth_per_minute=3))
    app = build_app(runtime)
    statuses = []
    async with client_for(app) as client:
        for i in range(8):
            spoof = {"X-Forwarded-For": f"192.0.2.{i}", "X-Real-IP": f"192.0.2.{i}"}
            statuses.append((await client.get("/v1/health", headers=spoof)).status_code)
        limited = await client.get("/v1/health", headers={"X-Forwarded-For": "192.0.2.200"})
    assert statuses[:5] == [200] * 5
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"] == "rate_limited"


async def test_token_endpoint_is_stricter(
    make_runtime: RuntimeFactory, keys: dict[str, str]
) -> None:
    """``POST /v1/auth/token`` has its own smaller bucket per address."""
    app = build_app(make_runtime(limits=RateLimits(requests_per_minute=600, auth_per_minute=3)))
    async with client_for(app) as client:
        codes = [
            (await client.post("/v1/auth/token", headers=bearer(keys["ops"]))).status_code
            for _ in range(4)
        ]
        assert codes == [200, 200, 200, 429]
        assert (await client.get("/v1/instances", headers=bearer(keys["ops"]))).status_code == 200


async def test_failed_authentication_locks_the_address_out(
    make_runtime: RuntimeFactory, keys: dict[str, str], clock: FakeClock
) -> None:
    """After ``lockout_after`` bad keys even a good key waits out the lock-out (429)."""
    app = build_app(make_runtime(limits=RateLimits(lockout_after=3, lockout=120)))
    async with client_for(app) as client:
        for _ in range(3):
            guess = bearer("kdfr_" + secrets.token_urlsafe(32))
            assert (await client.get("/v1/instances", headers=guess)).status_code == 401
        locked = await client.get("/v1/instances", headers=bearer(keys["ops"]))
        assert locked.status_code == 429
        assert locked.json()["error"] == "locked_out"
        assert locked.headers["retry-after"] == "120"
        clock.advance(121)
        assert (await client.get("/v1/instances", headers=bearer(keys["ops"]))).status_code == 200


# -------------------------------------------------------------------------------------------
# Signing


def signed(
    key: str, method: str, target: str, body: bytes, clock: FakeClock, nonce: str | None = None
) -> dict[str, str]:
    """Signing headers for a request."""
    ts = str(int(clock.wall()))
    nonce = nonce or secrets.token_urlsafe(18)
    sig = sign(derive_signing_key(key), method, target, ts, nonce, body)
    return {"X-KDF-Timestamp": ts, "X-KDF-Nonce": nonce, "X-KDF-Signature": sig}


async def test_admin_actions_need_signatures_when_required(
    make_runtime: RuntimeFactory, keys: dict[str, str], clock: FakeClock
) -> None:
    """Signing required for admin: unsigned admin calls get 403, signed pass, a replay gets 401."""
    app = build_app(make_runtime(signing_required_for_admin=True))
    admin = bearer(keys["boss"])
    body = b'{"name":"w1"}'
    async with client_for(app) as client:
        unsigned = await client.post("/v1/workers", headers=admin, content=body)
        assert unsigned.status_code == 403 and unsigned.json()["error"] == "signature_required"
        headers = {
            **admin,
            **signed(keys["boss"], "POST", "/v1/workers", body, clock),
            "Content-Type": "application/json",
        }
        ok = await client.post("/v1/workers", headers=headers, content=body)
        assert ok.status_code == 201 and ok.json() == {"created": "w1"}
        replay = await client.post("/v1/workers", headers=headers, content=body)
        assert replay.status_code == 401 and "replayed" in replay.json()["detail"]
        tampered = {**headers, "X-KDF-Nonce": "fresh-nonce-0123456789"}
        altered = await client.post("/v1/workers", headers=tampered, content=b'{"name":"w2"}')
        assert altered.status_code == 401 and altered.json()["error"] == "bad_signature"
        operator = await client.post("/v1/instances/main/start", headers=bearer(keys["ops"]))
        assert operator.status_code == 201


async def test_signed_request_with_a_token_uses_the_stored_signing_key(
    make_runtime: RuntimeFactory, keys: dict[str, str], clock: FakeClock
) -> None:
    """A JWT-authenticated admin call is signed with the key's derived signing key."""
    app = build_app(make_runtime(signing_required_for_admin=True))
    async with client_for(app) as client:
        token = (await client.post("/v1/auth/token", headers=bearer(keys["boss"]))).json()[
            "access_token"
        ]
        body = b'{"name":"w9"}'
        headers = {**bearer(token), **signed(keys["boss"], "POST", "/v1/workers", body, clock)}
        assert (await client.post("/v1/workers", headers=headers, content=body)).status_code == 201
        stale = signed(keys["boss"], "POST", "/v1/workers", body, clock)
        clock.advance(301)
        late = await client.post(
            "/v1/workers", headers={**bearer(keys["boss"]), **stale}, content=body
        )
        assert late.status_code == 401 and "window" in late.json()["detail"]


async def test_key_that_must_sign_is_refused_unsigned(
    make_runtime: RuntimeFactory, keys: dict[str, str], clock: FakeClock
) -> None:
    """A key created with ``--require-signing`` cannot make unsigned requests, even reads."""
    app = build_app(make_runtime())
    async with client_for(app) as client:
        refused = await client.get("/v1/instances", headers=bearer(keys["signer"]))
        assert refused.status_code == 401 and refused.json()["error"] == "signature_required"
        headers = {
            **bearer(keys["signer"]),
            **signed(keys["signer"], "GET", "/v1/instances?x=1", b"", clock),
        }
        assert (await client.get("/v1/instances?x=1", headers=headers)).status_code == 200


# -------------------------------------------------------------------------------------------
# Ceilings, errors, headers


async def test_oversized_bodies_get_413_declared_or_chunked(
    make_runtime: RuntimeFactory, keys: dict[str, str]
) -> None:
    """A Content-Length over the cap, or a chunked body growing past it, gets 413."""
    app = build_app(make_runtime(max_body_size=1024))
    key = bearer(keys["ops"])
    async with client_for(app) as client:
        big = json.dumps({"x": "a" * 2000}).encode()
        declared = await client.post("/v1/echo", headers=key, content=big)
        assert declared.status_code == 413 and declared.json()["error"] == "payload_too_large"

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield b" " * 400

        streamed = await client.post("/v1/echo", headers=key, content=chunks())
        assert streamed.status_code == 413
        small = await client.post("/v1/echo", headers=key, json={"a": 1})
        assert small.status_code == 201 and small.json() == {"got": {"a": 1}}


async def test_errors_leak_no_traceback_or_path(
    make_runtime: RuntimeFactory, keys: dict[str, str]
) -> None:
    """An unhandled error answers a generic 500 body."""
    app = build_app(make_runtime())
    async with client_for(app) as client:
        response = await client.get("/v1/boom", headers=bearer(keys["ops"]))
    assert response.status_code == 500
    assert "/var/lib" not in response.text and "Traceback" not in response.text
    assert set(response.json()) == {"error", "detail"}


async def test_security_headers(make_runtime: RuntimeFactory, keys: dict[str, str]) -> None:
    """HSTS over TLS only; nosniff and no-store always."""
    app = build_app(make_runtime())
    async with client_for(app) as client:
        response = await client.get("/v1/health")
        assert response.headers["strict-transport-security"] == "max-age=63072000"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
    async with client_for(app, peer="127.0.0.1", https=False) as client:
        assert "strict-transport-security" not in (await client.get("/v1/health")).headers


# -------------------------------------------------------------------------------------------
# Audit


async def test_mutations_and_denials_are_audited_without_secrets(
    make_runtime: RuntimeFactory, keys: dict[str, str]
) -> None:
    """One line per mutating call and per refusal, naming actor, role, address, action, target."""
    factory = make_runtime
    app = build_app(factory())
    async with client_for(app) as client:
        token = (await client.post("/v1/auth/token", headers=bearer(keys["ops"]))).json()[
            "access_token"
        ]
        await client.post("/v1/instances/main/start", headers=bearer(token))
        await client.post(
            "/v1/echo", headers=bearer(keys["ops"]), json={"secret": "s3cr3t-passphrase"}
        )
        await client.get("/v1/instances", headers=bearer(keys["ops"]))  # a read: not audited
        await client.post("/v1/workers", headers=bearer(keys["watcher"]), json={})
        await client.get("/v1/instances", headers=bearer("kdfr_" + "x" * 43))
    lines = audit_lines(factory)
    summary = [(e["action"], e["actor"], e["outcome"], e["status"], e["target"]) for e in lines]
    assert summary == [
        ("POST /v1/auth/token", "ops", "ok", 200, "ops"),
        ("POST /v1/instances/{name}/start", "ops", "ok", 201, "main"),
        ("POST /v1/echo", "ops", "ok", 201, "echo"),
        ("POST /v1/workers", "watcher", "denied", 403, None),
        ("GET /v1/instances", None, "denied", 401, None),
    ]
    assert lines[1]["role"] == "operator" and lines[1]["source_ip"] == PEER
    assert "role_required" in lines[3]["detail"]
    text = factory.audit_path.read_text()
    for secret in (*keys.values(), token, "s3cr3t-passphrase", "x" * 43):
        assert secret not in text
    assert verify_audit_log(factory.audit_path).ok


async def test_crlf_in_a_path_cannot_forge_an_audit_line(make_runtime: RuntimeFactory) -> None:
    """A request path carrying CR/LF is logged inside one JSON line."""
    factory = make_runtime
    app = build_app(factory())
    async with client_for(app) as client:
        await client.post("/v1/x%0d%0a%7B%22seq%22%3A1%7D")
    lines = audit_lines(factory)
    assert len(lines) == 1
    assert lines[0]["action"].startswith("POST /v1/x\r\n")


async def test_audit_endpoint_is_admin_only_and_pages(
    make_runtime: RuntimeFactory, keys: dict[str, str]
) -> None:
    """``GET /v1/audit`` serves entries to admins, with a page size cap."""
    app = build_app(make_runtime())
    async with client_for(app) as client:
        for _ in range(3):
            await client.post("/v1/instances/main/start", headers=bearer(keys["ops"]))
        assert (await client.get("/v1/audit/", headers=bearer(keys["ops"]))).status_code == 403
        page = (await client.get("/v1/audit/?limit=2", headers=bearer(keys["boss"]))).json()
        assert [e["seq"] for e in page["entries"]] == [3, 4]
        assert page["next_before_seq"] == 3
        too_big = await client.get("/v1/audit/?limit=100000", headers=bearer(keys["boss"]))
        assert too_big.status_code == 400


async def test_flood_of_refusals_is_throttled_in_the_audit_log(
    make_runtime: RuntimeFactory,
) -> None:
    """Repeated anonymous refusals from one address write one line, not one per request."""
    factory = make_runtime
    app = build_app(factory())
    async with client_for(app) as client:
        for _ in range(20):
            assert (await client.get("/v1/instances")).status_code == 401
    assert len(audit_lines(factory)) == 1


def test_key_ids_in_tokens_do_not_reveal_key_hashes(
    make_runtime: RuntimeFactory, keys: dict[str, str]
) -> None:
    """The key id is not a prefix of the stored hash."""
    digest = hashlib.sha256(keys["ops"].encode()).hexdigest()
    runtime = make_runtime()
    record = runtime.keys.lookup(keys["ops"])
    assert record.key_id not in digest


async def test_expired_tokens_and_skewed_clocks_do_not_lock_a_client_out(
    make_runtime: RuntimeFactory, keys: dict[str, str], clock: FakeClock
) -> None:
    """Failures an honest client causes (expired token, stale timestamp) are not counted."""
    app = build_app(make_runtime(limits=RateLimits(lockout_after=2, lockout=600)))
    async with client_for(app) as client:
        token = (await client.post("/v1/auth/token", headers=bearer(keys["ops"]))).json()[
            "access_token"
        ]
        stale = signed(keys["ops"], "GET", "/v1/instances", b"", clock)
        clock.advance(700)
        for _ in range(3):
            assert (await client.get("/v1/instances", headers=bearer(token))).status_code == 401
            late = await client.get("/v1/instances", headers={**bearer(keys["ops"]), **stale})
            assert late.status_code == 401
        assert (await client.get("/v1/instances", headers=bearer(keys["ops"]))).status_code == 200
