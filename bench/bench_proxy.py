"""Cost of the daemon's RPC proxy, side by side with a direct call and an nginx reverse proxy.

One kdf-sim, supervised by a real ``kdf-remote-daemon`` on loopback, answers a KDF ``version``
call three ways, measured with wrk (1 thread, a Lua script for the POST body):

* direct:  POST http://127.0.0.1:<kdf port>/
* nginx:   Debian's nginx (1 worker, keep-alive upstream) in front of the same KDF
* daemon:  POST /v1/instances/main/rpc (API key, userpass inserted by the daemon)

at 1 and 32 connections, interleaved over ``--rounds`` rounds (medians reported). The daemon
serves these calls on its RPC lane (inside the HTTP protocol, no ASGI). Then the same daemon
with the RPC routed through Litestar instead, the daemon's idle RSS with one instance running,
and the time from a start request to ``running``.

    apt-get install -y nginx wrk
    .venv/bin/python bench/bench_proxy.py [--duration 10] [--rounds 2]

Targets (issue 3): at 1 connection >= 0.6x nginx's requests/s and <= 0.2 ms added p50 (vs
direct); at 32 connections >= 0.25x nginx's requests/s with p99 < 10 ms; idle RSS <= 40 MiB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from _daemon import API_KEY, BIN, daemon, write_config  # type: ignore[import-not-found]

# bench/ is the script's own directory (first on sys.path), but not on mypy's path.
from _nginx import NginxProxy, free_port  # type: ignore[import-not-found]
from _wrk import WrkResult, lua, median, wrk  # type: ignore[import-not-found]

BODY = '{"method":"version"}'
START_CONFIG = {
    "gui": "bench",
    "netid": 8762,
    "disable_p2p": True,
    "coins": [{"coin": "KMD", "pubtype": 60, "protocol": {"type": "UTXO"}}],
}
# Serves the daemon with the RPC proxy routed through Litestar (no fast path), for comparison.
LITESTAR_RPC = """
import sys
from pathlib import Path
from kdf_remote.daemon.app import create_app
from kdf_remote.daemon.daemon_log import configure_logging
from kdf_remote.daemon.server import serve
from kdf_remote.daemon.settings import load_settings
settings = load_settings(Path(sys.argv[1]))
configure_logging("warning", json_logs=False)
serve(settings, create_app(settings, fast_rpc=False))
"""


def start_to_running(http: httpx.Client, times: int) -> list[float]:
    """Seconds from POST start to its answer (the daemon answers once KDF is running)."""
    seconds = []
    for _ in range(times):
        http.post("/v1/instances/main/stop").raise_for_status()
        began = time.perf_counter()
        answer = http.post("/v1/instances/main/start", json=START_CONFIG)
        seconds.append(time.perf_counter() - began)
        answer.raise_for_status()
        assert answer.json()["state"] == "running"
    return seconds


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (medians)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")

    root = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    port, rpc_port = free_port(), free_port()
    config = write_config(root, port, rpc_port)
    url = f"http://127.0.0.1:{port}"
    scripts = {
        "direct": lua(root, "direct", BODY, {}),
        "nginx": lua(root, "nginx", BODY, {}),
        "daemon": lua(root, "daemon", BODY, {"X-API-Key": API_KEY}),
    }
    kdf_pid: int | None = None
    try:
        argv = [str(BIN / "kdf-remote-daemon"), "--config", str(config)]
        with (
            daemon(argv, url) as proc,
            httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=60) as http,
        ):
            started = http.post("/v1/instances/main/start", json=START_CONFIG)
            started.raise_for_status()
            startup = start_to_running(http, times=5)
            kdf_pid = http.get("/v1/instances/main").json()["pid"]
            time.sleep(3)
            process = psutil.Process(proc.pid)
            idle_rss = process.memory_info().rss
            idle_uss = process.memory_full_info().uss
            urls = {
                "direct": f"http://127.0.0.1:{rpc_port}/",
                "daemon": f"{url}/v1/instances/main/rpc",
            }
            runs: dict[tuple[str, int], list[WrkResult]] = {}
            with NginxProxy(rpc_port) as nginx:
                urls["nginx"] = f"http://127.0.0.1:{nginx.port}/"
                for _ in range(args.rounds):
                    for connections in (1, 32):
                        for target in ("direct", "nginx", "daemon"):
                            result = wrk(urls[target], connections, args.duration, scripts[target])
                            runs.setdefault((target, connections), []).append(result)
            time.sleep(3)
            loaded_rss = process.memory_info().rss
        # The same daemon, RPC routed through Litestar: it re-adopts the running KDF.
        litestar_argv = [sys.executable, "-c", LITESTAR_RPC, str(config)]
        with daemon(litestar_argv, url):
            for _ in range(args.rounds):
                for connections in (1, 32):
                    result = wrk(urls["daemon"], connections, args.duration, scripts["daemon"])
                    runs.setdefault(("litestar", connections), []).append(result)
    finally:
        if kdf_pid is not None:
            with contextlib.suppress(psutil.Error):
                psutil.Process(kdf_pid).send_signal(signal.SIGINT)
                psutil.Process(kdf_pid).wait(10)
        shutil.rmtree(root, ignore_errors=True)

    report(runs, (idle_rss, idle_uss, loaded_rss), startup, args)


def report(
    runs: dict[tuple[str, int], list[WrkResult]],
    memory: tuple[int, int, int],
    startup: list[float],
    args: argparse.Namespace,
) -> None:
    """Print the table, the ratios and the targets."""
    med = {key: median(value) for key, value in runs.items()}
    print(f"wrk -t1 -d{args.duration:g}s, {args.rounds} interleaved rounds, medians")
    print(f"{'route':<28}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    labels = {
        "direct": "direct to kdf-sim",
        "nginx": "nginx -> kdf-sim",
        "daemon": "daemon rpc (RPC lane)",
        "litestar": "daemon rpc (via Litestar)",
    }
    for connections in (1, 32):
        for target in ("direct", "nginx", "daemon", "litestar"):
            r = med[(target, connections)]
            print(
                f"{labels[target]:<28}{connections:>6}{r.requests_per_s:>10.0f}"
                f"{r.p50_ms:>9.3f}{r.p99_ms:>9.3f}{r.errors:>8}"
            )
    figures = {}
    for connections in (1, 32):
        d, n, x = (med[(t, connections)] for t in ("direct", "nginx", "daemon"))
        figures[connections] = {
            "daemon/direct req/s": x.requests_per_s / d.requests_per_s,
            "daemon/nginx req/s": x.requests_per_s / n.requests_per_s,
            "added p50 ms vs direct": x.p50_ms - d.p50_ms,
            "daemon p99 ms": x.p99_ms,
        }
    print()
    for connections, values in figures.items():
        shown = ", ".join(f"{k} {v:.3f}" for k, v in values.items())
        print(f"{connections:>2} conn: {shown}")
    rss, uss, loaded = memory
    print(
        f"daemon idle RSS with one instance: {rss / 2**20:.1f} MiB (USS {uss / 2**20:.1f} MiB; "
        f"RSS after the load runs {loaded / 2**20:.1f} MiB)"
    )
    print(
        f"start request -> running: median {statistics.median(startup) * 1000:.0f} ms "
        f"[{min(startup) * 1000:.0f}-{max(startup) * 1000:.0f}] over {len(startup)} starts"
    )
    checks = {
        "1 conn >= 0.6x nginx req/s": figures[1]["daemon/nginx req/s"] >= 0.6,
        "1 conn added p50 <= 0.2 ms": figures[1]["added p50 ms vs direct"] <= 0.2,
        "32 conn >= 0.25x nginx req/s": figures[32]["daemon/nginx req/s"] >= 0.25,
        "32 conn p99 < 10 ms": figures[32]["daemon p99 ms"] < 10,
        "idle RSS <= 40 MiB": rss <= 40 * 2**20,
    }
    print()
    for name, ok in checks.items():
        print(f"target {name}: {'met' if ok else 'MISSED'}")
    print(json.dumps({"figures": figures, "rss_mib": rss / 2**20, "targets": checks}))


if __name__ == "__main__":
    main()
