"""The gate behind uvicorn over real TLS on loopback, configured by ``uvicorn_config``."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from litestar import Litestar, Request, get

from kdf_remote.daemon.errors import exception_handlers
from kdf_remote.daemon.principal import Principal
from kdf_remote.daemon.security.certs import TlsFiles
from kdf_remote.daemon.security.guards import public_endpoint, require_role
from kdf_remote.daemon.security.plugin import SecurityPlugin
from kdf_remote.daemon.security.runtime import SecurityRuntime
from kdf_remote.daemon.security.tls import uvicorn_config
from kdf_remote.daemon.security.tokens import create_jwt_key_file
from kdf_remote.daemon.settings import Settings, parse_settings

from .conftest import HANDSHAKE_TIMEOUT, legacy_client

pytestmark = [pytest.mark.integration, pytest.mark.security]

KEY = "yaml-key-for-uvicorn-0123456789"


@get("/v1/health", guards=[public_endpoint], sync_to_thread=False)
def health() -> dict[str, str]:
    """Public liveness."""
    return {"status": "ok"}


@get("/v1/whoami", guards=[require_role("viewer")], sync_to_thread=False)
def whoami(request: Request[Any, Any, Any]) -> dict[str, str]:
    """Echo the principal."""
    user = request.user
    assert isinstance(user, Principal)
    return {"name": user.name}


def _settings(tmp_path: Path, files: TlsFiles) -> Settings:
    text = (
        f"daemon: {{host: 127.0.0.1, state_dir: {tmp_path / 'state'}}}\n"
        "security:\n"
        f"  api_keys: [{KEY}]\n"
        "  allowed_ips: [127.0.0.1/32]\n"
        f"  ssl: {{cert_path: {files.server_cert}, key_path: {files.server_key}}}\n"
    )
    return parse_settings(text, base_dir=tmp_path)


@asynccontextmanager
async def serving(settings: Settings, **overrides: Any) -> AsyncIterator[int]:
    """Run the test app under uvicorn on a pre-bound loopback socket; yields the port."""
    create_jwt_key_file(settings.security.jwt.key_file)
    runtime = SecurityRuntime.from_settings(settings.security)
    plugin = SecurityPlugin(runtime)
    app = plugin.install(
        Litestar(
            route_handlers=[health, whoami],
            plugins=[plugin],
            exception_handlers=exception_handlers(),
            logging_config=None,
        )
    )
    ssl_settings = settings.security.ssl
    assert ssl_settings is not None
    config = uvicorn_config(
        app,
        host="127.0.0.1",
        port=0,
        cert=ssl_settings.cert_path,
        key=ssl_settings.key_path,
        log_level="warning",
        log_config=None,
    )
    for name, value in overrides.items():
        setattr(config, name, value)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(30):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        sock.close()


async def test_https_health_with_pinned_ca_hsts_and_no_server_header(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    """Over TLS with the pinned CA: 200, HSTS, nosniff, and no ``Server`` header."""
    pinned = ssl.create_default_context(cafile=tls_files.ca_cert)
    async with (
        serving(_settings(tmp_path, tls_files)) as port,
        httpx.AsyncClient(verify=pinned, timeout=30) as client,
    ):
        response = await client.get(f"https://127.0.0.1:{port}/v1/health")
        assert response.status_code == 200
        assert response.headers["strict-transport-security"] == "max-age=63072000"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "server" not in response.headers
        me = await client.get(f"https://localhost:{port}/v1/whoami", headers={"X-API-Key": KEY})
        assert me.json() == {"name": "key1"}


async def test_uvicorn_serves_our_cipher_policy(tmp_path: Path, tls_files: TlsFiles) -> None:
    """uvicorn uses the Mozilla context: a TLS 1.2 CBC client is refused, an AEAD one accepted."""
    async with serving(_settings(tmp_path, tls_files)) as port:
        ok = legacy_client(version=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256")
        _, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=ok, server_hostname="127.0.0.1"),
            HANDSHAKE_TIMEOUT,
        )
        assert writer.get_extra_info("cipher")[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"
        writer.close()
        cbc = legacy_client(version=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-ECDSA-AES128-SHA256")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, ssl=cbc, server_hostname="127.0.0.1"),
                HANDSHAKE_TIMEOUT,
            )


async def test_uvicorn_does_not_rewrite_the_peer_from_forwarded_headers(
    tmp_path: Path, tls_files: TlsFiles
) -> None:
    """Our config ignores a spoofed X-Forwarded-For from 127.0.0.1; uvicorn's default obeys it."""
    pinned = ssl.create_default_context(cafile=tls_files.ca_cert)
    spoofed = {"X-API-Key": KEY, "X-Forwarded-For": "203.0.113.5"}
    async with (
        serving(_settings(tmp_path, tls_files)) as port,
        httpx.AsyncClient(verify=pinned, timeout=30) as client,
    ):
        response = await client.get(f"https://127.0.0.1:{port}/v1/whoami", headers=spoofed)
        assert response.status_code == 200
    # Control: uvicorn's default proxy handling would have let the header pick the address.
    async with (
        serving(_settings(tmp_path / "control", tls_files), proxy_headers=True) as port,
        httpx.AsyncClient(verify=pinned, timeout=30) as client,
    ):
        response = await client.get(f"https://127.0.0.1:{port}/v1/whoami", headers=spoofed)
        assert response.status_code == 403
