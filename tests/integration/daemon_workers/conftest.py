"""In-process daemons (real supervisor, real kdf-sim processes) for the worker, capacity,
metrics, update and backup routes.

The app runs in this test's event loop behind an ASGI transport; every KDF it spawns is stopped
by the app's shutdown (``stop_instances_on_exit``) and, as a backstop, killed by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from _loopback import DEADLINE_S, free_port
from kdf_remote.daemon.app import create_app
from kdf_remote.daemon.asgi import DaemonApp
from kdf_remote.daemon.security.tokens import create_jwt_key_file
from kdf_remote.daemon.settings import Settings, parse_settings

ADMIN_KEY = "dw-admin-key-0123456789"
OPERATOR_KEY = "dw-operator-key-0123456789"
VIEWER_KEY = "dw-viewer-key-0123456789"
SIM = Path(sys.executable).parent / "kdf-sim"
COINS = [{"coin": "KMD", "pubtype": 60, "protocol": {"type": "UTXO"}}]


def startup_config() -> dict[str, Any]:
    """A KDF startup config kdf-sim accepts (offline, one coin)."""
    return {"gui": "dw-test", "netid": 8762, "disable_p2p": True, "coins": COINS}


def free_range(size: int) -> tuple[int, int]:
    """``size`` consecutive ports that are free on 127.0.0.1 now."""
    for _ in range(50):
        first = free_port()
        if first + size > 65535:
            continue
        socks = []
        try:
            for port in range(first, first + size):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return first, first + size - 1
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    pytest.fail("no free port range")


def make_settings(root: Path, extra: str = "", *, binary: Path = SIM, kdf: str = "") -> Settings:
    """A daemon config rooted in ``root`` (one key per role) plus ``extra`` YAML."""
    root.mkdir(parents=True, exist_ok=True)
    settings = parse_settings(
        f"daemon: {{state_dir: {root / 'state'}, health_check_interval: 200ms}}\n"
        f"kdf: {{binary_path: {binary}, data_dir: {root / 'data'}, rpc_port: {free_port()},"
        f" start_timeout: 20s, stop_timeout: 5s{kdf}}}\n"
        "security:\n"
        "  rate_limit: {requests_per_minute: 100000}\n"
        "  api_keys:\n"
        f"    - {ADMIN_KEY}\n"
        f"    - {{name: ops, role: operator, key: {OPERATOR_KEY}}}\n"
        f"    - {{name: watcher, role: viewer, key: {VIEWER_KEY}}}\n"
        f"{extra}"
    )
    if not settings.security.jwt.key_file.exists():
        create_jwt_key_file(settings.security.jwt.key_file)
    return settings


def auth(key: str = ADMIN_KEY) -> dict[str, str]:
    """Headers presenting ``key``."""
    return {"X-API-Key": key}


@contextlib.asynccontextmanager
async def serving(
    app: DaemonApp, *, keep_children: bool = False
) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``app``'s lifespan in a task of its own and yield a client of it.

    With ``keep_children`` KDF processes left running are not killed (re-adoption tests).
    """
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
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", timeout=DEADLINE_S
        ) as http:
            yield http
    finally:
        done.set()
        await task
        # Backstop: the app stopped its KDF processes; any child this test started and left
        # behind (a failed assertion mid-start) is killed by its pid.
        for child in psutil.Process().children(recursive=True):
            if child.pid not in before and not keep_children:
                with contextlib.suppress(psutil.Error):
                    child.kill()


def app_for(settings: Settings, *, stop_on_exit: bool = True) -> DaemonApp:
    """The daemon app over the real supervisor."""
    return create_app(settings, stop_instances_on_exit=stop_on_exit)


async def poll(
    check: Callable[[], Awaitable[Any]], what: str, deadline_s: float = DEADLINE_S
) -> Any:
    """Await ``check`` until it returns something truthy; fail naming ``what``."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


async def kdf_version(http: httpx.AsyncClient, name: str = "main") -> str:
    """The version KDF itself reports over RPC."""
    answer = await http.post(
        f"/v1/instances/{name}/rpc", json={"method": "version"}, headers=auth()
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["result"])
