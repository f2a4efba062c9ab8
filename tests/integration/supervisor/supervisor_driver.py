"""A tiny supervisor process for re-adoption tests (run as a script, never imported by tests).

stdin, first line: JSON ``{"spec": {...}, "config": {...} | null}``; a config means "start it".
stdout: one JSON line per status or event. Further stdin lines: ``stop`` (stop the instance and
print its status) and ``quit`` (close without stopping KDF, then exit).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import msgspec

from kdf_remote.kdf import decode_startup_config
from kdf_remote.supervisor import (
    InstanceSpec,
    RestartPolicy,
    StartFailed,
    Supervisor,
    Timeouts,
)


def emit(kind: str, payload: Any) -> None:
    """Print one JSON line and flush it."""
    sys.stdout.write(msgspec.json.encode({"kind": kind, "data": payload}).decode() + "\n")
    sys.stdout.flush()


def build_spec(raw: dict[str, Any]) -> InstanceSpec:
    """An InstanceSpec from the test's JSON description."""
    return InstanceSpec(
        name=raw["name"],
        binary_path=Path(raw["binary_path"]),
        data_dir=Path(raw["data_dir"]),
        run_dir=Path(raw["run_dir"]),
        rpc_port=raw["rpc_port"],
        timeouts=Timeouts(**raw.get("timeouts", {})),
        restart=RestartPolicy(**raw.get("restart", {})),
        env=raw.get("env", {}),
    )


async def forward_events(sup: Supervisor) -> None:
    """Print every supervisor event."""
    async for event in sup.subscribe():
        emit("event", msgspec.to_builtins(event))


async def main() -> None:
    """Run the supervisor until told to quit."""
    loop = asyncio.get_running_loop()
    setup = msgspec.json.decode(await loop.run_in_executor(None, sys.stdin.readline))
    sup = Supervisor()
    forwarder = asyncio.create_task(forward_events(sup))
    spec = build_spec(setup["spec"])
    emit("status", msgspec.to_builtins(await sup.add(spec)))
    if setup.get("config") is not None:
        try:
            status = await sup.start(spec.name, decode_startup_config(setup["config"]))
            emit("status", msgspec.to_builtins(status))
        except StartFailed as exc:
            emit("error", str(exc))
    while True:
        command = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if command == "stop":
            emit("status", msgspec.to_builtins(await sup.stop(spec.name)))
        elif command in ("quit", ""):
            await sup.close(stop_instances=False)
            forwarder.cancel()
            emit("bye", None)
            return


if __name__ == "__main__":
    asyncio.run(main())
