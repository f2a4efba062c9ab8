"""A kdf-remote-daemon for benchmarks: its configuration, and its process started, waited for
and stopped."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from kdf_remote.daemon.security.tokens import create_jwt_key_file

BIN = Path(sys.executable).parent
API_KEY = "bench-admin-key-0123456789"


def write_config(root: Path, port: int, rpc_port: int, *, extra: str = "") -> Path:
    """A daemon on 127.0.0.1:``port`` with kdf-sim as KDF, admin key :data:`API_KEY`.

    ``extra`` is appended YAML (e.g. a ``kdf_compat:`` section).
    """
    path = root / "daemon.yaml"
    path.write_text(
        f"daemon: {{port: {port}, host: 127.0.0.1, state_dir: {root / 'state'}, "
        "log_level: warning}\n"
        f"kdf: {{binary_path: {BIN / 'kdf-sim'}, data_dir: {root / 'data'}, "
        f"rpc_port: {rpc_port}}}\n"
        "worker_support: {enabled: false}\n"
        "security:\n"
        f"  api_keys: [{API_KEY}]\n"
        # The benchmarks measure the proxy, not the rate limiter (which would answer 429).
        "  rate_limit: {requests_per_minute: 100000000}\n" + extra
    )
    # The daemon refuses to start without its token-signing key (made at install time).
    create_jwt_key_file(root / "state" / "jwt.key")
    return path


@contextlib.contextmanager
def daemon(argv: list[str], url: str) -> Iterator[subprocess.Popen[bytes]]:
    """A daemon process, up once /v1/health answers; SIGTERM on exit (KDF keeps running)."""
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                    break
            if process.poll() is not None:
                raise SystemExit(f"daemon exited with {process.returncode}")
            time.sleep(0.05)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
