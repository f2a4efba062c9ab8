"""A kdf-remote Supervisor in its own process, for bench_recovery.py (not a benchmark itself).

stdin, one JSON line: ``{"instances": [spec, ...], "config": {...}}``; every instance is started
with that config (the port is the spec's). stdout: one JSON line per supervisor event, with
``time.monotonic()`` (CLOCK_MONOTONIC, comparable across processes on Linux). Runs until stdin
closes, then stops every instance.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import msgspec

from kdf_remote.kdf import decode_startup_config
from kdf_remote.supervisor import InstanceSpec, RestartPolicy, Supervisor, Timeouts


def emit(payload: dict[str, Any]) -> None:
    """One JSON line on stdout."""
    sys.stdout.write(msgspec.json.encode(payload).decode() + "\n")
    sys.stdout.flush()


def build_spec(raw: dict[str, Any]) -> InstanceSpec:
    """An InstanceSpec from the bench's JSON description."""
    return InstanceSpec(
        name=raw["name"],
        binary_path=Path(raw["binary_path"]),
        data_dir=Path(raw["data_dir"]),
        run_dir=Path(raw["run_dir"]),
        rpc_port=raw["rpc_port"],
        restart=RestartPolicy(**raw.get("restart", {})),
        timeouts=Timeouts(**raw.get("timeouts", {})),
    )


async def forward(sup: Supervisor) -> None:
    """Print every event as it happens."""
    async for event in sup.subscribe():
        emit(
            {
                "kind": str(event.kind),
                "name": event.name,
                "state": str(event.state),
                "pid": event.pid,
                "mono": event.monotonic,
            }
        )


async def main() -> None:
    """Start the instances, report events, stop everything when stdin closes."""
    loop = asyncio.get_running_loop()
    setup = msgspec.json.decode(await loop.run_in_executor(None, sys.stdin.readline))
    sup = Supervisor()
    forwarder = asyncio.create_task(forward(sup))
    config = decode_startup_config(setup["config"])
    specs = [build_spec(raw) for raw in setup["instances"]]
    for spec in specs:
        await sup.add(spec)
    await asyncio.gather(*(sup.start(spec.name, config) for spec in specs))
    emit({"kind": "all_running", "mono": 0.0})
    await loop.run_in_executor(None, sys.stdin.read)
    await sup.close(stop_instances=True)
    forwarder.cancel()


if __name__ == "__main__":
    asyncio.run(main())
