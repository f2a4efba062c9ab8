"""Real daemons on real loopback ports, supervising kdf-sim processes.

Each test gets a factory that writes a daemon config in its temporary directory (free ports
picked by binding port 0), starts ``kdf-remote-daemon`` as a subprocess and waits for
``/v1/health``. At teardown every daemon started is stopped and every KDF process it spawned is
killed, by PID, after checking it is the process recorded in the instance's state file.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from _loopback import DEADLINE_S, free_port, wait_for
from kdf_remote.daemon.security.tokens import create_jwt_key_file

ADMIN_KEY = "it-admin-key-0123456789"
VIEWER_KEY = "it-viewer-key-0123456789"
PASSPHRASE = "legal winner thank year wave sausage worth useful legal winner thank yellow"
WALLET_PASSWORD = "Wallet-Pass-42!x"
COINS = [{"coin": "KMD", "pubtype": 60, "protocol": {"type": "UTXO"}}]


def startup_config(**overrides: object) -> dict[str, object]:
    """A KDF startup config kdf-sim accepts (offline, one coin, with a passphrase)."""
    config: dict[str, object] = {
        "gui": "daemon-it",
        "netid": 8762,
        "disable_p2p": True,
        "coins": COINS,
        "passphrase": PASSPHRASE,
    }
    config.update(overrides)
    return config


@dataclass
class Daemon:
    """One running ``kdf-remote-daemon`` process."""

    process: subprocess.Popen[bytes]
    url: str
    config: Path
    state_dir: Path
    output: Path

    def client(self, key: str | None = ADMIN_KEY, timeout: float = DEADLINE_S) -> httpx.Client:
        """A client sending ``key`` (none when None)."""
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def log_text(self) -> str:
        """Everything the daemon wrote to stdout and stderr so far."""
        return self.output.read_text(errors="replace")

    def terminate(self) -> int:
        """SIGTERM and wait for the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(DEADLINE_S)

    def kill(self) -> None:
        """SIGKILL the daemon (KDF is not its process group: it survives)."""
        self.process.kill()
        self.process.wait(DEADLINE_S)


