"""Cost of supervising KDF workers, and time of a rolling update of all of them, on this machine.

    .venv/bin/python bench/bench_workers.py [--workers 10] [--window 60] [--health-interval 30]

1. Overhead: a ``Supervisor`` (the part of the daemon that grows with the number of workers) runs
   in this process. It supervises 0 workers, then N kdf-sim workers (fake releases exec'ing
   kdf-sim) at the given health interval, which defaults to 30 s as in the daemon. Over a window,
   the bench samples this process's CPU time and RSS. It prints both, the difference divided by
   N (the per-worker overhead), and the CPU the N simulators used themselves (context: they share
   the machine's 2 cores).
2. Rolling update: N workers go from release A to B (pre-update backup of every data dir, one at a
   time, each health-gated) and then from B to a release that exits at start, which is rolled back
   everywhere. The bench prints the wall time of each, in total and per worker.

The bench prints its figures. It asserts nothing, because this is a shared, noisy 2-core box.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

# bench/ is the script's own directory (first on sys.path), but not on mypy's path.
from _nginx import free_port  # type: ignore[import-not-found]
from _release_fixtures import Mode, ReleaseServer, release_script, release_zip, sha256
from kdf_remote.kdf.config import decode_startup_config
from kdf_remote.kdf.release import DownloadPolicy, ReleaseSpec, ReleaseStore
from kdf_remote.supervisor import InstanceSpec, Supervisor
from kdf_remote.supervisor.backup import BackupManager
from kdf_remote.supervisor.updater import UpdatePolicy, Updater

CONFIG = decode_startup_config(
    {
        "gui": "bench",
        "netid": 8762,
        "rpc_password": "Bench-Workers-Pass-1!",
        "rpcip": "127.0.0.1",
        "disable_p2p": True,
        "coins": [],
        "passphrase": "bench workers seed words only",
    }
)


def mib(n: float) -> str:
    return f"{n / 1024 / 1024:.1f} MiB"


async def sample(window: float, sims: list[psutil.Process]) -> tuple[float, float, float]:
    """CPU % of one core used by this process and by ``sims`` over ``window``, median RSS."""
    me = psutil.Process()
    rss: list[int] = []
    for proc in sims:
        proc.cpu_percent(None)
    t0, c0 = time.monotonic(), sum(me.cpu_times()[:2])
    sim_c0 = sum(sum(p.cpu_times()[:2]) for p in sims)
    end = t0 + window
    while time.monotonic() < end:
        rss.append(me.memory_info().rss)
        await asyncio.sleep(1.0)
    elapsed = time.monotonic() - t0
    own = (sum(me.cpu_times()[:2]) - c0) / elapsed * 100
    sim_cpu = (sum(sum(p.cpu_times()[:2]) for p in sims) - sim_c0) / elapsed * 100
    return own, statistics.median(rss), sim_cpu


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--health-interval", type=float, default=30.0)
    args = parser.parse_args()
    n = args.workers
    root = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    store = ReleaseStore(root / "bin")
    (root / "kdf-a").write_bytes(release_script("A"))
    store.adopt(root / "kdf-a", "A")
    store.switch("A")
    sup = Supervisor()
    names = [f"w{i}" for i in range(1, n + 1)]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, {n} workers, "
          f"health interval {args.health_interval:g} s, window {args.window:g} s")  # fmt: skip
    with ReleaseServer() as server:
        try:
            idle_cpu, idle_rss, _ = await sample(args.window, [])
            print(f"supervisor, 0 workers:  cpu {idle_cpu:.2f}% of a core, rss {mib(idle_rss)}")
            t0 = time.monotonic()
            for name in names:
                await sup.add(
                    InstanceSpec(
                        name=name,
                        binary_path=store.current_binary,
                        data_dir=root / "data" / name,
                        run_dir=root / "run" / name,
                        rpc_port=free_port(),
                        health_interval_s=args.health_interval,
                    )
                )
                await sup.start(name, CONFIG)
            print(f"started {n} workers in {time.monotonic() - t0:.2f} s")
            sims = [psutil.Process(sup.status(name).pid or 0) for name in names]
            await asyncio.sleep(2.0)  # let start-up work settle before measuring
            busy_cpu, busy_rss, sim_cpu = await sample(args.window, sims)
            print(f"supervisor, {n} workers: cpu {busy_cpu:.2f}% of a core, rss {mib(busy_rss)}")
            print(f"per worker:             cpu {(busy_cpu - idle_cpu) / n:.3f}% of a core, "
                  f"rss {(busy_rss - idle_rss) / n / 1024:.0f} KiB")  # fmt: skip
            print(f"the {n} kdf-sim processes themselves: cpu {sim_cpu:.2f}% of a core")

            updater = Updater(
                sup,
                store,
                DownloadPolicy(allowed_origins=(server.origin,)),
                backups=BackupManager(root / "backups", retention=3),
                policy=UpdatePolicy(instance_timeout=120),
            )

            def spec(version: str, mode: Mode = "ok") -> ReleaseSpec:
                data = release_zip(version, mode=mode)
                url = server.add(f"/{version}.zip", data)
                return ReleaseSpec(version=version, url=url, sha256=sha256(data))

            for label, release in (
                ("A -> B (all restart)", spec("B")),
                ("B -> broken, rolled back", spec("C", "exits_at_start")),
            ):
                t0 = time.monotonic()
                result = await updater.update(release)
                took = time.monotonic() - t0
                restarted = sum(1 for s in result.progress.steps if s.state.value != "pending")
                print(f"rolling update {label}: {result.outcome.value} in {took:.2f} s, "
                      f"{restarted} workers touched")  # fmt: skip
        finally:
            await sup.close(stop_instances=True)


if __name__ == "__main__":
    asyncio.run(main())
