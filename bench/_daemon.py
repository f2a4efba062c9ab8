"""A kdf-remote-daemon process for benchmarks: started, waited for, and stopped."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator

import httpx


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
