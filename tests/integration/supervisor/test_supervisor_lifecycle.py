"""Supervisor lifecycle against real kdf-sim processes: start, crash, restart, stop, give up."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import msgspec
import psutil
import pytest

from kdf_remote.supervisor import (
    EventKind,
    InstanceState,
    InvalidState,
    NoStoredConfig,
    NotRunning,
    RestartPolicy,
    StartFailed,
    Supervisor,
    Timeouts,
    UnknownInstance,
)
from kdf_remote.supervisor.process import group_members

from .conftest import (
    RPC_PASSWORD,
    SpecFactory,
    kdf_children,
    make_config,
    next_event,
    wait_for,
)

pytestmark = pytest.mark.integration


def requests_seen(path: Path) -> list[str]:
    """Methods kdf-sim logged as received (KDF_SIM_REQUEST_LOG)."""
    if not path.exists():
        return []
    return [msgspec.json.decode(line)["method"] for line in path.read_bytes().splitlines()]


def is_gone(pid: int, create_time: float) -> bool:
    """True when that process no longer exists (not even as a zombie)."""
    try:
        process = psutil.Process(pid)
        return abs(process.create_time() - create_time) > 0.01
    except psutil.NoSuchProcess:
        return True


async def test_start_reaches_running_after_version_and_auth(
    supervisor: Supervisor, make_spec: SpecFactory, tmp_path: Path
) -> None:
    """start() returns running only after `version` and an authenticated call answered."""
    request_log = tmp_path / "requests.jsonl"
    spec = make_spec(env={"KDF_SIM_REQUEST_LOG": str(request_log)})
    await supervisor.add(spec)
    status = await supervisor.start("main", make_config())
    assert status.state is InstanceState.RUNNING
    assert status.pid is not None
    assert status.kdf_version == "2.5.1-beta_kdfsim0"
    assert status.rpc_port == spec.rpc_port
    seen = requests_seen(request_log)
    assert seen[-2:] == ["version", "get_enabled_coins"]
    assert psutil.Process(status.pid).ppid() == os.getpid()
    assert os.getpgid(status.pid) == status.pid  # own process group
    assert os.getsid(status.pid) == status.pid  # own session


async def test_status_has_process_figures_soon_after_running(
    supervisor: Supervisor, make_spec: SpecFactory
) -> None:
    """rss and open fds appear in status on the next monitor pass, not a health interval later."""
    await supervisor.add(make_spec(health_interval_s=3600.0))
    started = await supervisor.start("main", make_config())
    pid = started.pid
    assert pid is not None

    def sampled() -> bool:
        status = supervisor.status("main")
        return status.rss_bytes is not None and status.open_fds is not None

    await wait_for(sampled)
    status = supervisor.status("main")
    assert status.rss_bytes is not None and status.rss_bytes > 0
    assert status.open_fds is not None and status.open_fds > 0


async def test_rpc_injects_the_real_userpass(
    supervisor: Supervisor, make_spec: SpecFactory
) -> None:
    """A caller's wrong userpass is replaced: the authenticated call succeeds."""
    await supervisor.add(make_spec())
    await supervisor.start("main", make_config())
    answer = await supervisor.rpc("main", b'{"method":"get_enabled_coins","userpass":"wrong"}')
    assert answer.status == 200
    assert msgspec.json.decode(answer.body) == {"result": []}
    batch = await supervisor.rpc("main", b'[{"method":"version"},{"method":"get_enabled_coins"}]')
    assert batch.status == 200
    assert len(msgspec.json.decode(batch.body)) == 2


