"""Per-instance resource limits: the limit model, its enforcement, admission and capacity.

Enforcement picks the strongest mechanism this host offers and says which one is in force:

* ``cgroup2``: a delegated cgroup v2 subtree. One child cgroup per instance with ``memory.max``,
  ``memory.swap.max`` and ``cpu.max``; the kernel OOM-kills on breach and ``memory.events``
  counts it.
* ``systemd``: a transient scope (``systemd-run --scope``) with ``MemoryMax``/``CPUQuota`` when
  systemd is PID 1 and we may ask it for units (root). The scope also outlives a daemon restart.
* ``cgroup1``: the v1 ``memory`` and ``cpu`` hierarchies of a hybrid host
  (``memory.limit_in_bytes``, ``cpu.cfs_quota_us``), OOM kills counted in ``memory.oom_control``.
* ``rlimit``: ``RLIMIT_AS`` as a backstop plus an RSS watchdog thread that SIGKILLs an instance
  whose resident memory exceeds its limit. CPU is not enforced under this mechanism and the
  enforcement record says so.

The limits themselves are :class:`kdf_remote.supervisor.spec.ResourceLimits` (``memory_bytes``,
``cpu`` cores, ``open_files``), the model ``InstanceSpec`` carries; it is re-exported here.

Whatever the mechanism, a breach is reported by :meth:`LimitEnforcer.exit_cause` with the reason
``memory_limit`` so the supervisor can record it and count it as a crash.

The supervisor's spawn uses it in four steps::

    plan = enforcer.prepare(name, limits)          # before spawn
    proc = await asyncio.create_subprocess_exec(*plan.wrap(argv), preexec_fn=plan.preexec, ...)
    enforcement = enforcer.attach(name, proc.pid)  # shown in status as ``limits``
    ...                                            # after the process exited:
    cause = enforcer.exit_cause(name)              # ExitCause("memory_limit", ...) or None
    enforcer.release(name)
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import re
import resource
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import psutil

from kdf_remote.supervisor.spec import ResourceLimits

__all__ = [
    "MEMORY_LIMIT_REASON",
    "Admission",
    "Capacity",
    "CgroupHost",
    "Detection",
    "ExitCause",
    "LaunchPlan",
    "LimitEnforcement",
    "LimitEnforcer",
    "LimitsError",
    "Mechanism",
    "PortRange",
    "ResourceLimits",
    "RssWatchdog",
    "admit",
    "capacity",
    "detect_mechanism",
    "format_size",
    "parse_port_range",
    "parse_size",
    "port_is_free",
    "read_cgroup_host",
    "systemd_is_pid1",
    "systemd_run_argv",
]

MEMORY_LIMIT_REASON = "memory_limit"
"""Exit reason recorded when an instance was killed for exceeding its memory limit."""

_CPU_PERIOD_US = 100_000
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class LimitsError(ValueError):
    """A limit value or a requested mechanism is invalid; names the field and the value."""

    def __init__(self, field_name: str, value: object, expected: str) -> None:
        super().__init__(f"{field_name}: {value!r} is invalid, expected {expected}")
        self.field = field_name
        self.value = value
        self.expected = expected


class Mechanism(enum.StrEnum):
    """How limits are enforced on this host."""

    CGROUP2 = "cgroup2"
    SYSTEMD = "systemd"
    CGROUP1 = "cgroup1"
    RLIMIT = "rlimit"


class LimitEnforcement(msgspec.Struct, frozen=True):
    """What is really in force for one running instance (shown beside the configured limits)."""

    mechanism: Mechanism
    memory_bytes: int | None
    cpu: float | None
    memory_enforced: bool
    cpu_enforced: bool
    detail: str
    cgroup: str | None = None
    unit: str | None = None
    rlimit_as: int | None = None


class ExitCause(msgspec.Struct, frozen=True):
    """Why the enforcement layer believes an instance died."""

    reason: str
    detail: str


# --------------------------------------------------------------------------- parsing helpers


def parse_size(text: str | int, *, field_name: str = "size") -> int:
    """Parse ``512M``, ``8G``, ``1.5G`` or a plain byte count (binary units, as systemd does)."""
    if isinstance(text, int):
        if text < 0:
            raise LimitsError(field_name, text, "a non-negative size")
        return text
    match = _SIZE_RE.match(text)
    if match is None:
        raise LimitsError(field_name, text, "a size like 512M, 8G or a byte count")
    number, unit = match.groups()
    return int(float(number) * _SIZE_UNITS[unit.upper()])


def format_size(n: int) -> str:
    """Render a byte count for humans (``512.0 MiB``)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{value:.1f} TiB"


@dataclass(frozen=True)
class PortRange:
    """An inclusive TCP port range such as ``9000-9010``."""

    first: int
    last: int

    def __post_init__(self) -> None:
        if not (1 <= self.first <= self.last <= 65535):
            raise LimitsError("port_range", f"{self.first}-{self.last}", "A-B with 1 <= A <= B")

    def ports(self) -> range:
        """Every port of the range, in order."""
        return range(self.first, self.last + 1)


