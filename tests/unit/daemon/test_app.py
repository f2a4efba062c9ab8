"""The REST surface in-process: deny by default, roles per route, one error shape, OpenAPI."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kdf_remote.daemon.app import create_app
from kdf_remote.daemon.asgi import DaemonApp
from kdf_remote.daemon.auth import PUBLIC_ROUTES, ROLE_OPT
from kdf_remote.daemon.principal import Role
from kdf_remote.daemon.settings import Settings

from .conftest import ADMIN_KEY, VIEWER_KEY, _client, auth, running

pytestmark = pytest.mark.unit

VALID_CONFIG = b'{"gui": "t", "netid": 8762, "disable_p2p": true}'


@pytest.fixture(params=[True, False], ids=["fast-rpc", "litestar-rpc"])
async def app(settings: Settings, request: pytest.FixtureRequest) -> AsyncIterator[DaemonApp]:
    """The app, with the RPC proxy on its raw ASGI fast path and through Litestar."""
    async with running(create_app(settings, fast_rpc=request.param)) as started:
        yield started


@pytest.fixture
async def http(app: DaemonApp) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``app``."""
    async with _client(app) as client:
        yield client


def _modes_of_files_holding(root: Path, needle: bytes) -> list[int]:
    files = [p for p in root.rglob("*") if p.is_file()]
    return [p.stat().st_mode & 0o777 for p in files if needle in p.read_bytes()]


def _concrete(path: str) -> str:
    return re.sub(r"\{(\w+):\w+\}", lambda m: "main" if m.group(1) == "name" else "x", path)


def _registered(app: DaemonApp) -> list[tuple[str, str]]:
    pairs = []
    for route in app.litestar.routes:
        for method in getattr(route, "methods", ()):
            pairs.append((method, _concrete(route.path)))
    return sorted(set(pairs))


