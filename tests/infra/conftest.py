"""Shared set-up of the infra tests: the mock-deployment harness lives beside them."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# --import-mode=importlib does not put test folders on sys.path; the harness modules here are
# imported by name (tests/ itself is on it through pyproject's pytest `pythonpath`).
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(scope="session")
def _pulumi_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop for every infra test's mock deployment, closed at the end."""
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


@pytest.fixture(autouse=True)
def _event_loop_for_pulumi(_pulumi_loop: asyncio.AbstractEventLoop) -> None:
    """Make that loop current: pulumi's mock runtime runs on the thread's current loop.

    An asyncio test run earlier in the same process (pytest-asyncio) leaves the main thread
    without one, and pulumi would fail with "There is no current event loop".
    """
    asyncio.set_event_loop(_pulumi_loop)
