"""The wiring the lead will use: the gate in front of the daemon's own ``create_app``.

``SecurityMiddleware(create_app(settings, authenticator=GateAuthenticator()), runtime)``: the
daemon's handlers and RPC fast path see the gate's principal, and refusals are audited.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from kdf_remote.daemon.app import create_app
from kdf_remote.daemon.security.middleware import GateAuthenticator, SecurityMiddleware
from kdf_remote.daemon.security.runtime import SecurityRuntime
from kdf_remote.daemon.security.tokens import create_jwt_key_file
from kdf_remote.daemon.settings import parse_settings

pytestmark = [pytest.mark.unit, pytest.mark.security]

ADMIN = "admin-key-0123456789"
VIEWER = "viewer-key-0123456789"


@asynccontextmanager
async def wired(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    """The daemon app (lifespan entered) behind the gate, and the audit log path.

    A context manager rather than a fixture: the lifespan must be left in the task that
    entered it.
    """
    settings = parse_settings(
        f"daemon: {{host: 127.0.0.1, state_dir: {tmp_path / 'state'}}}\n"
        f"kdf: {{binary_path: {tmp_path / 'no-kdf'}, data_dir: {tmp_path / 'data'}}}\n"
        "security:\n"
        f"  api_keys: [{ADMIN}, {{name: watcher, role: viewer, key: {VIEWER}}}]\n"
    )
    create_jwt_key_file(settings.security.jwt.key_file)
    runtime = SecurityRuntime.from_settings(settings.security)
    daemon = create_app(settings, authenticator=GateAuthenticator(), stop_instances_on_exit=True)
    app = SecurityMiddleware(daemon, runtime)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    try:
        async with (
            daemon.litestar.lifespan(),
            httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
        ):
            yield client, settings.security.audit_log
    finally:
        runtime.close()


async def test_daemon_routes_see_the_gate_principal(tmp_path: Path) -> None:
    """Health is public, reads need a key, the daemon's role guards apply to gate principals."""
    async with wired(tmp_path) as (client, _):
        await _check_routes(client)


async def _check_routes(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/health")).status_code == 200
    assert (await client.get("/v1/instances")).status_code == 401
    assert (await client.get("/v1/instances", headers={"X-API-Key": VIEWER})).status_code == 200
    stop = await client.post("/v1/instances/main/stop", headers={"X-API-Key": VIEWER})
    assert stop.status_code == 403
    rpc = await client.post(
        "/v1/instances/main/rpc", headers={"X-API-Key": VIEWER}, json={"method": "version"}
    )
    assert rpc.status_code == 403


async def test_daemon_refusals_are_audited(tmp_path: Path) -> None:
    """A viewer's refused stop is one audit line with the route template and target."""
    async with wired(tmp_path) as (client, audit_log):
        await client.post("/v1/instances/main/stop", headers={"X-API-Key": VIEWER})
    entry = json.loads(audit_log.read_text().splitlines()[-1])
    assert (entry["actor"], entry["action"], entry["target"], entry["status"]) == (
        "watcher",
        "POST /v1/instances/{name}/stop",
        "main",
        403,
    )
