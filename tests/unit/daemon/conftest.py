"""In-process fixtures for the daemon's unit tests: settings, the app, an ASGI client.

The app runs with the real supervisor, but no test here starts KDF: every path exercised ends
before a process would be spawned (auth, routing, validation, wrong-state errors).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from kdf_remote.daemon.app import create_app
from kdf_remote.daemon.asgi import DaemonApp
from kdf_remote.daemon.security.tokens import create_jwt_key_file
from kdf_remote.daemon.settings import Settings, parse_settings

ADMIN_KEY = "admin-key-0123456789"
OPERATOR_KEY = "operator-key-0123456789"
VIEWER_KEY = "viewer-key-0123456789"
EXPIRED_KEY = "expired-key-0123456789"


def settings_text(tmp_path: Path, extra: str = "") -> str:
    """A daemon config rooted in ``tmp_path`` with one key per role and an expired one."""
    viewer_hash = hashlib.sha256(VIEWER_KEY.encode()).hexdigest()
    return (
        f"daemon: {{state_dir: {tmp_path / 'state'}, port: 18080}}\n"
        f"kdf: {{binary_path: {tmp_path / 'no-kdf'}, data_dir: {tmp_path / 'data'}}}\n"
        "security:\n"
        "  max_body_size: 4K\n"
        "  max_log_tail: 500\n"
        "  api_keys:\n"
        f"    - {ADMIN_KEY}\n"
        f"    - {{name: ops, role: operator, key: {OPERATOR_KEY}}}\n"
        f"    - {{name: watcher, role: viewer, key_hash: 'sha256:{viewer_hash}'}}\n"
        f"    - {{name: old, role: admin, key: {EXPIRED_KEY}, expires: '2020-01-01T00:00:00Z'}}\n"
        f"{extra}"
    )


def make_settings(tmp_path: Path, extra: str = "") -> Settings:
    """Parsed :func:`settings_text`, with the JWT key file the daemon needs to start."""
    settings = parse_settings(settings_text(tmp_path, extra))
    create_jwt_key_file(settings.security.jwt.key_file)
    return settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings rooted in the test's temporary directory."""
    return make_settings(tmp_path)


AppFactory = Callable[..., DaemonApp]


@contextlib.asynccontextmanager
async def running(app: DaemonApp) -> AsyncIterator[DaemonApp]:
    """Run ``app``'s lifespan in a task of its own (entered and left in that one task)."""
    started, done = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with app.litestar.lifespan():
            started.set()
            await done.wait()

    task = asyncio.create_task(hold())
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()
    try:
        yield app
    finally:
        done.set()
        await task


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to a started app (lifespan entered) without a socket."""
    app = create_app(settings, stop_instances_on_exit=True)
    async with running(app), _client(app) as http:
        yield http


def _client(app: DaemonApp, peer: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
def asgi_client() -> Callable[[DaemonApp, str], httpx.AsyncClient]:
    """Factory for a client of a given app as seen from a given peer address."""
    return _client


def auth(key: str) -> dict[str, str]:
    """Headers presenting ``key`` as a bearer token."""
    return {"Authorization": f"Bearer {key}"}
