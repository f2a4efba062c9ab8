"""Re-adoption: a KDF outlives its supervisor and is adopted, never duplicated, never confused
with a recycled pid (style-and-security test list item 18)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pytest

from _loopback import free_port
from kdf_remote.supervisor import EventKind, InstanceState, Supervisor
from kdf_remote.supervisor.files import StateRecord

from .conftest import RPC_PASSWORD, SpecFactory, make_config, next_event, sim_binary, wait_for

pytestmark = pytest.mark.integration

DRIVER = Path(__file__).with_name("supervisor_driver.py")


class Driver:
    """A supervisor in its own process, talked to through stdin/stdout JSON lines."""

    def __init__(self, setup: dict[str, Any]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(DRIVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.send(json.dumps(setup))

    def send(self, line: str) -> None:
        """Write one command line."""
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    async def read(self, kind: str, check: Any = None) -> dict[str, Any]:
        """The next output line of ``kind`` (whose data satisfies ``check``), 60 s at most."""
        assert self.process.stdout is not None
        stdout = self.process.stdout

        def scan() -> dict[str, Any]:
            for line in stdout:
                message = json.loads(line)
                if message["kind"] == kind and (check is None or check(message["data"])):
                    return dict(message["data"] or {})
            raise AssertionError(f"driver ended before a {kind!r} line")

        return await asyncio.wait_for(asyncio.to_thread(scan), 60)

    def kill(self) -> None:
        """SIGKILL the driver (not its KDF) and reap it."""
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait(30)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(BrokenPipeError):
                    stream.close()


@pytest.fixture
def drivers() -> Iterator[list[Driver]]:
    """Drivers started by a test; killed at the end."""
    started: list[Driver] = []
    yield started
    for driver in started:
        driver.kill()


def spec_description(tmp_path: Path, port: int) -> dict[str, Any]:
    """The JSON spec the driver builds its InstanceSpec from."""
    return {
        "name": "main",
        "binary_path": str(sim_binary()),
        "data_dir": str(tmp_path / "data"),
        "run_dir": str(tmp_path / "run"),
        "rpc_port": port,
        "timeouts": {"start_s": 20, "stop_rpc_s": 5, "sigint_s": 5, "sigkill_s": 10},
        "restart": {"backoff_initial_s": 0.05, "jitter": 0.0},
    }


def kdf_processes_for(conf_path: Path) -> list[int]:
    """Pids of live processes started with MM_CONF_PATH=conf_path (any parent)."""
    found = []
    for process in psutil.process_iter(["pid", "status"]):
        with contextlib.suppress(psutil.Error):
            if process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if process.environ().get("MM_CONF_PATH") == str(conf_path):
                found.append(process.pid)
    return found


def kill_if_same(pid: int, create_time: float) -> None:
    """SIGKILL ``pid`` only if it is still the process that started at ``create_time``."""
    with contextlib.suppress(psutil.Error, ProcessLookupError):
        if abs(psutil.Process(pid).create_time() - create_time) < 0.01:
            os.kill(pid, signal.SIGKILL)


async def test_supervisor_killed_then_restarted_readopts_the_same_kdf(
    tmp_path: Path, drivers: list[Driver]
) -> None:
    """SIGKILL the supervisor: KDF lives on; a new supervisor adopts that pid, starts no second
    KDF, and still notices promptly when the adopted KDF dies."""
    port = free_port()
    spec = spec_description(tmp_path, port)
    conf_path = tmp_path / "run" / "MM2.json"
    first = Driver({"spec": spec, "config": msgspec.to_builtins(make_config())})
    drivers.append(first)
    status = await first.read("status", lambda s: s["state"] == "running")
    pid = status["pid"]
    create_time = psutil.Process(pid).create_time()
    try:
        first.kill()
        assert psutil.Process(pid).is_running()

        second = Driver({"spec": spec, "config": None})
        drivers.append(second)
        adopted = await second.read("status")
        assert adopted["pid"] == pid
        await second.read("event", lambda e: e["kind"] == "state" and e["state"] == "running")
        assert kdf_processes_for(conf_path) == [pid]

        os.kill(pid, signal.SIGKILL)
        exited = await second.read("event", lambda e: e["kind"] == "exited")
        assert exited["pid"] == pid
        running = await second.read(
            "event", lambda e: e["kind"] == "state" and e["state"] == "running"
        )
        new_pid = running["pid"]
        assert new_pid != pid
        assert kdf_processes_for(conf_path) == [new_pid]
        new_create_time = psutil.Process(new_pid).create_time()
        try:
            second.send("stop")
            stopped = await second.read("status", lambda s: s["state"] == "stopped")
            assert stopped["pid"] is None
            await wait_for(lambda: kdf_processes_for(conf_path) == [])
        finally:
            kill_if_same(new_pid, new_create_time)
        second.send("quit")
        await second.read("bye")
    finally:
        kill_if_same(pid, create_time)


async def test_readoption_in_process_keeps_pid_and_counters(
    make_spec: SpecFactory, tmp_path: Path
) -> None:
    """close(stop_instances=False) leaves KDF running; the next Supervisor adopts it as running."""
    spec = make_spec()
    first = Supervisor()
    await first.add(spec)
    status = await first.start("main", make_config())
    await first.close(stop_instances=False)
    assert status.pid is not None
    assert psutil.Process(status.pid).is_running()

    second = Supervisor()
    try:
        adopted = await second.add(spec)
        assert adopted.pid == status.pid
        await wait_for(lambda: second.status("main").state is InstanceState.RUNNING)
        answer = await second.rpc("main", b'{"method":"get_enabled_coins"}')
        assert answer.status == 200
        stopped = await second.stop("main")
        assert stopped.last_exit is not None
        assert stopped.last_exit.code == 0  # our own child after all: exit status known
    finally:
        await second.close(stop_instances=True)


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process whose pid plays the part of a recycled pid."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield process
    process.kill()
    process.wait(30)


def write_state(spec_run_dir: Path, **record: Any) -> Path:
    """Write a state file as an earlier supervisor would have."""
    spec_run_dir.mkdir(parents=True, exist_ok=True)
    path = spec_run_dir / "state.json"
    fields: dict[str, Any] = {"rpc_host": "127.0.0.1", "rpc_port": 1} | record
    path.write_bytes(msgspec.json.encode(StateRecord(**fields)))
    return path


@pytest.mark.parametrize("mismatch", ["create_time", "cmdline", "dead"])
async def test_recycled_pid_is_neither_adopted_nor_signalled(
    supervisor: Supervisor,
    make_spec: SpecFactory,
    bystander: subprocess.Popen[bytes],
    mismatch: str,
) -> None:
    """A state file naming a live pid with another start time or command line (or a dead pid)
    adopts nothing and leaves that process alone."""
    spec = make_spec()
    process = psutil.Process(bystander.pid)
    await wait_for(lambda: "time.sleep" in " ".join(process.cmdline()))
    record: dict[str, Any] = {
        "pid": bystander.pid,
        "create_time": process.create_time(),
        "cmdline": process.cmdline(),
    }
    if mismatch == "create_time":
        record["create_time"] -= 30.0
    elif mismatch == "cmdline":
        record["cmdline"] = [str(sim_binary())]
    else:
        record["pid"] = 2**22 + 17  # above pid_max defaults: no such process
    state = write_state(spec.run_dir, **record)
    status = await supervisor.add(spec)
    assert status.state is InstanceState.STOPPED
    assert status.pid is None
    assert not state.exists()
    assert bystander.poll() is None
    assert process.status() != psutil.STATUS_ZOMBIE
    await supervisor.close(stop_instances=True)
    assert bystander.poll() is None


async def test_adopted_kdf_with_changed_password_is_not_hammered(
    make_spec: SpecFactory, tmp_path: Path
) -> None:
    """If the adopted KDF rejects the password on record, the supervisor tries it once, gives up
    (failed) and never retries, so KDF's 10-strike ban on 127.0.0.1 is never approached."""
    request_log = tmp_path / "requests.jsonl"
    spec = make_spec(env={"KDF_SIM_REQUEST_LOG": str(request_log)})
    first = Supervisor()
    await first.add(spec)
    await first.start("main", make_config())
    await first.close(stop_instances=False)
    # The active config no longer matches what the running KDF was started with.
    conf = spec.run_dir / "MM2.json"
    raw = msgspec.json.decode(conf.read_bytes())
    conf.write_bytes(msgspec.json.encode(raw | {"rpc_password": RPC_PASSWORD + "x"}))
    before = request_log.read_bytes().count(b"get_enabled_coins")

    second = Supervisor()
    try:
        await second.add(spec)
        await wait_for(lambda: second.status("main").state is InstanceState.FAILED)
        assert request_log.read_bytes().count(b"get_enabled_coins") == before + 1
        assert second.status("main").pid is None
    finally:
        await second.close(stop_instances=True)


async def test_adoption_event_is_reported(supervisor: Supervisor, make_spec: SpecFactory) -> None:
    """Subscribers see an `adopted` event for a re-adopted KDF."""
    spec = make_spec()
    first = Supervisor()
    await first.add(spec)
    status = await first.start("main", make_config())
    await first.close(stop_instances=False)
    events = supervisor.subscribe()
    await supervisor.add(spec)
    adopted = await next_event(events, lambda e: e.kind is EventKind.ADOPTED)
    assert adopted.pid == status.pid
    await events.aclose()