async def test_kill_9_is_detected_and_restarted(
    supervisor: Supervisor, make_spec: SpecFactory
) -> None:
    """SIGKILL of KDF is noticed without any polling loop and a new KDF answers again."""
    # Health sampling and log checks are slowed to an hour: only the pidfd can notice the exit.
    await supervisor.add(make_spec(health_interval_s=3600, log_check_interval_s=3600))
    events = supervisor.subscribe("main")
    first = await supervisor.start("main", make_config())
    assert first.pid is not None
    os.kill(first.pid, signal.SIGKILL)
    exited = await next_event(events, lambda e: e.kind is EventKind.EXITED)
    assert exited.exit is not None
    assert exited.exit.signal == "SIGKILL"
    assert exited.pid == first.pid
    running = await next_event(
        events, lambda e: e.kind is EventKind.STATE and e.state is InstanceState.RUNNING
    )
    status = supervisor.status("main")
    assert running.pid == status.pid != first.pid
    assert status.restarts == 1
    assert status.last_exit is not None
    assert status.last_exit.signal == "SIGKILL"
    assert (await supervisor.rpc("main", b'{"method":"version"}')).status == 200
    with pytest.raises(ChildProcessError):
        os.waitpid(first.pid, os.WNOHANG)  # noqa: ASYNC222 (WNOHANG) reaped: no zombie
    await events.aclose()


async def test_crash_loop_ends_in_failed_with_bounded_spawns(
    supervisor: Supervisor, make_spec: SpecFactory
) -> None:
    """A KDF that dies right after binding is restarted max_restart_attempts times, then failed."""
    policy = RestartPolicy(max_restart_attempts=2, backoff_initial_s=0.05, jitter=0.0)
    spec = make_spec(restart=policy, env={"KDF_SIM_EXIT_AFTER": "0", "KDF_SIM_EXIT_CODE": "3"})
    await supervisor.add(spec)
    events = supervisor.subscribe("main")
    with contextlib.suppress(StartFailed):
        await supervisor.start("main", make_config())
    spawned = 0
    async with asyncio.timeout(60):
        async for event in events:
            spawned += event.kind is EventKind.SPAWNED
            if event.kind is EventKind.STATE and event.state is InstanceState.FAILED:
                break
    assert spawned == 3
    status = supervisor.status("main")
    assert status.state is InstanceState.FAILED
    assert status.pid is None
    assert status.last_exit is not None
    assert status.last_exit.code == 3
    assert kdf_children() == []
    # A manual start clears failed: the streak starts over, so it takes three spawns again (with
    # the old streak kept, the first crash would have meant failed at once).
    with contextlib.suppress(StartFailed):
        await supervisor.start("main")
    spawned = 0
    async with asyncio.timeout(60):
        async for event in events:
            spawned += event.kind is EventKind.SPAWNED
            if event.kind is EventKind.STATE and event.state is InstanceState.FAILED:
                break
    assert spawned == 3
    await events.aclose()


async def test_exit_code_1_during_start_is_a_failed_start(
    supervisor: Supervisor, make_spec: SpecFactory
) -> None:
    """KDF exiting with code 1 (config error) fails the start and schedules a delayed retry."""
    policy = RestartPolicy(config_error_delay_s=3600.0, jitter=0.0)
    spec = make_spec(restart=policy, env={"KDF_SIM_EXIT_AFTER": "0", "KDF_SIM_EXIT_CODE": "1"})
    await supervisor.add(spec)
    events = supervisor.subscribe("main")
    with contextlib.suppress(StartFailed):
        await supervisor.start("main", make_config())
    scheduled = await next_event(events, lambda e: e.kind is EventKind.RESTART_SCHEDULED)
    assert scheduled.delay_s == 3600.0
    assert supervisor.status("main").state is InstanceState.BACKOFF
    await events.aclose()


