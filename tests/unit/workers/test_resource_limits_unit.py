"""Resource limits without processes: parsing, admission, capacity, mechanism detection and the
cgroup v2 file protocol against a fake cgroup directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdf_remote.supervisor.resource_limits import (
    CgroupHost,
    LimitEnforcer,
    LimitsError,
    Mechanism,
    PortRange,
    ResourceLimits,
    admit,
    capacity,
    parse_port_range,
    parse_size,
    read_cgroup_host,
    systemd_run_argv,
)

pytestmark = pytest.mark.unit

MIB = 1024 * 1024
GIB = 1024 * MIB


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512M", 512 * MIB),
        ("8G", 8 * GIB),
        ("1.5G", int(1.5 * GIB)),
        ("4096", 4096),
        ("64k", 65536),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    """Sizes take K/M/G/T binary suffixes, as the daemon config documents."""
    assert parse_size(text) == expected


def test_parse_errors_name_field_and_value() -> None:
    """Bad sizes and port ranges are refused with the field name and the value."""
    with pytest.raises(LimitsError, match=r"memory_per_worker: '12 parsecs'"):
        parse_size("12 parsecs", field_name="memory_per_worker")
    with pytest.raises(LimitsError, match=r"worker_ports: '9010-9000'"):
        parse_port_range("9010-9000")
    assert parse_port_range("9000-9002").ports() == range(9000, 9003)
    assert parse_port_range("9005") == PortRange(9005, 9005)


def test_admission_says_what_is_left() -> None:
    """A worker fits while memory is left; a refusal names requested, left and the budget."""
    existing = [ResourceLimits(memory_bytes=512 * MIB)] * 3 + [ResourceLimits()]
    ok = admit(ResourceLimits(memory_bytes=512 * MIB), existing, 2 * GIB)
    assert ok.ok and "0 B" in ok.message
    refused = admit(ResourceLimits(memory_bytes=1 * GIB), existing, 2 * GIB)
    assert not refused.ok
    assert "requested 1.0 GiB" in refused.message
    assert "only 512.0 MiB" in refused.message
    assert "max_total_memory 2.0 GiB" in refused.message
    assert not admit(ResourceLimits(), existing, 2 * GIB).ok


def test_capacity_counts_ports_memory_and_cpu() -> None:
    """Assigned and unbindable ports are not free; reserved memory and cores are subtracted."""
    existing = [ResourceLimits(memory_bytes=512 * MIB, cpu=1.0), ResourceLimits(cpu=0.5)]
    cap = capacity(
        PortRange(9000, 9004),
        used_ports=[9001],
        existing=existing,
        max_total_memory=2 * GIB,
        cpu_total=2.0,
        probe=lambda port: port != 9003,
        mechanism=Mechanism.CGROUP1,
    )
    assert cap.free_ports == (9000, 9002, 9004)
    assert (cap.memory_reserved, cap.memory_left) == (512 * MIB, 1536 * MIB)
    assert (cap.cpu_reserved, cap.cpu_left) == (1.5, 0.5)
    over = capacity(PortRange(9000, 9000), [], existing * 2, 512 * MIB, cpu_total=2, probe=None)
    assert over.memory_left == 0 and over.cpu_left == 0


def test_systemd_scope_argv() -> None:
    """The systemd prefix asks for a scope with MemoryMax, no swap and a CPU quota."""
    argv = systemd_run_argv("kdf-remote-w1-ab.scope", ResourceLimits(memory_bytes=GIB, cpu=1.5))
    assert argv == [
        "systemd-run", "--scope", "--quiet", "--unit=kdf-remote-w1-ab.scope",
        "-p", f"MemoryMax={GIB}", "-p", "MemorySwapMax=0", "-p", "CPUQuota=150%", "--",
    ]  # fmt: skip


def test_read_cgroup_host_of_a_hybrid_layout(tmp_path: Path) -> None:
    """/proc/self/{cgroup,mountinfo} of a hybrid host map to the v1 memory/cpu dirs."""
    (tmp_path / "self").mkdir()
    (tmp_path / "self/cgroup").write_text("4:memory:/a/b\n1:cpu,cpuacct:/\n0::/\n")
    (tmp_path / "self/mountinfo").write_text(
        "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n"
    )
    host = read_cgroup_host(tmp_path)
    assert host.v1_dirs == {
        "memory": Path("/sys/fs/cgroup/memory/a/b"),
        "cpu": Path("/sys/fs/cgroup/cpu,cpuacct"),
    }
    assert host.v2_dir == Path("/sys/fs/cgroup/unified")


def test_forcing_an_unavailable_mechanism_is_refused(tmp_path: Path) -> None:
    """Asking for cgroup2 where it lacks controllers names the problem; bad names are refused."""
    (tmp_path / "cgroup.controllers").write_text("hugetlb\n")
    with pytest.raises(LimitsError, match="lacks the cpu, memory controller"):
        LimitEnforcer("cgroup2", host=CgroupHost(v2_dir=tmp_path))
    with pytest.raises(LimitsError, match="one of auto, cgroup2"):
        LimitEnforcer("docker", host=CgroupHost(v2_dir=None))
