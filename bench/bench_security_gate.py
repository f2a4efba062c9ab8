"""Cost of the security gate per request, in-process (no sockets), on this machine.

Prints microseconds per request through ``SecurityMiddleware`` in front of a trivial ASGI app for:
the bare app, a public route, an API key, an access token, and a signed admin request.

    .venv/bin/python bench/bench_security_gate.py [--n 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from kdf_remote.daemon.principal import Role
from kdf_remote.daemon.security.audit import AuditLog
from kdf_remote.daemon.security.keystore import KeyStore, add_key, derive_signing_key
from kdf_remote.daemon.security.middleware import SecurityMiddleware
from kdf_remote.daemon.security.runtime import RateLimits, SecurityPolicy, SecurityRuntime
from kdf_remote.daemon.security.signing import sign
from kdf_remote.daemon.security.tokens import (
    RevokedTokens,
    TokenPolicy,
    TokenService,
    create_jwt_key_file,
    load_jwt_key,
)


async def inner(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def scope_for(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "scheme": "https",
    }


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(message: Any) -> None:
    return None


async def measure(app: Any, make_scope: Any, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        await app(make_scope(), receive, send)
    return (time.perf_counter() - start) / n * 1e6


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        create_jwt_key_file(state / "jwt.key")
        key = add_key(state / "keys.json", name="ops", role=Role.ADMIN).key
        runtime = SecurityRuntime(
            keys=KeyStore([], state / "keys.json"),
            tokens=TokenService(
                load_jwt_key(state / "jwt.key"),
                TokenPolicy(issuer="i", audience="a", ttl=600),
                RevokedTokens(None),
            ),
            audit=AuditLog(state / "audit.log"),
            policy=SecurityPolicy(),
            limits=RateLimits(requests_per_minute=10**9),
        )
        gate = SecurityMiddleware(inner, runtime)
        token = runtime.tokens.issue(runtime.keys.lookup(key)).access_token
        signing_key = derive_signing_key(key)

        def signed() -> dict[str, Any]:
            ts, nonce = str(int(time.time())), secrets.token_urlsafe(18)
            headers = [
                (b"authorization", f"Bearer {key}".encode()),
                (b"x-kdf-timestamp", ts.encode()),
                (b"x-kdf-nonce", nonce.encode()),
                (b"x-kdf-signature", sign(signing_key, "GET", "/v1/x", ts, nonce, b"").encode()),
            ]
            return scope_for("GET", "/v1/x", headers)

        cases = {
            "bare app (no gate)": (inner, lambda: scope_for("GET", "/v1/x", [])),
            "public route": (gate, lambda: scope_for("GET", "/v1/health", [])),
            "API key": (gate, lambda: scope_for("GET", "/v1/x", [(b"x-api-key", key.encode())])),
            "access token": (
                gate,
                lambda: scope_for("GET", "/v1/x", [(b"authorization", f"Bearer {token}".encode())]),
            ),
            "signed request": (gate, signed),
        }
        print(f"{'case':<22} us/request (n={n})")
        for name, (app, make) in cases.items():
            await measure(app, make, min(n, 1000))  # warm-up
            print(f"{name:<22} {await measure(app, make, n):8.1f}")
        runtime.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    asyncio.run(main(parser.parse_args().n))
