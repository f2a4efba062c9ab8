"""Recovery after kill -9 of KDF, and supervisor memory: kdf-remote's supervisor against pm2 and
supervisord, on the same kdf-sim, interleaved in one run.

Usage: .venv/bin/python bench/bench_recovery.py [--kills 20] [--no-pm2] [--no-supervisord]

For every kill the figure is the time from SIGKILL to the first answered ``version`` call on the
same port, measured from outside by the same polling client for all three supervisors. kdf-sim's
own exec-to-ready time is measured separately (spawned directly, no supervisor), so
``overhead = recovery - exec-to-ready`` is what the supervisor itself adds. Our recovery is also
split with the supervisor's own event timestamps into detection (kill to exit noticed), respawn
(exit noticed to new process spawned) and readiness (spawned to `running`).

pm2 is taken from PATH or installed with npm into a temporary prefix; if neither works it is
skipped. Prints figures (median [min-max]); asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

# bench/ is the script's own directory (first on sys.path), but not on mypy's path.
from _nginx import free_port  # type: ignore[import-not-found]

VENV_BIN = Path(sys.executable).parent
SIM = VENV_BIN / "kdf-sim"
PASSWORD = "Bench-Recovery-1!"
STABLE_S = 1.5  # wait this long after a recovery before the next kill (supervisord startsecs=1)
HOST = Path(__file__).with_name("_supervisor_host.py")


# ----------------------------------------------------------------------------- helpers


def sim_config(port: int) -> dict[str, Any]:
    return {
        "gui": "bench",
        "netid": 8762,
        "rpc_password": PASSWORD,
        "rpcport": port,
        "disable_p2p": True,
        "coins": [],
    }


def write_conf(directory: Path, port: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "MM2.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(sim_config(port), handle)
    return path


_REQUEST = (
    b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b'Content-Length: 20\r\n\r\n{"method":"version"}'
)


def version_ok(port: int, timeout: float = 0.25) -> bool:
    """One POST version on a fresh connection; True on HTTP 200."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            conn.sendall(_REQUEST)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return False
                data += chunk
            return data.startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def wait_answer(port: int, limit_s: float = 30.0) -> float:
    """Poll until ``version`` answers; return the monotonic time it did."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if version_ok(port):
            return time.monotonic()
        time.sleep(0.0005)
    raise RuntimeError(f"nothing answered on port {port} within {limit_s} s")


def listener_pid(port: int) -> int | None:
    for conn in psutil.net_connections("tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
            return conn.pid
    return None


def kill_and_time(pid: int, port: int) -> tuple[float, float]:
    """SIGKILL ``pid``, wait for it to be gone, then for the port to answer; (t_kill, t_ok)."""
    fd = os.pidfd_open(pid)
    try:
        t_kill = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        select.select([fd], [], [], 10)
    finally:
        os.close(fd)
    return t_kill, wait_answer(port)


def ms(values: list[float]) -> str:
    if not values:
        return "n/a"
    data = [v * 1000 for v in values]
    return f"{statistics.median(data):7.1f} [{min(data):.1f}-{max(data):.1f}] ms"


def mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / (1024 * 1024):.1f} MiB"


def tree_rss(pid: int) -> int:
    """RSS of the supervisor process alone (not its KDF children)."""
    return int(psutil.Process(pid).memory_info().rss)


# ----------------------------------------------------------------------------- the contenders


class Contender:
    """One supervisor managing ``count`` kdf-sim instances on their own ports."""

    name = "?"

    def __init__(self, root: Path, count: int) -> None:
        self.root = root
        self.ports = [free_port() for _ in range(count)]
        self.confs = [write_conf(root / f"inst{i}", port) for i, port in enumerate(self.ports)]

    def start(self) -> None:
        raise NotImplementedError

    def supervisor_pid(self) -> int:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def wait_all_answering(self) -> None:
        for port in self.ports:
            wait_answer(port, 60)


class Ours(Contender):
    name = "kdf-remote"

    def start(self) -> None:
        instances = [
            {
                "name": f"inst{i}",
                "binary_path": str(SIM),
                "data_dir": str(self.root / f"inst{i}" / "data"),
                "run_dir": str(self.root / f"inst{i}" / "run"),
                "rpc_port": port,
                "restart": {"stable_after_s": 1.0},
            }
            for i, port in enumerate(self.ports)
        ]
        self.host = subprocess.Popen(
            [sys.executable, str(HOST)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        assert self.host.stdin is not None
        self.host.stdin.write(json.dumps({"instances": instances, "config": sim_config(0)}) + "\n")
        self.host.stdin.flush()
        self.wait_event(lambda e: e["kind"] == "all_running", 60)

    def _read(self) -> None:
        assert self.host.stdout is not None
        for line in self.host.stdout:
            self.events.put(json.loads(line))

    def wait_event(self, match: Callable[[dict[str, Any]], bool], limit_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + limit_s
        while True:
            event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            if match(event):
                return event

    def supervisor_pid(self) -> int:
        return self.host.pid

    def stop(self) -> None:
        assert self.host.stdin is not None
        self.host.stdin.close()
        self.host.wait(60)


class Supervisord(Contender):
    name = "supervisord"

    def start(self) -> None:
        lines = [
            "[unix_http_server]",
            f"file={self.root}/supervisor.sock",
            "[supervisord]",
            f"logfile={self.root}/supervisord.log",
            f"pidfile={self.root}/supervisord.pid",
            f"childlogdir={self.root}",
            "nodaemon=true",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "[supervisorctl]",
            f"serverurl=unix://{self.root}/supervisor.sock",
        ]
        for i, conf in enumerate(self.confs):
            lines += [
                f"[program:inst{i}]",
                f"command={SIM}",
                f"directory={conf.parent}",
                f'environment=MM_CONF_PATH="{conf}"',
                "startsecs=1",
                "startretries=1000",
                "autorestart=true",
                "stopsignal=INT",
            ]
        path = self.root / "supervisord.conf"
        path.write_text("\n".join(lines) + "\n")
        self.process = subprocess.Popen(
            [str(VENV_BIN / "supervisord"), "-c", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.wait_all_answering()

    def supervisor_pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)


class Pm2(Contender):
    name = "pm2"
    binary: Path | None = None

    @classmethod
    def find(cls, scratch: Path) -> Path | None:
        found = shutil.which("pm2")
        if found:
            return Path(found)
        npm = shutil.which("npm")
        if npm is None:
            return None
        prefix = scratch / "pm2-prefix"
        result = subprocess.run(
            [npm, "install", "--prefix", str(prefix), "pm2", "--no-audit", "--no-fund"],
            capture_output=True,
            timeout=600,
            check=False,
        )
        candidate = prefix / "node_modules" / ".bin" / "pm2"
        return candidate if result.returncode == 0 and candidate.exists() else None

    def _env(self) -> dict[str, str]:
        return {**os.environ, "PM2_HOME": str(self.root / "pm2-home")}

    def _pm2(self, *args: str) -> None:
        assert self.binary is not None
        subprocess.run(
            [str(self.binary), *args], env=self._env(), capture_output=True, check=True, timeout=120
        )

    def start(self) -> None:
        apps = [
            {
                "name": f"inst{i}",
                "script": str(SIM),
                "interpreter": "none",
                "cwd": str(conf.parent),
                "env": {"MM_CONF_PATH": str(conf)},
                "autorestart": True,
                "min_uptime": 100,
                "max_restarts": 100000,
                "restart_delay": 0,
            }
            for i, conf in enumerate(self.confs)
        ]
        ecosystem = self.root / "ecosystem.json"
        ecosystem.write_text(json.dumps({"apps": apps}))
        self._pm2("start", str(ecosystem))
        self.wait_all_answering()

    def supervisor_pid(self) -> int:
        return int((self.root / "pm2-home" / "pm2.pid").read_text().strip())

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self._pm2("kill")


# ----------------------------------------------------------------------------- measurements


def sim_exec_to_ready_once(scratch: Path, run: int) -> float:
    """kdf-sim alone: exec until ``version`` answers (what any supervisor must wait for)."""
    port = free_port()
    conf = write_conf(scratch / f"direct{run}", port)
    began = time.monotonic()
    process = subprocess.Popen(
        [str(SIM)],
        cwd=conf.parent,
        env={**os.environ, "MM_CONF_PATH": str(conf)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        return wait_answer(port) - began
    finally:
        process.kill()
        process.wait(30)


def our_split(ours: Ours, t_kill: float, t_ok: float) -> dict[str, float]:
    exited = ours.wait_event(lambda e: e["kind"] == "exited", 30)
    spawned = ours.wait_event(lambda e: e["kind"] == "spawned", 30)
    running = ours.wait_event(lambda e: e["kind"] == "state" and e["state"] == "running", 30)
    return {
        "detection": exited["mono"] - t_kill,
        "respawn": spawned["mono"] - exited["mono"],
        "readiness": running["mono"] - spawned["mono"],
        "to_running": running["mono"] - t_kill,
        "running_lag": running["mono"] - t_ok,
    }


@contextlib.contextmanager
def running(contender: Contender) -> Iterator[Contender]:
    contender.start()
    try:
        yield contender
    finally:
        contender.stop()


def recovery(
    kills: int, contenders: list[Contender], ours: Ours, scratch: Path
) -> dict[str, list[float]]:
    """Kill each contender's KDF in turn (A B C A B C ...), with a direct exec-to-ready run of
    kdf-sim in every round, so all figures share the same machine conditions."""
    results: dict[str, list[float]] = {c.name: [] for c in contenders}
    for key in ("exec", "detection", "respawn", "readiness", "to_running", "running_lag"):
        results[key] = []
    last_ready = dict.fromkeys((c.name for c in contenders), time.monotonic())
    for round_ in range(kills):
        results["exec"].append(sim_exec_to_ready_once(scratch, round_))
        for contender in contenders:
            port = contender.ports[0]
            time.sleep(max(0.0, last_ready[contender.name] + STABLE_S - time.monotonic()))
            pid = listener_pid(port)
            if pid is None:
                raise RuntimeError(f"{contender.name}: nothing listens on {port}")
            while contender is ours and not ours.events.empty():
                ours.events.get_nowait()
            t_kill, t_ok = kill_and_time(pid, port)
            results[contender.name].append(t_ok - t_kill)
            last_ready[contender.name] = t_ok
            if contender is ours:
                for key, value in our_split(ours, t_kill, t_ok).items():
                    results[key].append(value)
    return results


def memory(make: Callable[[Path, int], Contender], scratch: Path, count: int) -> int:
    with running(make(scratch, count)) as contender:
        contender.wait_all_answering()
        time.sleep(2.0)
        return tree_rss(contender.supervisor_pid())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--no-pm2", action="store_true")
    parser.add_argument("--no-supervisord", action="store_true")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-recovery-"))
    print(
        f"python {sys.version.split()[0]} ({os.path.realpath(sys.executable)}), "
        f"{os.cpu_count()} CPUs; kdf-sim: {SIM}"
    )
    pm2_binary = None if args.no_pm2 else Pm2.find(scratch)
    if not args.no_pm2 and pm2_binary is None:
        print("pm2: not on PATH and npm could not install it: skipped")
    Pm2.binary = pm2_binary

    ours = Ours(scratch / "ours", 1)
    contenders: list[Contender] = [ours]
    if pm2_binary is not None:
        contenders.append(Pm2(scratch / "pm2", 1))
    if not args.no_supervisord:
        contenders.append(Supervisord(scratch / "supervisord", 1))
    with contextlib.ExitStack() as stack:
        for contender in contenders:
            stack.enter_context(running(contender))
        results = recovery(args.kills, contenders, ours, scratch)
    exec_ready = results["exec"]

    print(
        f"\nRecovery after kill -9 until `version` answers again ({args.kills} kills each, "
        "interleaved)"
    )
    print(f"  kdf-sim exec-to-ready alone      {ms(exec_ready)}")
    for contender in contenders:
        print(f"  {contender.name:<32} {ms(results[contender.name])}")
    print(f"    kdf-remote detection           {ms(results['detection'])}  (kill to exit noticed)")
    print(f"    kdf-remote respawn             {ms(results['respawn'])}  (exit noticed to spawned)")
    print(f"    kdf-remote readiness           {ms(results['readiness'])}  (spawned to running)")
    print(
        f"    kdf-remote kill to `running`   {ms(results['to_running'])}  (what its RPC proxy sees)"
    )
    print(
        f"    kdf-remote `running` lag       {ms(results['running_lag'])}  "
        "(running minus first outside answer)"
    )
    for contender in contenders:
        paired = [
            total - base
            for total, base in zip(results[contender.name], results["exec"], strict=True)
        ]
        print(
            f"  overhead {contender.name:<23} {ms(paired)}  "
            "(recovery minus exec-to-ready of the same round)"
        )
    own = [
        d + r + max(0.0, lag)
        for d, r, lag in zip(
            results["detection"], results["respawn"], results["running_lag"], strict=True
        )
    ]
    print(f"  kdf-remote own latency           {ms(own)}  (detection + respawn + running lag)")

    print("\nSupervisor RSS (the supervisor process only, KDF children excluded)")
    makers: list[tuple[str, Callable[[Path, int], Contender]]] = [("kdf-remote", Ours)]
    if pm2_binary is not None:
        makers.append(("pm2", Pm2))
    if not args.no_supervisord:
        makers.append(("supervisord", Supervisord))
    for label, make in makers:
        one = memory(make, scratch / f"mem-{label}-1", 1)
        ten = memory(make, scratch / f"mem-{label}-10", 10)
        print(f"  {label:<32} 1 instance {mib(one):>10}   10 instances {mib(ten):>10}")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