def parse_port_range(text: str, *, field_name: str = "worker_ports") -> PortRange:
    """Parse ``A-B`` (or a single port) into a :class:`PortRange`."""
    parts = text.strip().split("-")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise LimitsError(field_name, text, "a port range A-B") from None
    if len(numbers) == 1:
        numbers *= 2
    if len(numbers) != 2:
        raise LimitsError(field_name, text, "a port range A-B")
    try:
        return PortRange(numbers[0], numbers[1])
    except LimitsError:
        raise LimitsError(field_name, text, "A-B with 1 <= A <= B <= 65535") from None


# --------------------------------------------------------------------------- admission, capacity


@dataclass(frozen=True)
class Admission:
    """The answer to "may this instance be added?"; ``message`` says what is left when refused."""

    ok: bool
    message: str


def _reserved_memory(existing: Iterable[ResourceLimits]) -> int:
    # An instance without a memory limit (typically `main`) is outside the worker budget.
    return sum(limits.memory_bytes or 0 for limits in existing)


def admit(
    requested: ResourceLimits, existing: Sequence[ResourceLimits], max_total_memory: int
) -> Admission:
    """Decide whether an instance with ``requested`` limits fits in ``max_total_memory``.

    Only memory is admitted against a budget: CPU limits are quotas, so over-committing them
    slows instances down but never kills them; :func:`capacity` reports what is left.
    """
    if requested.memory_bytes is None:
        return Admission(
            False,
            "refused: a memory limit is required when max_total_memory is "
            f"{format_size(max_total_memory)}",
        )
    used = _reserved_memory(existing)
    left = max(max_total_memory - used, 0)
    if requested.memory_bytes > left:
        return Admission(
            False,
            f"refused: requested {format_size(requested.memory_bytes)} of memory but only "
            f"{format_size(left)} of max_total_memory {format_size(max_total_memory)} is left "
            f"({len(existing)} instances reserve {format_size(used)})",
        )
    remaining = left - requested.memory_bytes
    return Admission(True, f"admitted: {format_size(remaining)} of memory left afterwards")


class Capacity(msgspec.Struct, frozen=True):
    """What is left for new workers (the ``GET /capacity`` body)."""

    free_ports: tuple[int, ...]
    memory_total: int
    memory_reserved: int
    memory_left: int
    cpu_total: float
    cpu_reserved: float
    cpu_left: float
    mechanism: Mechanism | None = None


