"""Safety properties: one KDF per instance under concurrent requests, bounded logs, no secret
leaking through argv, environment, files, statuses, events, logs or exceptions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from pathlib import Path

import msgspec
import psutil
import pytest

from kdf_remote.kdf import KdfConfigError, decode_startup_config
from kdf_remote.supervisor import (
    EventKind,
    InstanceState,
    InstanceStatus,
    InvalidState,
    StartFailed,
    Supervisor,
    SupervisorEvent,
)

from .conftest import RPC_PASSWORD, SEED, SpecFactory, kdf_children, make_config, wait_for

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


async def test_fifty_concurrent_start_stop_never_two_kdf(
    supervisor: Supervisor, make_spec: SpecFactory
) -> None:
    """50 interleaved start/stop/restart calls: never two KDF processes, every call either
    succeeds or gets a conflict, and the end state is consistent."""
    await supervisor.add(make_spec())
    await supervisor.set_config("main", make_config())
    events = supervisor.subscribe("main")
    most_alive = 0
    exits: list[SupervisorEvent] = []
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal most_alive
        while not done.is_set():
            most_alive = max(most_alive, len(kdf_children()))
            await asyncio.sleep(0.002)

    async def watch() -> None:
        nonlocal most_alive
        async for event in events:
            if event.kind is EventKind.SPAWNED:
                most_alive = max(most_alive, len(kdf_children()))
            if event.kind is EventKind.EXITED:
                exits.append(event)

    rng = random.Random(2026)
    operations = [rng.choice(["start", "start", "stop", "restart"]) for _ in range(50)]

    async def call(kind: str, delay: float) -> InstanceStatus:
        await asyncio.sleep(delay)
        if kind == "start":
            return await supervisor.start("main")
        if kind == "stop":
            return await supervisor.stop("main")
        return await supervisor.restart("main")

    sampler, watcher = asyncio.create_task(sample()), asyncio.create_task(watch())
    results = await asyncio.gather(
        *(call(kind, rng.random() * 0.5) for kind in operations), return_exceptions=True
    )
    done.set()
    await sampler
    for result in results:
        assert isinstance(result, InstanceStatus | InvalidState | StartFailed), repr(result)
    assert sum(isinstance(r, InstanceStatus) for r in results) > 0
    assert most_alive <= 1
    # A second KDF on the same port would have died with 101 ("port busy").
    assert all(e.exit is not None and e.exit.code != 101 for e in exits)
    settled = (InstanceState.RUNNING, InstanceState.STOPPED, InstanceState.BACKOFF)
    await wait_for(lambda: supervisor.status("main").state in settled)
    status = supervisor.status("main")
    alive = [child.pid for child in kdf_children()]
    assert alive == ([status.pid] if status.state is InstanceState.RUNNING else [])
    await supervisor.stop("main")
    assert kdf_children() == []
    await events.aclose()
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher


def log_files(run_dir: Path) -> list[Path]:
    """The live log, its rotated copies and a rotation's temporary copy."""
    return sorted(run_dir.glob("kdf.log*"))


def disk_use(run_dir: Path) -> int:
    """Bytes held by the log files right now (files may vanish mid-rotation)."""
    total = 0
    for path in log_files(run_dir):
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    return total


