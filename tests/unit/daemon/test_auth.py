"""Baseline authentication: API keys in constant time, roles, expiry, the peer allow-list."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from kdf_remote.daemon.app import create_app
from kdf_remote.daemon.asgi import DaemonApp
from kdf_remote.daemon.auth import ApiKeyAuthenticator, presented_key
from kdf_remote.daemon.errors import ForbiddenError, UnauthorizedError
from kdf_remote.daemon.principal import Principal, Role
from kdf_remote.daemon.settings import ApiKeyEntry, Settings, parse_settings

from .conftest import (
    ADMIN_KEY,
    EXPIRED_KEY,
    OPERATOR_KEY,
    VIEWER_KEY,
    auth,
    running,
    settings_text,
)

pytestmark = pytest.mark.unit


def _scope(headers: dict[str, str], client: tuple[str, int] | None = ("127.0.0.1", 1)) -> Any:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return {"type": "http", "headers": raw, "client": client}


def _entry(
    name: str, key: str, role: Role = Role.ADMIN, expires: datetime | None = None
) -> ApiKeyEntry:
    return ApiKeyEntry(
        name=name, role=role, digest=hashlib.sha256(key.encode()).digest(), expires=expires
    )


async def test_bearer_and_header_keys_resolve_to_principals() -> None:
    """Both header forms resolve to the entry's name and role; the key itself is never kept."""
    authn = ApiKeyAuthenticator(
        [_entry("ci", "k-ci", Role.VIEWER), _entry("ops", "k-ops", Role.OPERATOR)]
    )
    assert await authn.authenticate(_scope({"Authorization": "Bearer k-ci"})) == Principal(
        name="ci", role=Role.VIEWER, key_id="ci"
    )
    assert (await authn.authenticate(_scope({"X-API-Key": "k-ops"}))).role is Role.OPERATOR
    assert (await authn.authenticate(_scope({"authorization": "bearer   k-ops "}))).name == "ops"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": ""}, {"Authorization": "Bearer"}],
)
async def test_missing_or_wrong_keys_are_401(headers: dict[str, str]) -> None:
    """No key, an empty key or an unknown key is unauthorized."""
    authn = ApiKeyAuthenticator([_entry("a", "right")])
    with pytest.raises(UnauthorizedError):
        await authn.authenticate(_scope(headers))


async def test_other_schemes_are_refused() -> None:
    """Basic auth (or any scheme but Bearer) is refused, not parsed as a key."""
    authn = ApiKeyAuthenticator([_entry("a", "right")])
    with pytest.raises(UnauthorizedError, match="unsupported Authorization scheme"):
        await authn.authenticate(_scope({"Authorization": "Basic cmlnaHQ="}))


async def test_expired_keys_are_401() -> None:
    """A key past its expiry is refused, one before it is accepted."""
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    entry = _entry("temp", "k", expires=expires)
    before = ApiKeyAuthenticator([entry], clock=lambda: datetime(2029, 12, 31, tzinfo=UTC))
    after = ApiKeyAuthenticator([entry], clock=lambda: expires)
    assert (await before.authenticate(_scope({"X-API-Key": "k"}))).name == "temp"
    with pytest.raises(UnauthorizedError, match="has expired"):
        await after.authenticate(_scope({"X-API-Key": "k"}))


def test_every_entry_is_compared(monkeypatch: pytest.MonkeyPatch) -> None:
    """Matching compares against every entry (no early exit that would leak which one matched)."""
    calls: list[bytes] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(b)
        return bool(real(a, b))

    monkeypatch.setattr(hmac, "compare_digest", counting)
    authn = ApiKeyAuthenticator([_entry(f"k{i}", f"key-{i}") for i in range(5)])
    assert authn.match(b"key-0") is not None
    assert len(calls) == 5


@pytest.mark.parametrize(
    ("peer", "allowed"),
    [("10.1.2.3", True), ("10.9.9.9", False), ("::ffff:10.1.2.3", True), ("2001:db8::1", True)],
)
def test_peer_allow_list(peer: str, allowed: bool) -> None:
    """The TCP peer is matched against the CIDRs, IPv4-mapped IPv6 unwrapped."""
    nets = (ipaddress.ip_network("10.1.2.0/24"), ipaddress.ip_network("2001:db8::/32"))
    authn = ApiKeyAuthenticator([], allowed_ips=nets)
    if allowed:
        authn.check_peer(_scope({}, (peer, 1)))
    else:
        with pytest.raises(ForbiddenError):
            authn.check_peer(_scope({}, (peer, 1)))


def test_forwarded_headers_do_not_change_the_peer() -> None:
    """X-Forwarded-For from an untrusted peer is ignored by the allow-list."""
    authn = ApiKeyAuthenticator([], allowed_ips=(ipaddress.ip_network("10.0.0.0/8"),))
    with pytest.raises(ForbiddenError):
        authn.check_peer(_scope({"X-Forwarded-For": "10.0.0.1"}, ("192.0.2.1", 1)))


def test_presented_key_prefers_authorization() -> None:
    """When both headers are sent, the Authorization header is the credential."""
    assert presented_key(_scope({"Authorization": "Bearer a", "X-API-Key": "b"})) == b"a"


@pytest.mark.parametrize(
    ("key", "status"),
    [(VIEWER_KEY, 403), (OPERATOR_KEY, 409), (ADMIN_KEY, 409), (EXPIRED_KEY, 401), ("nope", 401)],
)
async def test_roles_are_enforced_on_operator_routes(
    client: httpx.AsyncClient, key: str, status: int
) -> None:
    """Viewers are refused (403) on stop; operators and admins get through to the instance."""
    response = await client.post("/v1/instances/main/rpc", headers=auth(key), content=b"{}")
    assert response.status_code == status
    assert set(response.json()) == {"error", "detail"}


async def test_viewer_reads(client: httpx.AsyncClient) -> None:
    """A viewer key reads status; the error shape carries the role it would need elsewhere."""
    assert (await client.get("/v1/instances", headers=auth(VIEWER_KEY))).status_code == 200
    refused = await client.post("/v1/instances/main/stop", headers=auth(VIEWER_KEY))
    assert refused.status_code == 403
    assert refused.json() == {
        "error": "role_required",
        "detail": "role 'viewer' may not do this; it needs 'operator'",
    }


async def test_allow_list_applies_to_every_route(
    tmp_path: Any, asgi_client: Callable[[DaemonApp, str], httpx.AsyncClient]
) -> None:
    """With allowed_ips set, other peers get 403 even on /v1/health and with a valid key."""
    settings: Settings = parse_settings(
        settings_text(tmp_path, "  allowed_ips: ['192.0.2.0/24']\n")
    )
    async with running(create_app(settings)) as app:
        async with asgi_client(app, "198.51.100.7") as outsider:
            assert (await outsider.get("/v1/health")).status_code == 403
            response = await outsider.get("/v1/instances", headers=auth(ADMIN_KEY))
            assert response.status_code == 403
            assert response.json()["error"] == "ip_not_allowed"
        async with asgi_client(app, "192.0.2.9") as insider:
            assert (await insider.get("/v1/health")).status_code == 200
            assert (await insider.get("/v1/instances", headers=auth(ADMIN_KEY))).status_code == 200