def port_is_free(port: int, host: str = "0.0.0.0") -> bool:
    """True when a listener could bind ``host:port`` now (KDF binds with SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def capacity(
    port_range: PortRange,
    used_ports: Iterable[int],
    existing: Sequence[ResourceLimits],
    max_total_memory: int,
    *,
    cpu_total: float | None = None,
    probe: Callable[[int], bool] | None = port_is_free,
    mechanism: Mechanism | None = None,
) -> Capacity:
    """What is left: ports of ``port_range`` not assigned (and bindable, with ``probe``),
    memory of the budget and CPU cores not reserved by ``existing``."""
    taken = set(used_ports)
    free = tuple(p for p in port_range.ports() if p not in taken and (probe is None or probe(p)))
    cores = float(cpu_total if cpu_total is not None else (os.cpu_count() or 1))
    cpu_reserved = sum(limits.cpu or 0.0 for limits in existing)
    memory_reserved = _reserved_memory(existing)
    return Capacity(
        free_ports=free,
        memory_total=max_total_memory,
        memory_reserved=memory_reserved,
        memory_left=max(max_total_memory - memory_reserved, 0),
        cpu_total=cores,
        cpu_reserved=cpu_reserved,
        cpu_left=max(cores - cpu_reserved, 0.0),
        mechanism=mechanism,
    )


# --------------------------------------------------------------------------- launch plan


@dataclass(frozen=True)
class LaunchPlan:
    """How to spawn an instance so its limits apply from its first instruction."""

    argv_prefix: tuple[str, ...] = ()
    """Prepended to the KDF argv (``systemd-run ... --`` for the systemd mechanism)."""
    preexec: Callable[[], None] | None = None
    """Run in the child between fork and exec (``preexec_fn``): rlimits and joining the cgroup."""

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """The argv to execute."""
        return [*self.argv_prefix, *argv]


def _preexec(rlimits: Sequence[tuple[int, int]], cgroup_procs: Sequence[str]) -> Callable[[], None]:
    # Runs in the forked child: only syscalls, no Python-level locks, no logging.
    def apply() -> None:
        for which, value in rlimits:
            resource.setrlimit(which, (value, value))
        pid = str(os.getpid()).encode()
        for path in cgroup_procs:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)

    return apply


def _base_rlimits(limits: ResourceLimits) -> list[tuple[int, int]]:
    # No core dumps ever: a KDF core file holds the wallet passphrase and keys in clear.
    rlimits = [(resource.RLIMIT_CORE, 0)]
    if limits.open_files is not None:
        rlimits.append((resource.RLIMIT_NOFILE, limits.open_files))
    return rlimits


def _check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise LimitsError(
            "name", name, "1-64 characters of [A-Za-z0-9_.-], not starting with . or -"
        )
    return name


# --------------------------------------------------------------------------- RSS watchdog


@dataclass
class _Watched:
    process: psutil.Process
    limit: int
    breach: ExitCause | None = None


class RssWatchdog:
    """One thread that samples the RSS of watched processes and SIGKILLs the ones over limit.

    The RSS of a process includes its children (a wrapper that forks instead of exec'ing still
    counts). A process is identified by pid and create time (psutil), so a recycled pid is never
    signalled.
    """

    def __init__(
        self,
        interval: float = 0.5,
        on_breach: Callable[[str, ExitCause], None] | None = None,
    ) -> None:
        if interval <= 0:
            raise LimitsError("watchdog_interval", interval, "a positive number of seconds")
        self._interval = interval
        self._on_breach = on_breach
        self._watched: dict[str, _Watched] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, name: str, pid: int, limit: int) -> None:
        """Start watching ``pid`` under ``name`` with a limit of ``limit`` resident bytes.

        A process that is already gone is not watched (its exit is being reported anyway).
        """
        try:
            process = psutil.Process(pid)
        except psutil.NoSuchProcess:
            return
        with self._lock:
            self._watched[name] = _Watched(process, limit)
            if self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._run, name="kdf-rss-watchdog", daemon=True
                )
                self._thread.start()

    def unwatch(self, name: str) -> ExitCause | None:
        """Stop watching ``name``; returns the breach recorded for it, if any."""
        with self._lock:
            watched = self._watched.pop(name, None)
        return watched.breach if watched else None

    def breach(self, name: str) -> ExitCause | None:
        """The breach recorded for ``name`` (None when it stayed under its limit)."""
        with self._lock:
            watched = self._watched.get(name)
            return watched.breach if watched else None

    def stop(self) -> None:
        """Stop the thread (watched processes are left alone)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
        self._thread = None

    def sample_once(self) -> None:
        """One pass over every watched process (the thread calls this each interval)."""
        with self._lock:
            items = [(n, w) for n, w in self._watched.items() if w.breach is None]
        for name, watched in items:
            rss = _tree_rss(watched.process)
            if rss is None or rss <= watched.limit:
                continue
            cause = ExitCause(
                MEMORY_LIMIT_REASON,
                f"resident memory {format_size(rss)} exceeded the limit "
                f"{format_size(watched.limit)} (rss watchdog, SIGKILL)",
            )
            with self._lock:
                watched.breach = cause
            _kill_tree(watched.process)
            if self._on_breach is not None:
                self._on_breach(name, cause)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample_once()


def _tree_rss(process: psutil.Process) -> int | None:
    try:
        if not process.is_running():
            return None
        total = int(process.memory_info().rss)
        for child in process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += int(child.memory_info().rss)
        return total
    except psutil.Error:
        return None


def _kill_tree(process: psutil.Process) -> None:
    try:
        children = process.children(recursive=True)
    except psutil.Error:
        children = []
    # psutil re-checks pid + create time before signalling, so a recycled pid is never hit.
    for victim in [process, *children]:
        with contextlib.suppress(psutil.Error):
            victim.kill()


# --------------------------------------------------------------------------- host detection


@dataclass(frozen=True)
class CgroupHost:
    """Where this process sits in the cgroup hierarchies (from /proc/self/{cgroup,mountinfo})."""

    v2_dir: Path | None
    v1_dirs: dict[str, Path] = field(default_factory=dict)
    """Controller name (``memory``, ``cpu``) to this process's own cgroup directory."""


def read_cgroup_host(proc: Path = Path("/proc")) -> CgroupHost:
    """Locate this process's own cgroup directories (v2 and the v1 ``memory``/``cpu`` ones)."""
    mounts = _cgroup_mounts((proc / "self/mountinfo").read_text())
    v2_dir: Path | None = None
    v1_dirs: dict[str, Path] = {}
    for line in (proc / "self/cgroup").read_text().splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if not hierarchy:
            continue
        if controllers == "":
            mount = mounts.get("cgroup2")
            if mount is not None:
                v2_dir = _join_cgroup(mount, path)
            continue
        for controller in controllers.split(","):
            mount = mounts.get(controller)
            if mount is not None and controller in ("memory", "cpu"):
                v1_dirs[controller] = _join_cgroup(mount, path)
    return CgroupHost(v2_dir, v1_dirs)


