"""The security layer wired into the daemon's own ``create_app``, in-process (no socket, no KDF).

``create_app`` builds the runtime from ``security:``, registers the plugin and puts the gate in
front of ``DaemonApp`` (RPC fast path included); ``build_server_config`` configures uvicorn.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from kdf_remote.daemon.app import create_app
from kdf_remote.daemon.asgi import rpc_audit_detail
from kdf_remote.daemon.security.errors import SecurityConfigError
from kdf_remote.daemon.security.guards import undeclared_handlers
from kdf_remote.daemon.security.tokens import create_jwt_key_file
from kdf_remote.daemon.server import build_server_config
from kdf_remote.daemon.settings import Settings, parse_settings

pytestmark = [pytest.mark.unit, pytest.mark.security]

ADMIN = "admin-key-0123456789"
VIEWER = "viewer-key-0123456789"
SECRET_PARAM = "hunter2-never-in-the-audit"


def _settings(tmp_path: Path, extra: str = "", *, host: str = "127.0.0.1") -> Settings:
    return parse_settings(
        f"daemon: {{host: '{host}', state_dir: {tmp_path / 'state'}}}\n"
        f"kdf: {{binary_path: {tmp_path / 'no-kdf'}, data_dir: {tmp_path / 'data'}}}\n"
        "security:\n"
        f"  api_keys: [{ADMIN}, {{name: watcher, role: viewer, key: {VIEWER}}}]\n"
        f"{extra}",
        source="daemon.yaml",
    )


@asynccontextmanager
async def wired(
    tmp_path: Path, *, fast_rpc: bool = True
) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    """The daemon app (lifespan entered) and the audit log path.

    A context manager rather than a fixture: the lifespan must be left in the task that
    entered it.
    """
    settings = _settings(tmp_path)
    create_jwt_key_file(settings.security.jwt.key_file)
    daemon = create_app(settings, stop_instances_on_exit=True, fast_rpc=fast_rpc)
    transport = httpx.ASGITransport(app=daemon, client=("127.0.0.1", 40000))
    async with (
        daemon.litestar.lifespan(),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        yield client, settings.security.audit_log


def _audit(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_daemon_routes_see_the_gate_principal(tmp_path: Path) -> None:
    """Health is public, reads need a key, the daemon's role guards apply to gate principals."""
    async with wired(tmp_path) as (client, _):
        assert (await client.get("/v1/health")).status_code == 200
        assert (await client.get("/v1/instances")).status_code == 401
        assert (await client.get("/v1/instances", headers={"X-API-Key": VIEWER})).is_success
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
    entry = _audit(audit_log)[-1]
    assert (entry["actor"], entry["action"], entry["target"], entry["status"]) == (
        "watcher",
        "POST /v1/instances/{name}/stop",
        "main",
        403,
    )


@pytest.mark.parametrize("fast_rpc", [True, False], ids=["fast-path", "litestar"])
async def test_rpc_audit_names_instance_and_methods_never_params(
    tmp_path: Path, fast_rpc: bool
) -> None:
    """Both RPC paths write the same audit line: instance, method names, no parameter values."""
    batch = [
        {"method": "withdraw", "params": {"passphrase": SECRET_PARAM}},
        {"method": "my_balance", "coin": SECRET_PARAM},
        {"method": "withdraw"},
    ]
    async with wired(tmp_path, fast_rpc=fast_rpc) as (client, audit_log):
        answer = await client.post(
            "/v1/instances/main/rpc", headers={"X-API-Key": ADMIN}, json=batch
        )
        assert answer.status_code == 409  # main is not running
    entry = _audit(audit_log)[-1]
    assert entry["action"] == "POST /v1/instances/{name}/rpc"
    assert (entry["actor"], entry["target"], entry["outcome"]) == ("key1", "main", "failed")
    assert entry["detail"] == "methods: withdraw, my_balance"
    assert SECRET_PARAM not in audit_log.read_text()