async def test_stop_escalates_past_ignored_stop_and_sigint(
    supervisor: Supervisor, make_spec: SpecFactory, tmp_path: Path
) -> None:
    """A KDF ignoring `stop` and SIGINT is SIGKILLed with its group; no zombie, no survivor."""
    request_log = tmp_path / "requests.jsonl"
    timeouts = Timeouts(start_s=20, stop_rpc_s=0.3, sigint_s=0.3, sigkill_s=10, probe_s=5)
    env = {
        "KDF_SIM_IGNORE_STOP": "1",
        "KDF_SIM_IGNORE_SIGINT": "1",
        "KDF_SIM_REQUEST_LOG": str(request_log),
    }
    await supervisor.add(make_spec(timeouts=timeouts, env=env))
    status = await supervisor.start("main", make_config())
    assert status.pid is not None
    create_time = psutil.Process(status.pid).create_time()
    stopped = await supervisor.stop("main")
    assert stopped.state is InstanceState.STOPPED
    assert stopped.pid is None
    assert stopped.last_exit is not None
    assert stopped.last_exit.signal == "SIGKILL"
    assert "stop" in requests_seen(request_log)
    assert is_gone(status.pid, create_time)
    assert group_members(status.pid) == []
    with pytest.raises(ChildProcessError):
        os.waitpid(status.pid, os.WNOHANG)  # noqa: ASYNC222 (WNOHANG never blocks)


async def test_graceful_stop_uses_the_stop_rpc(
    supervisor: Supervisor, make_spec: SpecFactory
) -> None:
    """A well-behaved KDF exits 0 on the `stop` RPC; stopping again is a no-op."""
    await supervisor.add(make_spec())
    await supervisor.start("main", make_config())
    stopped = await supervisor.stop("main")
    assert stopped.last_exit is not None
    assert stopped.last_exit.code == 0
    again = await supervisor.stop("main")
    assert again.state is InstanceState.STOPPED
    assert again.last_exit == stopped.last_exit
    with pytest.raises(NotRunning):
        await supervisor.rpc("main", b'{"method":"version"}')


async def test_clean_exit_is_not_restarted(supervisor: Supervisor, make_spec: SpecFactory) -> None:
    """KDF stopped through its own `stop` RPC (exit 0) stays stopped."""
    await supervisor.add(make_spec())
    events = supervisor.subscribe("main")
    await supervisor.start("main", make_config())
    await supervisor.rpc("main", b'{"method":"stop"}')
    stopped = await next_event(
        events, lambda e: e.kind is EventKind.STATE and e.state is InstanceState.STOPPED
    )
    assert stopped.state is InstanceState.STOPPED
    assert supervisor.status("main").restarts == 0
    await events.aclose()


async def test_start_timeout_kills_a_hung_kdf(
    supervisor: Supervisor, make_spec: SpecFactory
) -> None:
    """A KDF that never binds its RPC is killed at the start timeout and the start fails."""
    timeouts = Timeouts(start_s=0.5, stop_rpc_s=1, sigint_s=1, sigkill_s=10, probe_s=1)
    spec = make_spec(
        timeouts=timeouts,
        restart=RestartPolicy(max_restart_attempts=0),
        env={"KDF_SIM_HANG": "1"},
    )
    await supervisor.add(spec)
    with pytest.raises(StartFailed, match="not ready within"):
        await supervisor.start("main", make_config())
    status = supervisor.status("main")
    assert status.state is InstanceState.FAILED
    assert status.last_exit is not None
    assert status.last_exit.signal == "SIGKILL"
    assert kdf_children() == []


async def test_stop_preempts_a_start_in_progress(
    supervisor: Supervisor, make_spec: SpecFactory
) -> None:
    """stop() during a slow start ends it at once; the start caller gets a conflict."""
    await supervisor.add(make_spec(env={"KDF_SIM_START_DELAY": "60"}))
    starting = asyncio.create_task(supervisor.start("main", make_config()))
    await wait_for(lambda: supervisor.status("main").pid is not None)
    stopped = await supervisor.stop("main")
    assert stopped.state is InstanceState.STOPPED
    with pytest.raises(InvalidState, match="interrupted"):
        await starting
    assert kdf_children() == []


async def test_errors_for_unknown_and_unconfigured(
    supervisor: Supervisor, make_spec: SpecFactory
) -> None:
    """Unknown names, duplicate adds and a start without any config are clear errors."""
    with pytest.raises(UnknownInstance):
        supervisor.status("nope")
    spec = make_spec()
    await supervisor.add(spec)
    with pytest.raises(InvalidState):
        await supervisor.add(spec)
    with pytest.raises(NoStoredConfig):
        await supervisor.start("main")
    with pytest.raises(NoStoredConfig):
        supervisor.stored_config("main")
    assert supervisor.names() == ["main"]