def _join_cgroup(mount: tuple[Path, str], path: str) -> Path:
    mountpoint, root = mount
    # Inside a cgroup namespace the mount root is not "/": our path is relative to it.
    if root != "/" and path.startswith(root):
        path = path[len(root) :]
    return mountpoint / path.lstrip("/")


def _cgroup_mounts(mountinfo: str) -> dict[str, tuple[Path, str]]:
    mounts: dict[str, tuple[Path, str]] = {}
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        root, mountpoint, fstype = fields[3], Path(fields[4]), tail[0]
        if fstype == "cgroup2":
            mounts.setdefault("cgroup2", (mountpoint, root))
        elif fstype == "cgroup":
            for option in tail[2].split(","):
                mounts.setdefault(option, (mountpoint, root))
    return mounts


def _dir_is_writable(path: Path) -> bool:
    # os.access lies for root on a read-only mount; creating a probe child is the real test.
    probe = path / f".kdf-remote-probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
    except OSError:
        return False
    with contextlib.suppress(OSError):
        probe.rmdir()
    return True


def _read_words(path: Path) -> set[str]:
    try:
        return set(path.read_text().split())
    except OSError:
        return set()


def _is_delegated(path: Path) -> bool:
    # systemd marks a Delegate=yes cgroup with this xattr (v251+); a non-root owner means the
    # same thing on older versions. Writing into a non-delegated systemd cgroup breaks its rules.
    for attr in ("trusted.delegate", "user.delegate"):
        with contextlib.suppress(OSError):
            if os.getxattr(path, attr).strip() == b"1":
                return True
    try:
        return path.stat().st_uid == os.geteuid() != 0
    except OSError:
        return False


def systemd_is_pid1(run_dir: Path = Path("/run/systemd/system")) -> bool:
    """sd_booted(): systemd is the init system of this host."""
    return run_dir.is_dir()


def _cgroup2_usable(v2_dir: Path | None) -> str | None:
    if v2_dir is None:
        return "no cgroup v2 hierarchy is mounted"
    controllers = _read_words(v2_dir / "cgroup.controllers")
    missing = {"memory", "cpu"} - controllers
    if missing:
        return f"{v2_dir} lacks the {', '.join(sorted(missing))} controller(s)"
    if not _dir_is_writable(v2_dir):
        return f"{v2_dir} is not writable"
    return None


def _cgroup1_usable(v1_dirs: dict[str, Path]) -> str | None:
    memory = v1_dirs.get("memory")
    if memory is None:
        return "no cgroup v1 memory hierarchy is mounted"
    if not _dir_is_writable(memory):
        return f"{memory} is not writable"
    return None


def _systemd_usable() -> str | None:
    if not systemd_is_pid1():
        return "systemd is not PID 1"
    if shutil.which("systemd-run") is None:
        return "systemd-run is not installed"
    if os.geteuid() != 0:
        return "transient system units need root"
    return None


# --------------------------------------------------------------------------- backends


