"""kdf-sim speed figures: exec-to-readiness, stop-to-exit, and RPC throughput.

Usage: .venv/bin/python bench/bench_sim.py [--runs 20] [--seconds 5] [--connections 32]

Prints figures only; nothing here asserts a threshold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kdf_remote.sim.harness import READY_PATTERN

PASSWORD = "Bench-Pass-1!"
CONFIG = {
    "gui": "bench",
    "netid": 8762,
    "rpc_password": PASSWORD,
    "rpcport": 0,
    "disable_p2p": True,
    "coins": [],
}


def _start(workdir: Path, command: list[str]) -> tuple[subprocess.Popen[bytes], float, int]:
    conf = workdir / "MM2.json"
    conf.write_text(json.dumps(CONFIG))
    env = {**os.environ, "MM_CONF_PATH": str(conf), "HOME": str(workdir)}
    begin = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert process.stdout is not None
    for line in iter(process.stdout.readline, b""):
        match = READY_PATTERN.search(line)
        if match:
            return process, time.perf_counter() - begin, int(match.group(2))
    raise RuntimeError("kdf-sim exited before readiness")


def _post(port: int, body: dict[str, object]) -> None:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", "/", body=json.dumps(body))
    connection.getresponse().read()
    connection.close()


def bench_startup(runs: int) -> None:
    command = [str(Path(sys.executable).parent / "kdf-sim")]
    ready_times, stop_times = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            process, ready, port = _start(Path(tmp), command)
            ready_times.append(ready)
            begin = time.perf_counter()
            _post(port, {"method": "stop", "userpass": PASSWORD})
            process.wait(30)
            stop_times.append(time.perf_counter() - begin)
            assert process.returncode == 0
    _report(f"exec -> readiness line ({runs} runs)", ready_times)
    _report(f"stop RPC -> exit 0 ({runs} runs)", stop_times)


def _report(label: str, seconds: list[float]) -> None:
    median, low, high = (1000 * v for v in (statistics.median(seconds), min(seconds), max(seconds)))
    print(f"{label}: median {median:.1f} ms, min {low:.1f} ms, max {high:.1f} ms")


async def _client(port: int, body: bytes, stop_at: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        b"POST / HTTP/1.1\r\nHost: b\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    done = 0
    while time.perf_counter() < stop_at:
        writer.write(request)
        length = 0
        while True:
            line = await reader.readline()
            if line == b"\r\n":
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        done += 1
    counts.append(done)
    writer.close()


async def _throughput(port: int, body: bytes, seconds: float, connections: int) -> float:
    counts: list[int] = []
    stop_at = time.perf_counter() + seconds
    await asyncio.gather(*(_client(port, body, stop_at, counts) for _ in range(connections)))
    return sum(counts) / seconds


def bench_throughput(seconds: float, connections: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        process, _, port = _start(Path(tmp), [str(Path(sys.executable).parent / "kdf-sim")])
        try:
            for name, body in (
                ("version (public)", {"method": "version"}),
                (
                    "get_enabled_coins v2 (auth)",
                    {"mmrpc": "2.0", "method": "get_enabled_coins", "userpass": PASSWORD},
                ),
            ):
                rate = asyncio.run(
                    _throughput(port, json.dumps(body).encode(), seconds, connections)
                )
                print(
                    f"{name}: {rate:.0f} req/s over {connections} keep-alive connections "
                    f"(Python asyncio client, same 2-core box: client-bound lower bound)"
                )
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    bench_startup(args.runs)
    bench_throughput(args.seconds, args.connections)


if __name__ == "__main__":
    main()