def test_rpc_audit_detail_is_bounded() -> None:
    """Unparsable bodies are named as such; long batches and names are cut."""
    assert rpc_audit_detail(b"") == "methods: none (empty body)"
    assert rpc_audit_detail(b"{not json") == "methods: unknown (not a JSON-RPC body)"
    batch = json.dumps([{"method": f"m{i}" + "x" * 100} for i in range(20)]).encode()
    detail = rpc_audit_detail(batch)
    assert detail.endswith("(+12 more)") and len(detail) < 700
    assert rpc_audit_detail(b'[{"params": 1}]') == "methods: ?"


async def test_websockets_are_refused_before_routing(tmp_path: Path) -> None:
    """A WebSocket handshake is closed by the gate (the API has no WebSocket route)."""
    settings = _settings(tmp_path)
    create_jwt_key_file(settings.security.jwt.key_file)
    app = create_app(settings)
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope: dict[str, Any] = {
        "type": "websocket",
        "path": "/v1/instances",
        "headers": [],
        "client": ("1.2.3.4", 1),
    }
    await app(scope, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]
    app.security.close()


def test_every_daemon_handler_declares_a_role(tmp_path: Path) -> None:
    """Deny by default: no handler of the daemon is open except the public health route."""
    settings = _settings(tmp_path)
    create_jwt_key_file(settings.security.jwt.key_file)
    app = create_app(settings)
    try:
        assert undeclared_handlers(app.litestar) == []
    finally:
        app.security.close()


def test_missing_jwt_key_refuses_to_build_the_app(tmp_path: Path) -> None:
    """Without its token-signing key the daemon does not start."""
    with pytest.raises(SecurityConfigError, match=r"security\.jwt\.key_file"):
        create_app(_settings(tmp_path))


def test_plain_keys_in_the_yaml_are_warned_about_by_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each plain YAML key is one warning naming its entry and line, never the key itself."""
    settings = _settings(tmp_path)
    create_jwt_key_file(settings.security.jwt.key_file)
    with caplog.at_level(logging.WARNING, logger="kdf_remote.daemon.security"):
        app = create_app(settings)
    app.security.close()
    warnings = [r.getMessage() for r in caplog.records if "plain key" in r.getMessage()]
    assert len(warnings) == 2
    assert warnings[0].startswith("security.api_keys[0] (name 'key1', line 4)")
    assert warnings[1].startswith("security.api_keys[1] (name 'watcher', line 4)")
    assert not any(ADMIN in text or VIEWER in text for text in caplog.messages)


def test_plain_http_is_refused_off_loopback(tmp_path: Path) -> None:
    """The server configuration refuses 0.0.0.0 without TLS, naming daemon.host."""
    settings = _settings(tmp_path, host="0.0.0.0")
    create_jwt_key_file(settings.security.jwt.key_file)
    app = create_app(settings)
    try:
        with pytest.raises(SecurityConfigError, match=r"daemon\.host"):
            build_server_config(settings, app)
        loopback = build_server_config(_settings(tmp_path), app)
        assert not loopback.is_ssl and loopback.proxy_headers is False
        assert loopback.server_header is False
    finally:
        app.security.close()


def test_tls_uses_the_hardened_context_factory(tmp_path: Path) -> None:
    """With security.ssl, uvicorn gets our context factory instead of cert and key paths."""
    ssl_section = f"  ssl: {{cert_path: {tmp_path / 'c.pem'}, key_path: {tmp_path / 'k.pem'}}}\n"
    settings = _settings(tmp_path, ssl_section, host="0.0.0.0")
    create_jwt_key_file(settings.security.jwt.key_file)
    app = create_app(settings)
    try:
        config = build_server_config(settings, app)
        assert config.is_ssl and config.ssl_context_factory is not None
        assert config.ssl_certfile is None and config.ssl_keyfile is None
    finally:
        app.security.close()