class _Backend:
    """One enforcement mechanism. Subclasses implement the four steps of a spawn."""

    mechanism: Mechanism

    def rlimits(self, limits: ResourceLimits) -> list[tuple[int, int]]:
        """The rlimits this mechanism sets on the instance."""
        return _base_rlimits(limits)

    def prepare(self, name: str, limits: ResourceLimits) -> LaunchPlan:
        raise NotImplementedError

    def attach(self, name: str, pid: int, limits: ResourceLimits) -> LimitEnforcement:
        raise NotImplementedError

    def exit_cause(self, name: str) -> ExitCause | None:
        raise NotImplementedError

    def release(self, name: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Free what the backend holds for the whole enforcer."""


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def _join(cgroup: Path, pid: int) -> None:
    # The kernel answers ESRCH for a pid that already exited: nothing left to place.
    if pid not in _pids_of(cgroup):
        with contextlib.suppress(ProcessLookupError):
            _write(cgroup / "cgroup.procs", str(pid))


def _read_counter(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == key:
                return int(parts[1])
    except OSError:
        pass
    return 0


def _pids_of(cgroup: Path) -> set[int]:
    try:
        return {int(p) for p in (cgroup / "cgroup.procs").read_text().split()}
    except OSError:
        return set()


def _remove_cgroup(path: Path, timeout: float = 5.0) -> None:
    # The kernel frees a cgroup a little after its last process is reaped: retry on EBUSY.
    deadline = time.monotonic() + timeout
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class _Cgroup2(_Backend):
    mechanism = Mechanism.CGROUP2

    def __init__(self, root: Path, namespace: str) -> None:
        self._root = root
        self._parent = root / namespace
        self._baseline: dict[str, int] = {}
        self._enable_controllers()

    def _enable_controllers(self) -> None:
        # v2's "no internal processes" rule: a cgroup that hands controllers to children holds no
        # process itself, so our own processes move to a `supervisor` leaf first.
        wanted = {"memory", "cpu"}
        if not wanted <= _read_words(self._root / "cgroup.subtree_control"):
            leaf = self._root / "supervisor"
            leaf.mkdir(exist_ok=True)
            for pid in _pids_of(self._root):
                with contextlib.suppress(ProcessLookupError, OSError):
                    _write(leaf / "cgroup.procs", str(pid))
            _write(self._root / "cgroup.subtree_control", "+memory +cpu")
        self._parent.mkdir(exist_ok=True)
        if not wanted <= _read_words(self._parent / "cgroup.subtree_control"):
            _write(self._parent / "cgroup.subtree_control", "+memory +cpu")

    def _path(self, name: str) -> Path:
        return self._parent / f"kdf-{name}"

    def prepare(self, name: str, limits: ResourceLimits) -> LaunchPlan:
        path = self._path(name)
        path.mkdir(exist_ok=True)
        memory = limits.memory_bytes
        _write(path / "memory.max", str(memory) if memory is not None else "max")
        if memory is not None and (path / "memory.swap.max").exists():
            _write(path / "memory.swap.max", "0")
        if (path / "memory.oom.group").exists():
            _write(path / "memory.oom.group", "1")
        quota = "max" if limits.cpu is None else str(int(limits.cpu * _CPU_PERIOD_US))
        _write(path / "cpu.max", f"{quota} {_CPU_PERIOD_US}")
        self._baseline[name] = _read_counter(path / "memory.events", "oom_kill")
        return LaunchPlan(preexec=_preexec(self.rlimits(limits), [str(path / "cgroup.procs")]))

    def attach(self, name: str, pid: int, limits: ResourceLimits) -> LimitEnforcement:
        path = self._path(name)
        _join(path, pid)
        return LimitEnforcement(
            mechanism=self.mechanism,
            memory_bytes=limits.memory_bytes,
            cpu=limits.cpu,
            memory_enforced=limits.memory_bytes is not None,
            cpu_enforced=limits.cpu is not None,
            detail=f"cgroup v2 memory.max / cpu.max in {path}",
            cgroup=str(path),
        )

    def exit_cause(self, name: str) -> ExitCause | None:
        path = self._path(name)
        kills = _read_counter(path / "memory.events", "oom_kill")
        if kills > self._baseline.get(name, 0):
            self._baseline[name] = kills
            limit = (path / "memory.max").read_text().strip()
            return ExitCause(MEMORY_LIMIT_REASON, f"kernel OOM kill in {path} (memory.max={limit})")
        return None

    def release(self, name: str) -> None:
        self._baseline.pop(name, None)
        _remove_cgroup(self._path(name))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._parent.rmdir()


class _Cgroup1(_Backend):
    mechanism = Mechanism.CGROUP1

    def __init__(self, memory_root: Path, cpu_root: Path | None, namespace: str) -> None:
        self._memory_parent = memory_root / namespace
        self._cpu_parent = cpu_root / namespace if cpu_root is not None else None
        self._baseline: dict[str, int] = {}
        self._memory_parent.mkdir(exist_ok=True)
        if self._cpu_parent is not None:
            try:
                self._cpu_parent.mkdir(exist_ok=True)
            except OSError:
                # The cpu hierarchy may be read-only while memory is writable: memory still holds.
                self._cpu_parent = None

    def _paths(self, name: str) -> tuple[Path, Path | None]:
        cpu = self._cpu_parent / f"kdf-{name}" if self._cpu_parent is not None else None
        return self._memory_parent / f"kdf-{name}", cpu

    def prepare(self, name: str, limits: ResourceLimits) -> LaunchPlan:
        memory_dir, cpu_dir = self._paths(name)
        memory_dir.mkdir(exist_ok=True)
        limit = str(limits.memory_bytes) if limits.memory_bytes is not None else "-1"
        self._set_memory(memory_dir, limit)
        procs = [str(memory_dir / "cgroup.procs")]
        if cpu_dir is not None:
            cpu_dir.mkdir(exist_ok=True)
            _write(cpu_dir / "cpu.cfs_period_us", str(_CPU_PERIOD_US))
            quota = -1 if limits.cpu is None else int(limits.cpu * _CPU_PERIOD_US)
            _write(cpu_dir / "cpu.cfs_quota_us", str(quota))
            procs.append(str(cpu_dir / "cgroup.procs"))
        self._baseline[name] = _read_counter(memory_dir / "memory.oom_control", "oom_kill")
        return LaunchPlan(preexec=_preexec(self.rlimits(limits), procs))

    @staticmethod
    def _set_memory(memory_dir: Path, limit: str) -> None:
        memsw = memory_dir / "memory.memsw.limit_in_bytes"
        # memsw (memory+swap) must stay >= the memory limit: the write order depends on direction.
        try:
            _write(memory_dir / "memory.limit_in_bytes", limit)
            if memsw.exists():
                _write(memsw, limit)
        except OSError as exc:
            if exc.errno != errno.EINVAL or not memsw.exists():
                raise
            _write(memsw, limit)
            _write(memory_dir / "memory.limit_in_bytes", limit)

    def attach(self, name: str, pid: int, limits: ResourceLimits) -> LimitEnforcement:
        memory_dir, cpu_dir = self._paths(name)
        for path in (memory_dir, cpu_dir):
            if path is not None:
                _join(path, pid)
        return LimitEnforcement(
            mechanism=self.mechanism,
            memory_bytes=limits.memory_bytes,
            cpu=limits.cpu,
            memory_enforced=limits.memory_bytes is not None,
            cpu_enforced=limits.cpu is not None and cpu_dir is not None,
            detail=(
                f"cgroup v1 memory.limit_in_bytes in {memory_dir}"
                + (
                    f", cpu.cfs_quota_us in {cpu_dir}"
                    if cpu_dir is not None
                    else ", cpu not limited"
                )
            ),
            cgroup=str(memory_dir),
        )

    def exit_cause(self, name: str) -> ExitCause | None:
        memory_dir, _ = self._paths(name)
        kills = _read_counter(memory_dir / "memory.oom_control", "oom_kill")
        if kills > self._baseline.get(name, 0):
            self._baseline[name] = kills
            limit = (memory_dir / "memory.limit_in_bytes").read_text().strip()
            return ExitCause(
                MEMORY_LIMIT_REASON, f"kernel OOM kill in {memory_dir} (limit_in_bytes={limit})"
            )
        return None

    def release(self, name: str) -> None:
        self._baseline.pop(name, None)
        for path in self._paths(name):
            if path is not None:
                _remove_cgroup(path)

    def close(self) -> None:
        for parent in (self._memory_parent, self._cpu_parent):
            if parent is not None:
                with contextlib.suppress(OSError):
                    parent.rmdir()


class _Systemd(_Backend):
    mechanism = Mechanism.SYSTEMD

    def __init__(self, namespace: str) -> None:
        self._namespace = namespace
        self._units: dict[str, str] = {}

    def prepare(self, name: str, limits: ResourceLimits) -> LaunchPlan:
        # A fresh unit name per spawn: a failed scope lingers until reset-failed.
        unit = f"{self._namespace}-{name}-{uuid.uuid4().hex[:8]}.scope"
        self._units[name] = unit
        return LaunchPlan(
            argv_prefix=tuple(systemd_run_argv(unit, limits)),
            preexec=_preexec(self.rlimits(limits), ()),
        )

    def attach(self, name: str, pid: int, limits: ResourceLimits) -> LimitEnforcement:
        cgroup = _own_v2_path(pid)
        # A re-adopted KDF runs in the scope of an earlier daemon: report (and query) that one.
        if cgroup is not None and cgroup.endswith(".scope"):
            self._units[name] = cgroup.rsplit("/", 1)[-1]
        unit = self._units.get(name, "")
        return LimitEnforcement(
            mechanism=self.mechanism,
            memory_bytes=limits.memory_bytes,
            cpu=limits.cpu,
            memory_enforced=limits.memory_bytes is not None,
            cpu_enforced=limits.cpu is not None,
            detail=f"transient systemd scope {unit} (MemoryMax/CPUQuota)",
            cgroup=cgroup,
            unit=unit,
        )

    def exit_cause(self, name: str) -> ExitCause | None:
        unit = self._units.get(name)
        if unit is None:
            return None
        result = subprocess.run(
            ["systemctl", "show", "--property=Result", "--value", unit],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        ).stdout.strip()
        if result == "oom-kill":
            return ExitCause(
                MEMORY_LIMIT_REASON, f"systemd scope {unit} ended with Result=oom-kill"
            )
        return None

    def release(self, name: str) -> None:
        unit = self._units.pop(name, None)
        if unit is not None:
            subprocess.run(
                ["systemctl", "reset-failed", unit], capture_output=True, check=False, timeout=10
            )


def systemd_run_argv(unit: str, limits: ResourceLimits) -> list[str]:
    """The ``systemd-run`` prefix that runs a command in a transient scope with ``limits``."""
    argv = ["systemd-run", "--scope", "--quiet", f"--unit={unit}"]
    if limits.memory_bytes is not None:
        argv += ["-p", f"MemoryMax={limits.memory_bytes}", "-p", "MemorySwapMax=0"]
    if limits.cpu is not None:
        argv += ["-p", f"CPUQuota={round(limits.cpu * 100)}%"]
    return [*argv, "--"]


def _own_v2_path(pid: int) -> str | None:
    try:
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:]
    except OSError:
        pass
    return None


class _Rlimit(_Backend):
    mechanism = Mechanism.RLIMIT

    def __init__(self, watchdog: RssWatchdog, address_space_factor: float) -> None:
        self._watchdog = watchdog
        self._factor = address_space_factor

    def address_space(self, memory_max: int) -> int:
        """RLIMIT_AS for a memory limit: a loose backstop, the watchdog enforces the real limit.

        A Rust/tokio process reserves far more address space than it touches (thread stacks,
        allocator arenas), so RLIMIT_AS equal to the memory limit would kill a healthy KDF.
        """
        return max(int(memory_max * self._factor), memory_max + (1 << 30))

    def rlimits(self, limits: ResourceLimits) -> list[tuple[int, int]]:
        """The base rlimits plus RLIMIT_AS when memory is limited."""
        rlimits = _base_rlimits(limits)
        if limits.memory_bytes is not None:
            rlimits.append((resource.RLIMIT_AS, self.address_space(limits.memory_bytes)))
        return rlimits

    def prepare(self, name: str, limits: ResourceLimits) -> LaunchPlan:
        return LaunchPlan(preexec=_preexec(self.rlimits(limits), ()))

    def attach(self, name: str, pid: int, limits: ResourceLimits) -> LimitEnforcement:
        rlimit_as: int | None = None
        if limits.memory_bytes is not None:
            rlimit_as = self.address_space(limits.memory_bytes)
            self._watchdog.watch(name, pid, limits.memory_bytes)
        cpu_note = "; cpu not enforced (no cgroup available)" if limits.cpu else ""
        return LimitEnforcement(
            mechanism=self.mechanism,
            memory_bytes=limits.memory_bytes,
            cpu=limits.cpu,
            memory_enforced=limits.memory_bytes is not None,
            cpu_enforced=False,
            detail=f"RLIMIT_AS backstop plus an RSS watchdog that sends SIGKILL{cpu_note}",
            rlimit_as=rlimit_as,
        )

    def exit_cause(self, name: str) -> ExitCause | None:
        return self._watchdog.breach(name)

    def release(self, name: str) -> None:
        self._watchdog.unwatch(name)

    def close(self) -> None:
        self._watchdog.stop()


# --------------------------------------------------------------------------- the enforcer


@dataclass(frozen=True)
class Detection:
    """The mechanism chosen and why the stronger ones were not."""

    mechanism: Mechanism
    skipped: tuple[tuple[Mechanism, str], ...]


def detect_mechanism(host: CgroupHost | None = None) -> Detection:
    """Pick the strongest usable mechanism on this host.

    Under systemd a cgroup is only ours to write when it was delegated to us; otherwise we ask
    systemd for a transient scope. Without systemd (containers, plain VMs) we use the cgroup
    hierarchy directly.
    """
    host = host if host is not None else read_cgroup_host()
    skipped: list[tuple[Mechanism, str]] = []
    under_systemd = systemd_is_pid1()
    v2_problem = _cgroup2_usable(host.v2_dir)
    if v2_problem is None and under_systemd and host.v2_dir and not _is_delegated(host.v2_dir):
        v2_problem = f"{host.v2_dir} is managed by systemd and not delegated to us"
    if v2_problem is None:
        return Detection(Mechanism.CGROUP2, tuple(skipped))
    skipped.append((Mechanism.CGROUP2, v2_problem))
    systemd_problem = _systemd_usable()
    if systemd_problem is None:
        return Detection(Mechanism.SYSTEMD, tuple(skipped))
    skipped.append((Mechanism.SYSTEMD, systemd_problem))
    v1_problem = _cgroup1_usable(host.v1_dirs)
    if v1_problem is None and under_systemd:
        v1_problem = "the v1 hierarchies are managed by systemd"
    if v1_problem is None:
        return Detection(Mechanism.CGROUP1, tuple(skipped))
    skipped.append((Mechanism.CGROUP1, v1_problem))
    return Detection(Mechanism.RLIMIT, tuple(skipped))


class LimitEnforcer:
    """Applies :class:`ResourceLimits` to spawned instances with one mechanism.

    Thread-safe for distinct instance names; the supervisor serialises operations per instance.
    """

    def __init__(
        self,
        mechanism: Mechanism | str | None = None,
        *,
        namespace: str = "kdf-remote",
        host: CgroupHost | None = None,
        watchdog_interval: float = 0.5,
        address_space_factor: float = 4.0,
        on_breach: Callable[[str, ExitCause], None] | None = None,
    ) -> None:
        """Create an enforcer.

        ``mechanism`` None (or ``"auto"``) detects the strongest usable one; naming one forces it
        and raises :class:`LimitsError` when this host cannot provide it. ``namespace`` names the
        parent cgroup (or unit prefix) so two daemons on one host never share cgroups.
        """
        _check_name(namespace)
        host = host if host is not None else read_cgroup_host()
        if mechanism is None or mechanism == "auto":
            detection = detect_mechanism(host)
        else:
            detection = Detection(_parse_mechanism(mechanism), ())
            _require_usable(detection.mechanism, host)
        self.detection = detection
        self._backend = self._build(
            detection.mechanism,
            host=host,
            namespace=namespace,
            interval=watchdog_interval,
            factor=address_space_factor,
            on_breach=on_breach,
        )
        self._limits: dict[str, ResourceLimits] = {}

    @staticmethod
    def _build(
        mechanism: Mechanism,
        *,
        host: CgroupHost,
        namespace: str,
        interval: float,
        factor: float,
        on_breach: Callable[[str, ExitCause], None] | None,
    ) -> _Backend:
        if mechanism is Mechanism.CGROUP2:
            assert host.v2_dir is not None
            return _Cgroup2(host.v2_dir, namespace)
        if mechanism is Mechanism.CGROUP1:
            return _Cgroup1(host.v1_dirs["memory"], host.v1_dirs.get("cpu"), namespace)
        if mechanism is Mechanism.SYSTEMD:
            return _Systemd(namespace)
        if factor < 1:
            raise LimitsError("address_space_factor", factor, ">= 1")
        return _Rlimit(RssWatchdog(interval, on_breach), factor)

    @property
    def mechanism(self) -> Mechanism:
        """The mechanism in force for every instance of this enforcer."""
        return self._backend.mechanism

    def prepare(self, name: str, limits: ResourceLimits) -> LaunchPlan:
        """Set up limits for ``name`` before its spawn and say how to spawn it.

        An instance with no memory or CPU cap joins no cgroup: joining one costs 2-13 ms of
        kernel time per spawn here (cgroup v1 migration), on the restart path of every instance.
        With no open-files limit either it gets a plain spawn (a pre-exec hook rules out the
        fast vfork path) and :meth:`attach` turns core dumps off right after exec.
        """
        self._limits[_check_name(name)] = limits
        if not _caps_resources(limits):
            if limits.open_files is None:
                return LaunchPlan()
            # An open-files limit must be in place before exec, so anything KDF starts
            # inherits it; that still needs no cgroup.
            return LaunchPlan(preexec=_preexec(_base_rlimits(limits), ()))
        return self._backend.prepare(name, limits)

    def attach(self, name: str, pid: int) -> LimitEnforcement:
        """Bind the spawned (or re-adopted) ``pid`` to its limits; returns what is in force.

        Works without the plan's preexec too (a re-adopted KDF, a spawn helper that cannot
        run Python between fork and exec): rlimits are then set with prlimit and the pid is
        moved into its cgroup, a moment after exec instead of before it.
        """
        limits = self._limits.get(name)
        if limits is None:
            raise LimitsError("name", name, "an instance prepared with prepare()")
        # Idempotent with the preexec: a spawn that cannot run one still gets every limit here
        # (rlimits via prlimit, the cgroup by writing the pid), a moment after exec.
        for which, value in self._backend.rlimits(limits):
            with contextlib.suppress(ProcessLookupError):
                resource.prlimit(pid, which, (value, value))
        if not _caps_resources(limits):
            return LimitEnforcement(
                mechanism=self.mechanism,
                memory_bytes=None,
                cpu=None,
                memory_enforced=False,
                cpu_enforced=False,
                detail="no memory or cpu limit configured; core dumps off",
            )
        return self._backend.attach(name, pid, limits)

    def exit_cause(self, name: str) -> ExitCause | None:
        """After the instance exited: ``ExitCause("memory_limit", ...)`` if limits killed it."""
        limits = self._limits.get(name)
        if limits is not None and not _caps_resources(limits):
            return None
        return self._backend.exit_cause(name)

    def release(self, name: str) -> None:
        """Forget ``name`` and free its cgroup or unit (call after its process was reaped)."""
        self._limits.pop(name, None)
        self._backend.release(name)

    def close(self) -> None:
        """Stop the watchdog and remove the enforcer's empty parent cgroup."""
        self._backend.close()


def _caps_resources(limits: ResourceLimits) -> bool:
    """Whether ``limits`` asks for a memory or CPU cap (what needs a cgroup, unit or watchdog)."""
    return limits.memory_bytes is not None or limits.cpu is not None


def _parse_mechanism(value: Mechanism | str) -> Mechanism:
    try:
        return Mechanism(value)
    except ValueError:
        choices = ", ".join(["auto", *(m.value for m in Mechanism)])
        raise LimitsError("mechanism", value, f"one of {choices}") from None


def _require_usable(mechanism: Mechanism, host: CgroupHost) -> None:
    problem: str | None = None
    if mechanism is Mechanism.CGROUP2:
        problem = _cgroup2_usable(host.v2_dir)
    elif mechanism is Mechanism.CGROUP1:
        problem = _cgroup1_usable(host.v1_dirs)
    elif mechanism is Mechanism.SYSTEMD:
        problem = _systemd_usable()
    if problem is not None:
        raise LimitsError("mechanism", mechanism.value, f"a mechanism this host offers ({problem})")