async def test_running_start_is_idempotent_and_new_config_conflicts(
    supervisor: Supervisor, make_spec: SpecFactory
) -> None:
    """start() on a running instance is a no-op; with a different config it is a conflict."""
    await supervisor.add(make_spec())
    first = await supervisor.start("main", make_config())
    assert (await supervisor.start("main")).pid == first.pid
    with pytest.raises(InvalidState, match="restart"):
        await supervisor.start("main", make_config(gui="other"))
    restarted = await supervisor.restart("main", make_config(gui="other"))
    assert restarted.pid != first.pid
    assert supervisor.stored_config("main").gui == "other"


async def test_health_sample(supervisor: Supervisor, make_spec: SpecFactory) -> None:
    """sample_health reports the process's resources and the RPC round trip; status shows them."""
    await supervisor.add(make_spec())
    status = await supervisor.start("main", make_config())
    sample = await supervisor.sample_health("main")
    assert sample.pid == status.pid
    assert sample.rss_bytes > 0
    assert sample.open_fds > 0
    assert sample.threads >= 1
    assert sample.rpc_rtt_ms is not None
    assert sample.rpc_rtt_ms > 0
    assert supervisor.status("main").rss_bytes == sample.rss_bytes


async def test_logs_tail_and_follow(supervisor: Supervisor, make_spec: SpecFactory) -> None:
    """KDF's stdout and stderr land in the instance log; tail and follow read it back."""
    spec = make_spec(env={"KDF_SIM_LOG_RATE": "50"})
    await supervisor.add(spec)
    await supervisor.start("main", make_config())
    tail = await supervisor.read_log_tail("main", 200)
    assert any("DEX stats" in line for line in tail)  # stdout
    assert any("INFO Version" in line for line in tail)  # stderr
    follow = supervisor.follow_log("main")
    async with asyncio.timeout(30):
        line = await anext(follow)
    assert line
    await follow.aclose()
    assert oct(spec.log_path.stat().st_mode & 0o777) == "0o600"


async def test_remove_stops_and_forgets(supervisor: Supervisor, make_spec: SpecFactory) -> None:
    """remove() stops the KDF and unregisters the instance."""
    await supervisor.add(make_spec())
    status = await supervisor.start("main", make_config())
    await supervisor.remove("main")
    assert supervisor.names() == []
    assert status.pid is not None
    assert kdf_children() == []


async def test_password_is_generated_when_missing(
    supervisor: Supervisor, make_spec: SpecFactory
) -> None:
    """A config without rpc_password gets a generated one that KDF accepts."""
    await supervisor.add(make_spec())
    config = make_config()
    config = msgspec.structs.replace(config, rpc_password=None)
    status = await supervisor.start("main", config)
    assert status.state is InstanceState.RUNNING
    stored = supervisor.stored_config("main").rpc_password
    assert stored is not None
    assert stored != RPC_PASSWORD


async def test_exit_detection_without_pidfd(
    supervisor: Supervisor, make_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where pidfd_open is unavailable (old kernels), a cheap poll still notices the exit and
    stop still escalates."""
    import errno

    def no_pidfd(pid: int, flags: int = 0) -> int:
        raise OSError(errno.ENOSYS, "pidfd_open not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    await supervisor.add(make_spec(health_interval_s=3600, log_check_interval_s=3600))
    events = supervisor.subscribe("main")
    first = await supervisor.start("main", make_config())
    assert first.pid is not None
    os.kill(first.pid, signal.SIGKILL)
    exited = await next_event(events, lambda e: e.kind is EventKind.EXITED)
    assert exited.exit is not None
    assert exited.exit.signal == "SIGKILL"
    await next_event(
        events, lambda e: e.kind is EventKind.STATE and e.state is InstanceState.RUNNING
    )
    stopped = await supervisor.stop("main")
    assert stopped.last_exit is not None
    assert stopped.last_exit.code == 0
    assert kdf_children() == []
    await events.aclose()