async def test_every_registered_route_denies_without_credentials(
    app: DaemonApp, http: httpx.AsyncClient
) -> None:
    """Walk every route and method: only GET /v1/health answers without an API key."""
    pairs = _registered(app)
    assert ("POST", "/v1/instances/main/rpc") in pairs
    assert ("GET", "/v1/schema/openapi.json") in pairs
    for method, path in pairs:
        response = await http.request(method, path)
        if (method, path) in PUBLIC_ROUTES:
            assert response.status_code == 200, (method, path)
            continue
        assert response.status_code == 401, (method, path, response.status_code)
        assert response.json()["error"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
@pytest.mark.parametrize("path", ["/", "/v1", "/v1/health/", "/v1/nothing", "/v1/instances/x/y"])
async def test_unregistered_routes_and_methods_also_deny(
    http: httpx.AsyncClient, method: str, path: str
) -> None:
    """The gate runs before routing: no path or method reveals anything without a key."""
    response = await http.request(method, path)
    assert response.status_code == 401


ADMIN_ROUTES = {
    ("/v1/instances/{name:str}/kdf-compat", "GET"),
    ("/v1/instances/{name:str}/backups/{backup_id:str}/restore", "POST"),
    ("/v1/workers", "POST"),
    ("/v1/workers/{name:str}", "DELETE"),
    ("/v1/kdf/update", "POST"),
}
"""Admin routes (design.md, issue 7): workers, KDF updates, restores, and the kdf_compat
connection details (they carry the instance's rpc_password)."""
VIEWER_ROUTES_OUTSIDE_INSTANCES = {
    ("/v1/workers", "GET"),
    ("/v1/capacity", "GET"),
    ("/v1/metrics", "GET"),
    ("/v1/kdf/update", "GET"),
}


def test_every_handler_declares_the_role_of_design_md(app: DaemonApp) -> None:
    """Each /v1/instances handler has a guard for viewer (GET) or operator (POST, PUT), except
    the admin routes; the worker, capacity, metrics and update routes have theirs."""
    seen = 0
    for route in app.litestar.routes:
        for handler in getattr(route, "route_handlers", ()):
            methods = set(handler.http_methods) - {"OPTIONS"}
            if not methods:
                continue
            (method,) = methods
            key = (route.path, method)
            if key in ADMIN_ROUTES:
                expected = Role.ADMIN
            elif key in VIEWER_ROUTES_OUTSIDE_INSTANCES:
                expected = Role.VIEWER
            elif route.path.startswith("/v1/instances"):
                expected = Role.VIEWER if method == "GET" else Role.OPERATOR
            else:
                continue
            assert handler.opt.get(ROLE_OPT) is expected, (route.path, methods)
            assert handler.guards, route.path
            seen += 1
    assert seen == 20


async def test_error_shape_for_unknown_instances(http: httpx.AsyncClient) -> None:
    """Every instance route answers 404 in the one shape for an unknown name."""
    calls = [
        ("GET", "/v1/instances/nope", None),
        ("POST", "/v1/instances/nope/start", VALID_CONFIG),
        ("POST", "/v1/instances/nope/stop", None),
        ("POST", "/v1/instances/nope/restart", None),
        ("PUT", "/v1/instances/nope/config", VALID_CONFIG),
        ("GET", "/v1/instances/nope/logs", None),
        ("GET", "/v1/instances/nope/health", None),
        ("POST", "/v1/instances/nope/rpc", b'{"method": "version"}'),
    ]
    for method, path, body in calls:
        response = await http.request(method, path, content=body, headers=auth(ADMIN_KEY))
        assert response.status_code == 404, path
        assert response.json() == {"error": "not_found", "detail": "no instance named 'nope'"}


async def test_wrong_state_is_409(http: httpx.AsyncClient) -> None:
    """RPC to a stopped instance, and a start with no stored config, are conflicts."""
    rpc = await http.post("/v1/instances/main/rpc", content=b"{}", headers=auth(ADMIN_KEY))
    assert rpc.status_code == 409
    assert rpc.json()["error"] == "not_running"
    start = await http.post("/v1/instances/main/start", headers=auth(ADMIN_KEY))
    assert start.status_code == 409
    assert start.json()["error"] == "no_stored_config"


async def test_bad_startup_configs_are_400_naming_the_field(http: httpx.AsyncClient) -> None:
    """Unknown fields, bad types, weak passwords and https are refused; secrets are not echoed."""
    cases = {
        b'{"gui": "t", "bogus": 1}': "bogus: got '***', expected a KDF startup field",
        b'{"netid": "x"}': "netid: got 'x', expected int",
        b'{"rpc_password": "weakpass"}': "rpc_password: got '***'",
        b'{"disable_p2p": true, "https": true}': "https: got true, expected false or absent",
        b"[1]": "$: got 'list', expected a JSON object",
    }
    for body, expected in cases.items():
        response = await http.put(
            "/v1/instances/main/config", content=body, headers=auth(ADMIN_KEY)
        )
        assert response.status_code == 400, body
        assert response.json()["error"] == "invalid_config"
        assert expected in response.json()["detail"], response.json()
        assert "weakpass" not in response.text


async def test_put_config_stores_secrets_write_only(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    """A stored config is answered without secrets; the file holding them is 0600."""
    body = (
        b'{"gui": "t", "netid": 8762, "disable_p2p": true, '
        b'"passphrase": "correct horse battery staple", "rpcip": "0.0.0.0", "rpcport": 1234}'
    )
    response = await http.put("/v1/instances/main/config", content=body, headers=auth(ADMIN_KEY))
    assert response.status_code == 200
    answer = response.json()
    assert answer["secrets_set"] == ["passphrase", "rpc_password"]
    assert answer["config"]["rpcip"] == "127.0.0.1"
    assert answer["config"]["rpc_local_only"] is True
    assert answer["config"]["rpcport"] == settings.kdf.rpc_port
    assert "passphrase" not in answer["config"]
    assert "correct horse" not in response.text
    modes = _modes_of_files_holding(settings.daemon.state_dir, b"correct horse")
    assert modes
    assert set(modes) == {0o600}


async def test_oversized_bodies_are_413(http: httpx.AsyncClient) -> None:
    """Bodies over security.max_body_size (4K here) are refused before they are read."""
    big = b'{"method": "version", "pad": "' + b"x" * 5000 + b'"}'
    for path in ("/v1/instances/main/rpc", "/v1/instances/main/start", "/v1/instances/main/config"):
        method = "PUT" if path.endswith("config") else "POST"
        response = await http.request(method, path, content=big, headers=auth(ADMIN_KEY))
        assert response.status_code == 413, path
        assert response.json()["error"] == "payload_too_large"


async def test_bad_query_values_are_400(http: httpx.AsyncClient) -> None:
    """Malformed or out-of-range query values are 400 with the parameter named."""
    bad = await http.get("/v1/instances/main/logs?tail=abc", headers=auth(VIEWER_KEY))
    assert bad.status_code == 400
    assert bad.json()["detail"].startswith("query parameter 'tail'")
    over = await http.get("/v1/instances/main/logs?tail=501", headers=auth(VIEWER_KEY))
    assert over.status_code == 400
    assert "expected at most 500" in over.json()["detail"]


async def test_wrong_method_is_405_with_allow(http: httpx.AsyncClient) -> None:
    """An authenticated request with a method the route lacks gets 405 and an Allow header."""
    response = await http.delete("/v1/instances/main", headers=auth(ADMIN_KEY))
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert "GET" in response.headers["allow"]


async def test_health_and_status_of_a_stopped_instance(http: httpx.AsyncClient) -> None:
    """A stopped instance reports unhealthy (not an error), with its status fields."""
    health = await http.get("/v1/instances/main/health", headers=auth(VIEWER_KEY))
    assert health.status_code == 200
    assert health.json()["healthy"] is False
    assert health.json()["state"] == "stopped"
    status = await http.get("/v1/instances", headers=auth(VIEWER_KEY))
    (main,) = status.json()["instances"]
    assert main["name"] == "main"
    assert main["state"] == "stopped"
    logs = await http.get("/v1/instances/main/logs?tail=5", headers=auth(VIEWER_KEY))
    assert logs.json() == {"name": "main", "lines": []}


async def test_public_health_says_nothing_else(http: httpx.AsyncClient) -> None:
    """GET /v1/health is only status and version."""
    response = await http.get("/v1/health")
    assert set(response.json()) == {"status", "version"}
    assert response.json()["status"] == "ok"


async def test_openapi_document(http: httpx.AsyncClient) -> None:
    """The document needs a key and declares every status each operation can return."""
    assert (await http.get("/v1/schema/openapi.json")).status_code == 401
    doc: dict[str, Any] = (
        await http.get("/v1/schema/openapi.json", headers=auth(VIEWER_KEY))
    ).json()
    assert "KdfStartupConfig" in doc["components"]["schemas"]
    assert doc["paths"]["/v1/health"]["get"]["security"] == []
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            statuses = set(operation["responses"])
            if path == "/v1/health":
                assert "401" not in statuses
                continue
            assert {"401", "403"} <= statuses, (method, path)
            if "{name}" in path:
                assert "404" in statuses, (method, path)
    rpc = doc["paths"]["/v1/instances/{name}/rpc"]["post"]
    assert {"200", "400", "403", "404", "409", "413", "500", "502"} <= set(rpc["responses"])
    logs = doc["paths"]["/v1/instances/{name}/logs"]["get"]
    assert "text/event-stream" in logs["responses"]["200"]["content"]
    tail = next(p for p in logs["parameters"] if p["name"] == "tail")
    assert tail["schema"]["maximum"] == 500
