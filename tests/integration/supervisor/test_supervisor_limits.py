"""Resource limits through the supervisor's one mechanism (the LimitEnforcer), the ``updating``
state of a rolling restart, and KDF run as an unprivileged user."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest

from kdf_remote.supervisor import (
    EventKind,
    InstanceState,
    InvalidState,
    ResourceLimits,
    RestartPolicy,
    Supervisor,
    Timeouts,
)
from kdf_remote.supervisor.resource_limits import MEMORY_LIMIT_REASON, LimitEnforcer, Mechanism

from .conftest import SpecFactory, kdf_children, make_config, next_event, wait_for

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


@pytest.fixture
async def rlimit_supervisor() -> AsyncIterator[Supervisor]:
    """A Supervisor forced onto the rlimit + RSS watchdog mechanism (always available)."""
    enforcer = LimitEnforcer(
        Mechanism.RLIMIT, namespace=f"kdfr-test-{uuid.uuid4().hex[:8]}", watchdog_interval=0.1
    )
    sup = Supervisor(enforcer=enforcer)
    try:
        yield sup
    finally:
        await sup.close(stop_instances=True)
        enforcer.close()
        assert kdf_children() == []


def _supplementary_groups(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Groups:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no Groups line in /proc/{pid}/status")


def _proc_limit(pid: int, name: str) -> str:
    for row in Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]:
        if row.startswith(name):
            return row[26:47].strip()
    raise AssertionError(f"{name} not in /proc/{pid}/limits")


async def _breach_is_a_crash(sup: Supervisor, make_spec: SpecFactory) -> None:
    spec = make_spec(
        limits=ResourceLimits(memory_bytes=96 * MIB, open_files=512),
        env={"KDF_SIM_GROW_MEMORY": str(64 * MIB)},
    )
    await sup.add(spec)
    events = sup.subscribe("main")
    status = await sup.start("main", make_config())
    assert status.pid is not None
    assert _proc_limit(status.pid, "Max open files") == "512"
    assert _proc_limit(status.pid, "Max core file size") == "0"
    limits = status.limits
    assert limits is not None and limits.in_force and limits.memory_enforced
    assert limits.mechanism is sup.limit_mechanism
    assert limits.memory_bytes == 96 * MIB and limits.open_files == 512
    exited = await next_event(events, lambda e: e.kind is EventKind.EXITED)
    assert exited.exit is not None
    assert exited.exit.reason == MEMORY_LIMIT_REASON
    assert exited.exit.signal == "SIGKILL"
    assert exited.exit.detail is not None
    scheduled = await next_event(events, lambda e: e.kind is EventKind.RESTART_SCHEDULED)
    assert scheduled.state is InstanceState.BACKOFF
    await events.aclose()
    last_exit = sup.status("main").last_exit
    assert last_exit is not None and last_exit.reason == MEMORY_LIMIT_REASON


async def test_memory_breach_under_detected_mechanism_counts_as_a_crash(
    supervisor: Supervisor, make_spec: SpecFactory
) -> None:
    """With the host's strongest mechanism, a KDF growing past its memory limit is killed,
    recorded as ``memory_limit`` and scheduled for a restart like a crash; rlimits hold."""
    await _breach_is_a_crash(supervisor, make_spec)


async def test_memory_breach_under_rlimit_watchdog_counts_as_a_crash(
    rlimit_supervisor: Supervisor, make_spec: SpecFactory
) -> None:
    """Under the rlimit mechanism the RSS watchdog kills the KDF, with the same outcome."""
    assert rlimit_supervisor.limit_mechanism is Mechanism.RLIMIT
    await _breach_is_a_crash(rlimit_supervisor, make_spec)


async def test_status_says_which_mechanism_and_cgroup_hold_the_kdf(
    supervisor: Supervisor, make_spec: SpecFactory
) -> None:
    """Status names the mechanism; under a cgroup mechanism the KDF pid is in that cgroup with
    the memory limit written there; after remove the cgroup is gone."""
    spec = make_spec(limits=ResourceLimits(memory_bytes=256 * MIB, cpu=0.5))
    before = (await supervisor.add(spec)).limits
    assert before is not None and not before.in_force
    assert before.mechanism is supervisor.limit_mechanism
    status = await supervisor.start("main", make_config())
    limits = status.limits
    assert limits is not None and limits.in_force and status.pid is not None
    if limits.mechanism is Mechanism.CGROUP1:
        assert limits.cgroup is not None
        cgroup = Path(limits.cgroup)
        assert str(status.pid) in (cgroup / "cgroup.procs").read_text().split()
        assert (cgroup / "memory.limit_in_bytes").read_text().strip() == str(256 * MIB)
    elif limits.mechanism is Mechanism.CGROUP2:
        assert limits.cgroup is not None
        cgroup = Path(limits.cgroup)
        assert str(status.pid) in (cgroup / "cgroup.procs").read_text().split()
        assert (cgroup / "memory.max").read_text().strip() == str(256 * MIB)
    else:
        pytest.skip(f"no cgroup on this host ({limits.mechanism}); covered by the rlimit tests")
    await supervisor.remove("main")
    assert not cgroup.exists()


async def test_readoption_attaches_limits_again(make_spec: SpecFactory) -> None:
    """A re-adopted KDF is attached to its limits again: status shows them in force."""
    spec = make_spec(limits=ResourceLimits(memory_bytes=256 * MIB, open_files=600))
    first = Supervisor()
    await first.add(spec)
    started = await first.start("main", make_config())
    await first.close()
    second = Supervisor()
    try:
        await second.add(spec)
        await wait_for(lambda: second.status("main").state is InstanceState.RUNNING)
        status = second.status("main")
        assert status.pid == started.pid
        assert status.limits is not None and status.limits.in_force
        assert status.limits.open_files == 600
    finally:
        await second.close(stop_instances=True)
    assert kdf_children() == []


async def test_restart_for_an_update_goes_through_updating(
    supervisor: Supervisor, make_spec: SpecFactory
) -> None:
    """restart(updating=True) shows ``updating`` from the stop of the old KDF until the new one
    is spawned, then starting and running with a new pid."""
    await supervisor.add(make_spec())
    first = await supervisor.start("main", make_config())
    events = supervisor.subscribe("main")
    restarted = await supervisor.restart("main", updating=True)
    assert restarted.state is InstanceState.RUNNING and restarted.pid != first.pid
    states: list[InstanceState] = []
    while not states or states[-1] is not InstanceState.RUNNING:
        event = await next_event(events, lambda e: e.kind is EventKind.STATE)
        states.append(event.state)
    await events.aclose()
    assert states == [InstanceState.UPDATING, InstanceState.STARTING, InstanceState.RUNNING]


async def test_stop_interrupts_an_update_restart(
    supervisor: Supervisor, make_spec: SpecFactory
) -> None:
    """A stop while an update's restart is still stopping the old KDF (which ignores the stop
    RPC and SIGINT) wins: updating -> stopping -> stopped, and no KDF is left."""
    slow_stop = Timeouts(start_s=20.0, stop_rpc_s=2.0, sigint_s=2.0, sigkill_s=10.0, probe_s=5.0)
    env = {"KDF_SIM_IGNORE_STOP": "1", "KDF_SIM_IGNORE_SIGINT": "1"}
    await supervisor.add(make_spec(env=env, timeouts=slow_stop))
    await supervisor.start("main", make_config())
    restart = asyncio.ensure_future(supervisor.restart("main", updating=True))
    await wait_for(lambda: supervisor.status("main").state is InstanceState.UPDATING)
    stopped = await supervisor.stop("main")
    assert stopped.state is InstanceState.STOPPED and stopped.pid is None
    with pytest.raises(InvalidState, match="interrupted by a stop"):
        await restart
    assert kdf_children() == []


# ---------------------------------------------------------------------------- run as a user

_NOBODY = "nobody"


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user can traverse (pytest's tmp_path is 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix="kdfr-runas-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def _fake_kdf(path: Path) -> Path:
    # kdf-sim runs on an interpreter under /root (0700): a shell stand-in proves what matters
    # here (identity, groups, reading its config, writing its data dir) and never gets ready.
    path.write_text(
        '#!/bin/sh\ncat "$MM_CONF_PATH" > /dev/null && touch read-config-ok\nexec sleep 60\n'
    )
    path.chmod(0o755)
    return path


async def test_kdf_runs_as_the_spec_user_without_extra_groups(
    supervisor: Supervisor, make_spec: SpecFactory, open_dir: Path
) -> None:
    """With ``user`` set and the supervisor root, KDF runs with that uid/gid and no
    supplementary groups, reads its 0600 config and owns its data directory."""
    if os.geteuid() != 0:
        pytest.skip("switching users needs the supervisor to run as root")
    try:
        nobody = pwd.getpwnam(_NOBODY)
    except KeyError:
        pytest.skip(f"no {_NOBODY!r} user on this host")
    spec = make_spec(
        binary_path=_fake_kdf(open_dir / "kdf"),
        data_dir=open_dir / "data",
        run_dir=open_dir / "run",
        user=_NOBODY,
        restart=RestartPolicy(auto_restart=False),
        limits=ResourceLimits(open_files=256),
    )
    assert spec.run_as is not None and spec.run_as.uid == nobody.pw_uid
    await supervisor.add(spec)
    start = asyncio.ensure_future(supervisor.start("main", make_config()))
    await wait_for(lambda: supervisor.status("main").pid is not None)
    pid = supervisor.status("main").pid
    assert pid is not None
    await wait_for((open_dir / "data" / "read-config-ok").exists)
    process = psutil.Process(pid)
    assert process.uids().real == process.uids().effective == nobody.pw_uid
    assert process.gids().real == process.gids().effective == nobody.pw_gid
    assert _supplementary_groups(pid) == ""
    assert _proc_limit(pid, "Max open files") == "256"  # limits applied before the switch
    assert (open_dir / "data").stat().st_uid == nobody.pw_uid
    assert (open_dir / "run" / "config.json").stat().st_uid == 0  # the stored config stays ours
    stopped = await supervisor.stop("main")
    assert stopped.state is InstanceState.STOPPED
    with pytest.raises(InvalidState, match="interrupted by a stop"):
        await start
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_unknown_run_as_user_is_rejected(make_spec: SpecFactory) -> None:
    """An unknown user or group is refused at construction, naming the field."""
    with pytest.raises(ValueError, match="user: got 'no-such-user-kdfr'"):
        make_spec(user="no-such-user-kdfr")
    with pytest.raises(ValueError, match="group: got 'no-such-group-kdfr'"):
        make_spec(user=_NOBODY, group="no-such-group-kdfr")
    with pytest.raises(ValueError, match=r"group: .* without a user"):
        make_spec(group=0)