@pytest.mark.slow
async def test_fifty_megabytes_of_logs_stay_bounded(
    supervisor: Supervisor, make_spec: SpecFactory
) -> None:
    """A KDF writing 50 MB of logs leaves at most (backups+1) x (cap + slack) on disk, and the
    supervisor's own memory stays flat (it never reads the log into memory to rotate it)."""
    cap, backups, line = 2 * MIB, 2, 64 * 1024
    spec = make_spec(
        log_max_bytes=cap,
        log_backups=backups,
        log_check_interval_s=0.05,
        env={"KDF_SIM_LOG_RATE": "160", "KDF_SIM_LOG_LINE_BYTES": str(line)},
    )
    await supervisor.add(spec)
    rss_before = psutil.Process().memory_info().rss
    await supervisor.start("main", make_config())
    largest = 0
    flood_line = re.compile(r"kdf_sim_flood:1\] line (\d+) ")
    written = 0
    async with asyncio.timeout(120):
        while written < 50 * MIB:
            largest = max(largest, disk_use(spec.run_dir))
            for text in reversed(await supervisor.read_log_tail("main", 1)):
                if match := flood_line.search(text):
                    written = int(match.group(1)) * line
            await asyncio.sleep(0.02)
    # Slack: what KDF can write between two checks on a loaded machine (generous on purpose).
    bound = (backups + 1) * (cap + 6 * MIB)
    assert largest <= bound
    assert len([p for p in log_files(spec.run_dir) if not p.name.endswith(".tmp")]) <= backups + 1
    assert psutil.Process().memory_info().rss - rss_before < 20 * MIB
    tail = await supervisor.read_log_tail("main", 3)
    assert all(len(text) <= 16 * 1024 + 20 for text in tail)


async def test_no_secret_in_argv_env_files_status_events_or_logs(
    supervisor: Supervisor, make_spec: SpecFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Passphrase and rpc_password never show in /proc/<pid>/cmdline or environ, supervisor
    logs, statuses, events or KDF's log; config files are 0600 in a 0700 directory."""
    caplog.set_level(logging.DEBUG)
    secrets = [RPC_PASSWORD, SEED, "abandon ability able"]
    spec = make_spec()
    await supervisor.add(spec)
    events = supervisor.subscribe("main")
    status = await supervisor.start("main", make_config(passphrase=SEED))
    assert status.pid is not None
    process = psutil.Process(status.pid)
    argv = "\0".join(process.cmdline())
    environ = "\0".join(f"{k}={v}" for k, v in process.environ().items())
    await supervisor.rpc(
        "main", b'{"method":"get_enabled_coins","userpass":"' + SEED.encode() + b'"}'
    )
    await supervisor.sample_health("main")
    tail = await supervisor.read_log_tail("main", 1000)
    stopped = await supervisor.stop("main")
    await supervisor.close()
    seen = [e async for e in events]
    texts = {
        "argv": argv,
        "environ": environ,
        "status": msgspec.json.encode([status, stopped]).decode(),
        "events": msgspec.json.encode(seen).decode(),
        "supervisor log": caplog.text,
        "kdf log": spec.log_path.read_text(errors="replace"),
        "tail": "\n".join(tail),
    }
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"secret found in {where}"
    assert spec.run_dir.stat().st_mode & 0o777 == 0o700
    for name in ("MM2.json", "config.json"):
        assert (spec.run_dir / name).stat().st_mode & 0o777 == 0o600


async def test_no_secret_in_exceptions(supervisor: Supervisor, make_spec: SpecFactory) -> None:
    """Config errors and failed starts never carry a secret in their message."""
    with pytest.raises(KdfConfigError) as bad:
        decode_startup_config({"rpc_password": SEED, "disable_p2p": True})
    assert SEED not in str(bad.value)
    await supervisor.add(make_spec(env={"KDF_SIM_EXIT_AFTER": "0", "KDF_SIM_EXIT_CODE": "7"}))
    with pytest.raises(StartFailed) as failed:
        await supervisor.start("main", make_config(passphrase=SEED))
    for secret in (SEED, RPC_PASSWORD):
        assert secret not in str(failed.value)
        assert secret not in repr(supervisor.stored_config("main"))
    await supervisor.stop("main")


async def test_read_log_redacts_secrets_kdf_prints(
    supervisor: Supervisor, make_spec: SpecFactory
) -> None:
    """Secrets that end up in KDF's log file are masked when the log is read back."""
    spec = make_spec()
    await supervisor.add(spec)
    await supervisor.start("main", make_config(passphrase=SEED))
    with spec.log_path.open("a") as log:
        log.write(f'echoed request {{"userpass":"{RPC_PASSWORD}","method":"x"}}\n')
        log.write(f"seed was {SEED}\n")
    tail = await supervisor.read_log_tail("main", 2)
    assert len(tail) == 2
    for line in tail:
        assert RPC_PASSWORD not in line
        assert "abandon ability" not in line
        assert "***" in line
