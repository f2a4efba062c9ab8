"""Authentication of the daemon's own routes through its security gate: keys, roles, peers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from kdf_remote.daemon.app import create_app
from kdf_remote.daemon.asgi import DaemonApp

from .conftest import (
    ADMIN_KEY,
    EXPIRED_KEY,
    OPERATOR_KEY,
    VIEWER_KEY,
    auth,
    make_settings,
    running,
)

pytestmark = pytest.mark.unit

ClientFactory = Callable[[DaemonApp, str], httpx.AsyncClient]


async def test_bearer_and_header_keys_are_both_accepted(client: httpx.AsyncClient) -> None:
    """``Authorization: Bearer`` (any case) and ``X-API-Key`` both carry a key."""
    assert (await client.get("/v1/instances", headers=auth(VIEWER_KEY))).status_code == 200
    assert (await client.get("/v1/instances", headers={"X-API-Key": OPERATOR_KEY})).is_success
    lower = {"authorization": f"bearer   {OPERATOR_KEY} "}
    assert (await client.get("/v1/instances", headers=lower)).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": ""}, {"Authorization": "Bearer"}],
)
async def test_missing_or_wrong_keys_are_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    """No key, an empty key or an unknown key is unauthorized."""
    response = await client.get("/v1/instances", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


async def test_other_schemes_and_two_credentials_are_refused(client: httpx.AsyncClient) -> None:
    """Basic auth is refused, not parsed as a key; so is a request carrying two credentials."""
    basic = await client.get("/v1/instances", headers={"Authorization": "Basic cmlnaHQ="})
    assert basic.status_code == 401
    assert basic.json()["detail"] == "unsupported Authorization scheme: use Bearer"
    both = {**auth(ADMIN_KEY), "X-API-Key": VIEWER_KEY}
    assert (await client.get("/v1/instances", headers=both)).status_code == 401


async def test_expired_keys_are_401(client: httpx.AsyncClient) -> None:
    """A key past its ``expires`` is refused, naming the key but not showing it."""
    response = await client.get("/v1/instances", headers=auth(EXPIRED_KEY))
    assert response.status_code == 401
    assert response.json()["detail"] == "API key 'old' has expired"
    assert EXPIRED_KEY not in response.text


@pytest.mark.parametrize(
    ("key", "status"),
    [(VIEWER_KEY, 403), (OPERATOR_KEY, 409), (ADMIN_KEY, 409), (EXPIRED_KEY, 401), ("nope", 401)],
)
async def test_roles_are_enforced_on_operator_routes(
    client: httpx.AsyncClient, key: str, status: int
) -> None:
    """Viewers are refused (403) the RPC proxy; operators and admins reach the instance (409)."""
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


@pytest.mark.parametrize(
    ("peer", "allowed"),
    [("10.1.2.3", True), ("10.9.9.9", False), ("::ffff:10.1.2.3", True), ("2001:db8::1", True)],
)
async def test_peer_allow_list(
    tmp_path: Path, asgi_client: ClientFactory, peer: str, allowed: bool
) -> None:
    """The TCP peer is matched against the CIDRs, IPv4-mapped IPv6 unwrapped."""
    settings = make_settings(tmp_path, "  allowed_ips: ['10.1.2.0/24', '2001:db8::/32']\n")
    async with running(create_app(settings)) as app, asgi_client(app, peer) as http:
        response = await http.get("/v1/instances", headers=auth(ADMIN_KEY))
    assert response.status_code == (200 if allowed else 403)


async def test_forwarded_headers_do_not_change_the_peer(
    tmp_path: Path, asgi_client: ClientFactory
) -> None:
    """X-Forwarded-For from a peer that is not a trusted proxy is ignored by the allow-list."""
    settings = make_settings(tmp_path, "  allowed_ips: ['10.0.0.0/8']\n")
    spoofed = {**auth(ADMIN_KEY), "X-Forwarded-For": "10.0.0.1"}
    async with running(create_app(settings)) as app, asgi_client(app, "192.0.2.1") as http:
        response = await http.get("/v1/instances", headers=spoofed)
    assert response.status_code == 403
    assert response.json()["error"] == "ip_not_allowed"


async def test_allow_list_applies_to_every_route(
    tmp_path: Path, asgi_client: ClientFactory
) -> None:
    """With allowed_ips set, other peers get 403 even on /v1/health and with a valid key."""
    settings = make_settings(tmp_path, "  allowed_ips: ['192.0.2.0/24']\n")
    async with running(create_app(settings)) as app:
        async with asgi_client(app, "198.51.100.7") as outsider:
            assert (await outsider.get("/v1/health")).status_code == 403
            response = await outsider.get("/v1/instances", headers=auth(ADMIN_KEY))
            assert response.status_code == 403
            assert response.json()["error"] == "ip_not_allowed"
        async with asgi_client(app, "192.0.2.9") as insider:
            assert (await insider.get("/v1/health")).status_code == 200
            assert (await insider.get("/v1/instances", headers=auth(ADMIN_KEY))).status_code == 200
