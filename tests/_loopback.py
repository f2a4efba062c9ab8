"""What every integration test on loopback shares: a free port, and polling with a deadline.

Tests wait on conditions, never on fixed sleeps, with a deadline generous enough for a loaded
2-core machine.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import pytest

__all__ = ["DEADLINE_S", "free_port", "wait_for"]

DEADLINE_S = 30.0
"""How long a test waits for a condition before failing."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (bound to 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], Any], what: str, deadline_s: float = DEADLINE_S) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what``."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")
