"""Cost of the kdf_compat listener, side by side with KDF itself and the REST RPC proxy.

One kdf-sim, supervised by a real ``kdf-remote-daemon`` on loopback with ``kdf_compat`` enabled,
answers an authenticated legacy ``get_enabled_coins`` three ways, measured with wrk (1 thread,
a Lua script for the POST body):

* direct:  POST http://127.0.0.1:<kdf port>/ with the userpass (KDF as an SDK app sees it today)
* compat:  POST http://127.0.0.1:<kdf_compat port>/ with the userpass (checked by the daemon,
           audited, then forwarded)
* rest:    POST /v1/instances/main/rpc with an API key (userpass inserted by the daemon)

at 1 and 32 connections, interleaved over ``--rounds`` rounds (medians reported). Rate limits
are raised so that wrk measures the path, not the limiter.

    apt-get install -y wrk
    .venv/bin/python bench/bench_compat.py [--duration 5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import tempfile
from pathlib import Path

import httpx
import psutil

from _daemon import API_KEY, BIN, daemon, write_config  # type: ignore[import-not-found]
from _nginx import free_port  # type: ignore[import-not-found]
from _wrk import WrkResult, lua, median, wrk  # type: ignore[import-not-found]

RPC_PASSWORD = "Bench-Rpc-Pass-42!x"  # a benchmark value
START_CONFIG = {
    "gui": "bench",
    "netid": 8762,
    "disable_p2p": True,
    "rpc_password": RPC_PASSWORD,
    "coins": [{"coin": "KMD", "pubtype": 60, "protocol": {"type": "UTXO"}}],
}
BODY = json.dumps({"method": "get_enabled_coins", "userpass": RPC_PASSWORD})
TARGETS = ("direct", "compat", "rest")
LABELS = {
    "direct": "direct to kdf-sim",
    "compat": "kdf_compat listener",
    "rest": "REST rpc proxy",
}


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (medians)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")

    root = Path(tempfile.mkdtemp(prefix="bench-compat-"))
    port, rpc_port, compat_port = free_port(), free_port(), free_port()
    config = write_config(
        root, port, rpc_port, extra=f"kdf_compat: {{enabled: true, port: {compat_port}}}\n"
    )
    url = f"http://127.0.0.1:{port}"
    urls = {
        "direct": f"http://127.0.0.1:{rpc_port}/",
        "compat": f"http://127.0.0.1:{compat_port}/",
        "rest": f"{url}/v1/instances/main/rpc",
    }
    scripts = {
        "direct": lua(root, "direct", BODY, {}),
        "compat": lua(root, "compat", BODY, {}),
        "rest": lua(root, "rest", BODY, {"X-API-Key": API_KEY}),
    }
    runs: dict[tuple[str, int], list[WrkResult]] = {}
    kdf_pid: int | None = None
    try:
        argv = [str(BIN / "kdf-remote-daemon"), "--config", str(config)]
        with (
            daemon(argv, url),
            httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=60) as http,
        ):
            http.post("/v1/instances/main/start", json=START_CONFIG).raise_for_status()
            kdf_pid = http.get("/v1/instances/main").json()["pid"]
            for _ in range(args.rounds):
                for connections in (1, 32):
                    for target in TARGETS:
                        result = wrk(urls[target], connections, args.duration, scripts[target])
                        runs.setdefault((target, connections), []).append(result)
            audit_lines = len((root / "state" / "audit.log").read_text().splitlines())
    finally:
        if kdf_pid is not None:
            with contextlib.suppress(psutil.Error):
                psutil.Process(kdf_pid).send_signal(signal.SIGINT)
                psutil.Process(kdf_pid).wait(10)
        shutil.rmtree(root, ignore_errors=True)
    report(runs, audit_lines, args)


def report(
    runs: dict[tuple[str, int], list[WrkResult]], audit_lines: int, args: argparse.Namespace
) -> None:
    """Print the table and the ratios."""
    med = {key: median(value) for key, value in runs.items()}
    print(f"wrk -t1 -d{args.duration:g}s, {args.rounds} interleaved rounds, medians")
    print("call: legacy get_enabled_coins with userpass")
    print(f"{'route':<24}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for connections in (1, 32):
        for target in TARGETS:
            r = med[(target, connections)]
            print(
                f"{LABELS[target]:<24}{connections:>6}{r.requests_per_s:>10.0f}"
                f"{r.p50_ms:>9.3f}{r.p99_ms:>9.3f}{r.errors:>8}"
            )
    for connections in (1, 32):
        direct, compat, rest = (med[(t, connections)] for t in TARGETS)
        print(
            f"{connections:>2} conns: compat {compat.requests_per_s / direct.requests_per_s:.2f}x "
            f"direct, {compat.requests_per_s / rest.requests_per_s:.2f}x REST proxy; "
            f"added p50 {compat.p50_ms - direct.p50_ms:+.3f} ms vs direct"
        )
    print(f"audit lines written: {audit_lines}")


if __name__ == "__main__":
    main()
