"""Run kdf-sim as a real process from tests (yours or ours), stdlib only.

Example::

    with start_sim({"rpc_password": "Sim-Pass-123!", "disable_p2p": True, "rpcport": 0,
                    "coins": []}) as sim:
        status, body = sim.rpc({"method": "version"})

The config is written to a 0600 file passed through ``MM_CONF_PATH`` (never argv, which ``ps``
shows). Readiness is KDF's own signal: the ``DEX stats`` line, which carries the bound port.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

__all__ = [
    "READY_PATTERN",
    "RunningSim",
    "SimStartError",
    "offline_config",
    "sim_command",
    "spawn_sim",
    "start_sim",
    "wait_until",
]

READY_PATTERN = re.compile(rb">>>>>>>>>> DEX stats (\S+):(\d+) DEX stats API enabled")
DEFAULT_TIMEOUT_S = 30.0


class SimStartError(RuntimeError):
    """kdf-sim exited or stayed silent instead of announcing its RPC."""

    def __init__(self, message: str, returncode: int | None, output: str) -> None:
        super().__init__(f"{message} (exit code {returncode}); output:\n{output}")
        self.returncode = returncode
        self.output = output


class _Reader(threading.Thread):
    """Collects one pipe's lines so tests can wait on them without blocking the process."""

    def __init__(self, stream: object) -> None:
        super().__init__(daemon=True)
        self._stream = stream
        self.lines: list[bytes] = []
        self._cond = threading.Condition()

    def run(self) -> None:
        stream = self._stream
        assert hasattr(stream, "readline")
        for line in iter(stream.readline, b""):
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pattern: re.Pattern[bytes], deadline: float) -> re.Match[bytes] | None:
        """First match of ``pattern`` in any line, waiting until ``deadline`` (monotonic)."""
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    match = pattern.search(line)
                    if match:
                        return match
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.is_alive():
                    return None
                self._cond.wait(min(remaining, 0.1))

    def text(self) -> str:
        with self._cond:
            return b"".join(self.lines).decode(errors="replace")


class RunningSim:
    """A started kdf-sim process; use as a context manager so it is always reaped."""

    def __init__(
        self, process: subprocess.Popen[bytes], workdir: Path, *, owns_workdir: bool = False
    ) -> None:
        self.process = process
        self.workdir = workdir
        self._owns_workdir = owns_workdir
        assert process.stdout is not None and process.stderr is not None
        self._stdout = _Reader(process.stdout)
        self._stderr = _Reader(process.stderr)
        self._stdout.start()
        self._stderr.start()
        self.host = ""
        self.port = 0

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    @property
    def url(self) -> str:
        """``http://host:port/`` of the RPC."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def stdout_text(self) -> str:
        """Everything written to stdout so far."""
        return self._stdout.text()

    def stderr_text(self) -> str:
        """Everything written to stderr so far."""
        return self._stderr.text()

    def wait_ready(self, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        """Wait for the readiness line and record the bound address from it."""
        match = self._stdout.wait_for(READY_PATTERN, time.monotonic() + timeout)
        if match is None:
            self.process.poll()
            raise SimStartError(
                "kdf-sim did not announce its RPC",
                self.process.returncode,
                self.stdout_text() + self.stderr_text(),
            )
        # An IPv6 address is printed in brackets, as Rust's SocketAddr displays it.
        self.host = match.group(1).decode().strip("[]")
        self.port = int(match.group(2))

    def wait_stdout(self, pattern: str, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
        """True once a stdout line matches the regex ``pattern``."""
        found = self._stdout.wait_for(re.compile(pattern.encode()), time.monotonic() + timeout)
        return found is not None

    def wait_stderr(self, pattern: str, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
        """True once a stderr line matches the regex ``pattern``."""
        found = self._stderr.wait_for(re.compile(pattern.encode()), time.monotonic() + timeout)
        return found is not None

    def rpc(self, payload: object, *, timeout: float = DEFAULT_TIMEOUT_S) -> tuple[int, object]:
        """POST ``payload`` as JSON; returns (HTTP status, decoded body)."""
        status, _headers, body = self.request("POST", "/", json.dumps(payload).encode(), timeout)
        return status, json.loads(body)

    def request(
        self, method: str, path: str, body: bytes | None = None, timeout: float = DEFAULT_TIMEOUT_S
    ) -> tuple[int, dict[str, str], bytes]:
        """One raw HTTP request on a fresh connection."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body)
            response = connection.getresponse()
            headers = {name.lower(): value for name, value in response.getheaders()}
            return response.status, headers, response.read()
        finally:
            connection.close()

    def wait_exit(self, timeout: float = DEFAULT_TIMEOUT_S) -> int:
        """Wait for the process to exit; returns its exit code (negative: killed by a signal)."""
        return self.process.wait(timeout)

    def close(self) -> None:
        """Stop the process if still running: SIGINT, then SIGKILL; always reap it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._stdout.join(5)
        self._stderr.join(5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RunningSim:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def wait_until(
    predicate: Callable[[], bool], timeout: float = DEFAULT_TIMEOUT_S, interval: float = 0.05
) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def sim_command() -> list[str]:
    """The argv that runs kdf-sim with the current interpreter."""
    return [sys.executable, "-m", "kdf_remote.sim"]


def spawn_sim(
    config: Mapping[str, object] | None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    args: Sequence[str] = (),
    keep_home: bool = False,
) -> RunningSim:
    """Start kdf-sim without waiting; ``config`` goes to a 0600 ``MM_CONF_PATH`` file.

    ``HOME`` is set to the working directory (so ``~/.kdf`` stays inside it) unless
    ``keep_home``. Without ``cwd`` a temporary directory is used and removed by ``close()``.
    """
    owned = cwd is None
    workdir = Path(tempfile.mkdtemp(prefix="kdf-sim-")) if cwd is None else Path(cwd)
    full_env = dict(os.environ if env is None else env)
    if not keep_home:
        full_env["HOME"] = str(workdir)
    if config is not None:
        conf_path = workdir / "MM2.json"
        fd = os.open(conf_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(config, handle)
        full_env["MM_CONF_PATH"] = str(conf_path)
    process = subprocess.Popen(
        [*sim_command(), *args],
        cwd=workdir,
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    return RunningSim(process, workdir, owns_workdir=owned)


def start_sim(
    config: Mapping[str, object],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    keep_home: bool = False,
) -> RunningSim:
    """Start kdf-sim and wait until its RPC is up (raises :class:`SimStartError` otherwise)."""
    sim = spawn_sim(config, env=env, cwd=cwd, keep_home=keep_home)
    try:
        sim.wait_ready(timeout)
    except BaseException:
        sim.close()
        raise
    return sim


def offline_config(rpc_password: str, **overrides: object) -> dict[str, object]:
    """A minimal valid KDF config for tests: P2P off, ephemeral loopback port, no coins.

    Pass ``coins=[...]``, ``passphrase=...`` and so on as keyword overrides.
    """
    config: dict[str, object] = {
        "gui": "kdf-sim",
        "netid": 8762,
        "rpc_password": rpc_password,
        "rpcip": "127.0.0.1",
        "rpcport": 0,
        "disable_p2p": True,
        "coins": [],
    }
    config.update(overrides)
    return config
