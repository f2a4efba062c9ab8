"""Fixtures for supervisor integration tests: kdf-sim instances under a real Supervisor.

Every KDF a test starts is stopped by ``Supervisor.close(stop_instances=True)``; as a safety net,
any pid the supervisor reported spawning that still runs afterwards is SIGKILLed, after checking
it is still that process (pid and start time).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from _loopback import free_port
from kdf_remote.kdf import KdfStartupConfig, decode_startup_config
from kdf_remote.supervisor import (
    EventStream,
    InstanceSpec,
    RestartPolicy,
    Supervisor,
    SupervisorEvent,
    Timeouts,
)

RPC_PASSWORD = "Sup-Test-Pass-7!"
SEED = "abandon ability able about above absent absorb abstract absurd abuse access accident"
FAST = Timeouts(start_s=20.0, stop_rpc_s=5.0, sigint_s=5.0, sigkill_s=10.0, probe_s=5.0)


def sim_binary() -> Path:
    """kdf-sim's console script next to this interpreter."""
    return Path(sys.executable).parent / "kdf-sim"


def make_config(**overrides: Any) -> KdfStartupConfig:
    """An offline KDF config kdf-sim accepts."""
    raw: dict[str, Any] = {
        "gui": "supervisor-tests",
        "netid": 8762,
        "rpc_password": RPC_PASSWORD,
        "disable_p2p": True,
        "coins": [],
    }
    return decode_startup_config(raw | overrides)


SpecFactory = Callable[..., InstanceSpec]


@pytest.fixture
def make_spec(tmp_path: Path) -> SpecFactory:
    """Build an InstanceSpec for kdf-sim with fast timeouts; keyword arguments override."""

    def build(name: str = "main", **overrides: Any) -> InstanceSpec:
        fields: dict[str, Any] = {
            "name": name,
            "binary_path": sim_binary(),
            "data_dir": tmp_path / name / "data",
            "run_dir": tmp_path / name / "run",
            "rpc_port": free_port(),
            "timeouts": FAST,
            "restart": RestartPolicy(backoff_initial_s=0.05, jitter=0.0),
            "log_check_interval_s": 0.05,
        }
        return InstanceSpec(**(fields | overrides))

    return build


@pytest.fixture
async def supervisor() -> AsyncIterator[Supervisor]:
    """A Supervisor that stops every instance at the end; any kdf-sim child of this test
    process still alive afterwards (there should be none) is SIGKILLed and reaped."""
    sup = Supervisor()
    try:
        yield sup
    finally:
        await sup.close(stop_instances=True)
        for child in kdf_children():
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                child.send_signal(signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                await asyncio.to_thread(os.waitpid, child.pid, 0)


async def next_event(
    stream: EventStream, predicate: Callable[[SupervisorEvent], bool], deadline_s: float = 30.0
) -> SupervisorEvent:
    """The first event from ``stream`` matching ``predicate`` (fails after a generous timeout)."""

    async def scan() -> SupervisorEvent:
        async for event in stream:
            if predicate(event):
                return event
        raise AssertionError("event stream ended")

    return await asyncio.wait_for(scan(), deadline_s)


async def wait_for(condition: Callable[[], bool], deadline_s: float = 30.0) -> None:
    """Poll ``condition`` until it holds (generous deadline; never a timing assertion)."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within the deadline")
        await asyncio.sleep(0.01)


def kdf_children() -> list[psutil.Process]:
    """Live kdf-sim processes that are children of this test process."""
    found = []
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if child.status() != psutil.STATUS_ZOMBIE and any(
                "kdf-sim" in part for part in child.cmdline()
            ):
                found.append(child)
    return found