@dataclass
class DaemonFactory:
    """Writes configs and starts daemons for one test; cleans everything up afterwards."""

    root: Path
    bin_dir: Path
    port: int = field(default_factory=free_port)
    rpc_port: int = field(default_factory=free_port)
    started: list[Daemon] = field(default_factory=list)

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def write_config(
        self,
        *,
        binary: Path | None = None,
        daemon: str = "",
        kdf: str = "",
        security: str = "",
        name: str = "daemon.yaml",
    ) -> Path:
        """A daemon config for this test; extra keys are YAML flow-mapping fragments."""
        binary = binary or self.bin_dir / "kdf-sim"
        text = (
            f"daemon: {{port: {self.port}, host: 127.0.0.1, state_dir: {self.state_dir}, "
            f"log_level: info{daemon}}}\n"
            f"kdf: {{binary_path: {binary}, data_dir: {self.root / 'data'}, "
            f"rpc_port: {self.rpc_port}, start_timeout: 20s, stop_timeout: 5s{kdf}}}\n"
            f"worker_support: {{enabled: false}}\n"
            "security:\n"
            f"  api_keys: [{ADMIN_KEY}, {{name: watcher, role: viewer, key: {VIEWER_KEY}}}]\n"
            f"{security}"
        )
        path = self.root / name
        path.write_text(text)
        # The daemon refuses to start without its token-signing key (made at install time).
        create_jwt_key_file(self.state_dir / "jwt.key")
        return path

    def wrapper(self, env: dict[str, str]) -> Path:
        """An executable that runs kdf-sim with test-only environment variables set.

        The supervisor passes KDF only an allow-list of variables, so failure modes that
        kdf-sim reads from its environment are set by this wrapper instead.
        """
        path = self.root / "kdf-wrapper.sh"
        exports = "".join(f"export {k}='{v}'\n" for k, v in env.items())
        path.write_text(f"#!/bin/sh\n{exports}exec '{self.bin_dir / 'kdf-sim'}' \"$@\"\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        return path

    def start(self, config: Path, *args: str) -> Daemon:
        """Start a daemon on ``config`` and wait until /v1/health answers."""
        output = self.root / f"daemon-{len(self.started)}.log"
        with output.open("wb") as sink:
            process = subprocess.Popen(
                [str(self.bin_dir / "kdf-remote-daemon"), "--config", str(config), *args],
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        daemon = Daemon(process, f"http://127.0.0.1:{self.port}", config, self.state_dir, output)
        self.started.append(daemon)

        def healthy() -> bool:
            if process.poll() is not None:
                pytest.fail(f"daemon exited with {process.returncode}:\n{daemon.log_text()}")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{daemon.url}/v1/health", timeout=2).status_code == 200
            return False

        wait_for(healthy, "the daemon to answer /v1/health")
        return daemon

    def kdf_process(self) -> psutil.Process | None:
        """The KDF process recorded in main's state file, if it is alive and is that process."""
        path = self.state_dir / "instances" / "main" / "state.json"
        try:
            record = json.loads(path.read_text())
            proc = psutil.Process(int(record["pid"]))
            if abs(proc.create_time() - float(record["create_time"])) > 0.05:
                return None
            return proc
        except (OSError, ValueError, KeyError, psutil.Error):
            return None

    def cleanup(self) -> None:
        """Stop every daemon, then kill the KDF processes they left running."""
        kdf = self.kdf_process()
        known = {proc.pid for proc in [kdf] if proc is not None}
        for daemon in self.started:
            with contextlib.suppress(Exception), daemon.client() as http:
                pid = http.get("/v1/instances/main").json().get("pid")
                if pid:
                    known.add(int(pid))
        for daemon in self.started:
            daemon.terminate()
        for pid in known:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                if any("kdf" in part for part in proc.cmdline()):
                    proc.kill()
                    proc.wait(DEADLINE_S)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[DaemonFactory]:
    """Factory of daemons for this test (all stopped, their KDFs killed, at teardown)."""
    factory = DaemonFactory(root=tmp_path, bin_dir=Path(sys.executable).parent)
    try:
        yield factory
    finally:
        factory.cleanup()


@dataclass
class SseReader:
    """Reads a Server-Sent Event stream in a thread; events land in :attr:`events`."""

    response_cm: Any
    events: queue.Queue[tuple[str, dict[str, Any]]] = field(default_factory=queue.Queue)
    status: int = 0
    thread: threading.Thread | None = None
    socket: Any = None

    def start(self) -> None:
        response = self.response_cm.__enter__()
        self.status = response.status_code
        self.socket = response.extensions["network_stream"].get_extra_info("socket")
        self.thread = threading.Thread(target=self._read, args=(response,), daemon=True)
        self.thread.start()

    def _read(self, response: httpx.Response) -> None:
        event, data = "message", ""
        with contextlib.suppress(httpx.HTTPError):
            for line in response.iter_lines():
                if line.startswith("event:"):
                    event = line.partition(":")[2].strip()
                elif line.startswith("data:"):
                    data = line.partition(":")[2].strip()
                elif not line and data:
                    self.events.put((event, json.loads(data)))
                    event, data = "message", ""

    def next(self, where: Callable[[str, dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """The next event matching ``where`` (earlier ones are dropped)."""
        end = time.monotonic() + DEADLINE_S
        while time.monotonic() < end:
            try:
                event, data = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            if where(event, data):
                return data
        pytest.fail(f"timed out waiting for {what}")

    def close(self) -> None:
        # Shutting the socket down wakes the reader thread out of its blocking read.
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RDWR)
        if self.thread is not None:
            self.thread.join(DEADLINE_S)
        with contextlib.suppress(Exception):
            self.response_cm.__exit__(None, None, None)


@contextlib.contextmanager
def sse(client: httpx.Client, path: str) -> Iterator[SseReader]:
    """Open an SSE stream on ``path`` and read it in the background until the block ends."""
    reader = SseReader(client.stream("GET", path, timeout=httpx.Timeout(DEADLINE_S, read=None)))
    reader.start()
    try:
        yield reader
    finally:
        reader.close()


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_pid(pid: int) -> None:
    """SIGKILL ``pid`` (a process this test caused to exist)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
