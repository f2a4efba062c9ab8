"""Limits really in force on a running kdf-sim (``/proc/<pid>/limits``, cgroup files) and a
memory breach killing it with the reason recorded, for each mechanism this host offers."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kdf_remote.sim.harness import RunningSim, offline_config, sim_command
from kdf_remote.supervisor.resource_limits import (
    MEMORY_LIMIT_REASON,
    CgroupHost,
    LimitEnforcer,
    LimitsError,
    Mechanism,
    ResourceLimits,
    detect_mechanism,
    read_cgroup_host,
    systemd_is_pid1,
)

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
GIB = 1024 * MIB


def _proc_limits(pid: int) -> dict[str, str]:
    rows = Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]
    return {row[:26].strip(): row[26:47].strip() for row in rows}


def _spawn_sim(
    enforcer: LimitEnforcer, name: str, limits: ResourceLimits, workdir: Path, **env: str
) -> RunningSim:
    plan = enforcer.prepare(name, limits)
    config = workdir / "MM2.json"
    fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        import json

        json.dump(offline_config("Limits-Test-Pass-9!"), out)
    process = subprocess.Popen(
        plan.wrap(sim_command()),
        cwd=workdir,
        env={**os.environ, "HOME": str(workdir), "MM_CONF_PATH": str(config), **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=plan.preexec,  # noqa: PLW1509 (it only makes syscalls)
    )
    return RunningSim(process, workdir)


@pytest.fixture
def namespace() -> str:
    """A cgroup namespace of our own, so parallel runs never share cgroups."""
    return f"kdfr-test-{uuid.uuid4().hex[:8]}"


def _enforcer(mechanism: str, namespace: str) -> Iterator[LimitEnforcer]:
    try:
        enforcer = LimitEnforcer(mechanism, namespace=namespace, watchdog_interval=0.2)
    except LimitsError as exc:
        pytest.skip(f"{mechanism} is not available on this host: {exc}")
    try:
        yield enforcer
    finally:
        enforcer.close()


@pytest.fixture
def rlimit_enforcer(namespace: str) -> Iterator[LimitEnforcer]:
    """The rlimit + RSS watchdog mechanism (always available)."""
    yield from _enforcer("rlimit", namespace)


@pytest.fixture
def cgroup1_enforcer(namespace: str) -> Iterator[LimitEnforcer]:
    """The cgroup v1 mechanism (hybrid hosts such as this CI VM); skipped elsewhere."""
    yield from _enforcer("cgroup1", namespace)


def test_detection_matches_this_host() -> None:
    """Auto-detection names a mechanism and why each stronger one was skipped."""
    detection = detect_mechanism()
    skipped = dict(detection.skipped)
    order = [Mechanism.CGROUP2, Mechanism.SYSTEMD, Mechanism.CGROUP1, Mechanism.RLIMIT]
    assert list(skipped) == order[: order.index(detection.mechanism)]
    assert all(reason for reason in skipped.values())
    if not systemd_is_pid1() and Mechanism.SYSTEMD in skipped:
        assert skipped[Mechanism.SYSTEMD] == "systemd is not PID 1"


def test_rlimits_are_in_force_in_proc(rlimit_enforcer: LimitEnforcer, tmp_path: Path) -> None:
    """RLIMIT_AS, RLIMIT_NOFILE and RLIMIT_CORE=0 show in /proc/<pid>/limits of a running sim."""
    limits = ResourceLimits(memory_bytes=256 * MIB, open_files=512, cpu=1.0)
    with _spawn_sim(rlimit_enforcer, "main", limits, tmp_path) as sim:
        sim.wait_ready()
        record = rlimit_enforcer.attach("main", sim.pid)
        proc = _proc_limits(sim.pid)
        assert record.mechanism is Mechanism.RLIMIT
        assert record.memory_enforced and not record.cpu_enforced
        assert "cpu not enforced" in record.detail
        assert record.rlimit_as == 256 * MIB + GIB
        assert proc["Max address space"] == str(record.rlimit_as)
        assert proc["Max open files"] == "512"
        assert proc["Max core file size"] == "0"
        status, body = sim.rpc({"method": "version"})
        assert status == 200 and "result" in body  # type: ignore[operator]
    assert rlimit_enforcer.exit_cause("main") is None
    rlimit_enforcer.release("main")


def test_watchdog_kills_growing_sim_with_reason(
    rlimit_enforcer: LimitEnforcer, tmp_path: Path
) -> None:
    """A sim growing past its memory limit is SIGKILLed and the cause says memory_limit."""
    limits = ResourceLimits(memory_bytes=128 * MIB)
    with _spawn_sim(
        rlimit_enforcer, "w1", limits, tmp_path, KDF_SIM_GROW_MEMORY=str(64 * MIB)
    ) as sim:
        sim.wait_ready()
        rlimit_enforcer.attach("w1", sim.pid)
        returncode = sim.wait_exit(timeout=60)
    assert returncode == -9
    cause = rlimit_enforcer.exit_cause("w1")
    assert cause is not None and cause.reason == MEMORY_LIMIT_REASON
    assert "128.0 MiB" in cause.detail
    rlimit_enforcer.release("w1")


def test_cgroup1_limits_in_force_and_oom_recorded(
    cgroup1_enforcer: LimitEnforcer, tmp_path: Path
) -> None:
    """The sim sits in its own memory and cpu cgroups with the limits written there; growing
    past the limit gets it OOM-killed by the kernel and the cause says memory_limit."""
    host = read_cgroup_host()
    limits = ResourceLimits(memory_bytes=128 * MIB, cpu=0.5)
    with _spawn_sim(
        cgroup1_enforcer, "w2", limits, tmp_path, KDF_SIM_GROW_MEMORY=str(64 * MIB)
    ) as sim:
        record = cgroup1_enforcer.attach("w2", sim.pid)
        assert record.mechanism is Mechanism.CGROUP1 and record.cgroup is not None
        memory_dir = Path(record.cgroup)
        assert str(sim.pid) in (memory_dir / "cgroup.procs").read_text().split()
        assert (memory_dir / "memory.limit_in_bytes").read_text().strip() == str(128 * MIB)
        memory_line = next(
            line
            for line in Path(f"/proc/{sim.pid}/cgroup").read_text().splitlines()
            if "memory" in line.split(":")[1].split(",")
        )
        assert memory_line.endswith(f"/{memory_dir.parent.name}/kdf-w2")
        if record.cpu_enforced:
            cpu_dir = host.v1_dirs["cpu"] / memory_dir.parent.name / memory_dir.name
            assert (cpu_dir / "cpu.cfs_quota_us").read_text().strip() == "50000"
            assert str(sim.pid) in (cpu_dir / "cgroup.procs").read_text().split()
        returncode = sim.wait_exit(timeout=60)
    assert returncode == -9
    cause = cgroup1_enforcer.exit_cause("w2")
    assert cause is not None and cause.reason == MEMORY_LIMIT_REASON
    assert "OOM" in cause.detail
    cgroup1_enforcer.release("w2")
    assert not memory_dir.exists()


def test_cgroup2_file_protocol(tmp_path: Path) -> None:
    """Against a fake delegated cgroup: controllers enabled via a leaf, limits written, the
    preexec joins the instance cgroup, and a new oom_kill in memory.events is memory_limit."""
    root = tmp_path / "cg"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text("")
    (root / "cgroup.procs").write_text("4242\n")
    enforcer = LimitEnforcer("cgroup2", host=CgroupHost(v2_dir=root), namespace="kdfr-t")
    assert enforcer.mechanism is Mechanism.CGROUP2
    assert (root / "supervisor/cgroup.procs").read_text() == "4242"
    assert (root / "cgroup.subtree_control").read_text() == "+memory +cpu"
    instance = root / "kdfr-t/kdf-w1"
    instance.mkdir()
    for kernel_file in ("cgroup.procs", "memory.events"):  # the kernel creates these
        (instance / kernel_file).write_text("")
    plan = enforcer.prepare("w1", ResourceLimits(memory_bytes=256 * MIB, cpu=0.5))
    assert (instance / "memory.max").read_text() == str(256 * MIB)
    assert (instance / "cpu.max").read_text() == "50000 100000"
    assert plan.argv_prefix == ()
    assert plan.preexec is not None
    pid = os.fork()
    if pid == 0:  # the child runs the preexec exactly as between fork and exec
        try:
            plan.preexec()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert (instance / "cgroup.procs").read_text() == str(pid)
    enforcement = enforcer.attach("w1", pid)
    assert enforcement.cgroup == str(instance)
    assert enforcement.memory_enforced and enforcement.cpu_enforced
    assert enforcer.exit_cause("w1") is None
    (instance / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n")
    cause = enforcer.exit_cause("w1")
    assert cause is not None and cause.reason == MEMORY_LIMIT_REASON
    assert str(256 * MIB) in cause.detail


@pytest.mark.parametrize("mechanism", ["auto", "rlimit"])
def test_an_uncapped_instance_spawns_plainly_with_core_dumps_off(mechanism: str) -> None:
    """No memory/cpu cap: no pre-exec hook and no cgroup (the fast spawn path), core dumps off."""
    enforcer = LimitEnforcer(mechanism, namespace=f"kdf-remote-test-{uuid.uuid4().hex[:8]}")
    try:
        plan = enforcer.prepare("plain", ResourceLimits())
        assert plan.preexec is None and plan.argv_prefix == ()
        child = subprocess.Popen(["sleep", "30"])
        try:
            enforcement = enforcer.attach("plain", child.pid)
            assert not enforcement.memory_enforced and not enforcement.cpu_enforced
            assert enforcement.cgroup is None
            limits = Path(f"/proc/{child.pid}/limits").read_text()
            core = next(line for line in limits.splitlines() if line.startswith("Max core"))
            assert core.split()[4:6] == ["0", "0"]  # "Max core file size  0  0  bytes"
            assert enforcer.exit_cause("plain") is None
        finally:
            child.kill()
            child.wait()
        enforcer.release("plain")
    finally:
        enforcer.close()
