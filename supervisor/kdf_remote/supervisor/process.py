"""One KDF OS process: spawn, identity, immediate exit detection, signals, reaping.

Exit detection uses a pidfd (``os.pidfd_open``) registered with the event loop: it becomes
readable the moment the process exits, for our children and for adopted processes alike. Where
pidfds are unavailable a cheap poll (``waitpid(WNOHANG)`` or a psutil identity check) runs every
50 ms instead. Signals go through the pidfd (``pidfd_send_signal``), so a recycled pid can never
be hit; the process-group kill runs only while the group leader is alive or an unreaped zombie,
so its pgid cannot have been reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = [
    "KdfProcess",
    "ProcessIdentity",
    "RunAs",
    "describe_returncode",
    "group_members",
    "identity_of",
    "spawn",
    "spawned_identity",
]

_log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.05
# psutil derives create_time from boot time + start ticks; both reads of one process agree to
# far better than this, while a recycled pid would need to start within the same 10 ms tick.
_CREATE_TIME_TOLERANCE_S = 0.005


@dataclass(frozen=True)
class ProcessIdentity:
    """What makes a process *that* process: pid, start time and command line."""

    pid: int
    create_time: float
    cmdline: tuple[str, ...]

    def matches(self, other: ProcessIdentity) -> bool:
        """Same pid and start time (within a clock tick); same command line when both are known.

        The command line is unknown (empty) only between spawn and readiness: reading
        /proc/<pid>/cmdline while the new process is still mapping its libraries can stall for
        milliseconds, so it is recorded once KDF is ready.
        """
        same_cmdline = not self.cmdline or not other.cmdline or self.cmdline == other.cmdline
        return (
            self.pid == other.pid
            and abs(self.create_time - other.create_time) <= _CREATE_TIME_TOLERANCE_S
            and same_cmdline
        )


def identity_of(pid: int) -> ProcessIdentity | None:
    """The identity of the live process ``pid``, or None if there is none (or it is a zombie)."""
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            return ProcessIdentity(pid, process.create_time(), tuple(process.cmdline()))
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


@dataclass(frozen=True)
class RunAs:
    """The uid and gid a spawned process switches to (with no supplementary groups)."""

    uid: int
    gid: int


def _child_setup(
    preexec: Callable[[], None] | None, run_as: RunAs | None
) -> Callable[[], None] | None:
    if run_as is None:
        return preexec

    # Runs in the forked child: the limits' preexec first, while still root (joining a cgroup
    # and raising rlimits need it), then the identity switch, group before user.
    def setup() -> None:
        if preexec is not None:
            preexec()
        os.setgroups([])
        os.setresgid(run_as.gid, run_as.gid, run_as.gid)
        os.setresuid(run_as.uid, run_as.uid, run_as.uid)

    return setup


def spawn(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log_fd: int,
    preexec: Callable[[], None] | None = None,
    run_as: RunAs | None = None,
) -> int:
    """Start ``argv`` in its own session and process group, stdout+stderr appended to ``log_fd``;
    return its pid.

    ``preexec`` runs in the child before exec (the limits' launch plan); ``run_as`` then drops
    to that uid/gid with no supplementary groups. Raises ``OSError`` when the binary cannot be
    executed and ``subprocess.SubprocessError`` when ``preexec`` or the identity switch failed.
    The caller owns reaping.
    """
    popen = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=log_fd,
        stderr=log_fd,
        start_new_session=True,
        close_fds=True,
        preexec_fn=_child_setup(preexec, run_as),  # noqa: PLW1509 (only syscalls; see above)
    )
    # We reap this pid ourselves (os.waitpid on pidfd readiness). Marking the Popen finished stops
    # subprocess's own bookkeeping from reaping it behind our back (its _active list) or warning
    # that it is "still running" when the object is dropped while KDF keeps running.
    popen.returncode = 0
    return popen.pid


def spawned_identity(pid: int) -> ProcessIdentity:
    """The identity of a process we just spawned: pid and start time, command line unknown yet.

    Reading /proc right after spawn waits until the child's exec has finished (a few ms); call
    it after anything that should not wait for that. See :meth:`ProcessIdentity.matches`.
    """
    return ProcessIdentity(pid, psutil.Process(pid).create_time(), ())


class KdfProcess:
    """A running KDF, spawned by us (``is_child``) or adopted from an earlier supervisor.

    ``on_exit(process, returncode)`` is called once, from the event loop, as soon as the process
    has exited; ``returncode`` follows Popen (negative: killed by that signal; None: unknown, the
    case for an adopted process that is not our child).
    """

    def __init__(
        self,
        identity: ProcessIdentity,
        *,
        is_child: bool,
        on_exit: Callable[[KdfProcess, int | None], None],
    ) -> None:
        self.identity = identity
        self.is_child = is_child
        self._on_exit = on_exit
        self._pidfd: int | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.returncode: int | None = None
        self.has_exited = False
        self._exited: asyncio.Future[int | None] | None = None

    @property
    def pid(self) -> int:
        """The process id (also its process-group id: it leads its own session)."""
        return self.identity.pid

    def __repr__(self) -> str:
        return f"KdfProcess(pid={self.pid}, child={self.is_child}, exited={self.has_exited})"

    def watch(self) -> None:
        """Start exit detection on the running loop (pidfd, or polling where unavailable)."""
        self._loop = asyncio.get_running_loop()
        self._exited = self._loop.create_future()
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError) as exc:
            if isinstance(exc, ProcessLookupError):
                self._finish(None)
                return
            self._pidfd = None
        if self._pidfd is not None and not self.is_child:
            # The pid might have been recycled between the identity check and pidfd_open.
            current = identity_of(self.pid)
            if current is None or not current.matches(self.identity):
                self._close_pidfd()
                self._finish(None)
                return
        if self._pidfd is not None:
            self._loop.add_reader(self._pidfd, self._check_exit)
        else:
            self._poll_task = self._loop.create_task(self._poll())

    async def _poll(self) -> None:
        while not self.has_exited:
            await asyncio.sleep(POLL_INTERVAL_S)
            self._check_exit()

    def _check_exit(self) -> None:
        if self.has_exited:
            return
        if self.is_child:
            # Kill leftovers of the group while the zombie leader still pins the pgid.
            if self._pidfd is not None:
                self._kill_group_quietly()
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self._finish(None)
                return
            if pid == 0:
                return
            self._finish(os.waitstatus_to_exitcode(status))
            return
        if self._pidfd is None:
            current = identity_of(self.pid)
            if current is not None and current.matches(self.identity):
                return
        # Adopted: the exit status belongs to its real parent, unless that parent is us after all
        # (a supervisor re-adopting in the same process).
        returncode: int | None = None
        with contextlib.suppress(ChildProcessError):
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                returncode = os.waitstatus_to_exitcode(status)
        self._finish(returncode)

    def _kill_group_quietly(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def _close_pidfd(self) -> None:
        if self._pidfd is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None

    def _finish(self, returncode: int | None) -> None:
        self.has_exited = True
        self.returncode = returncode
        self._close_pidfd()
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(returncode)
        self._on_exit(self, returncode)

    async def wait(self, timeout: float) -> bool:  # noqa: ASYNC109 (bounded waits are the API)
        """Wait up to ``timeout`` seconds for the exit; True if it has exited."""
        if self.has_exited:
            return True
        if self._exited is None:
            raise RuntimeError("wait() before watch()")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._exited), timeout)
        return self.has_exited

    def send_signal(self, sig: signal.Signals) -> bool:
        """Signal the process itself; False if it is already gone. Never hits a recycled pid."""
        if self.has_exited:
            return False
        try:
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, sig)
            else:
                current = identity_of(self.pid)
                if current is None or not current.matches(self.identity):
                    return False
                os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def kill_group(self) -> None:
        """SIGKILL the whole process group (KDF and anything it started)."""
        if self.has_exited:
            return
        if not self.is_child:
            current = identity_of(self.pid)
            if current is None or not current.matches(self.identity):
                return
        self._kill_group_quietly()
        self.send_signal(signal.SIGKILL)

    def detach(self) -> None:
        """Stop watching without touching the process (the supervisor is closing, KDF stays)."""
        self._close_pidfd()
        if self._poll_task is not None:
            self._poll_task.cancel()
        self.has_exited = True
        if self._exited is not None and not self._exited.done():
            self._exited.cancel()


def group_members(pgid: int) -> list[int]:
    """Pids of live (non-zombie) processes in process group ``pgid`` (for tests and checks)."""
    members = []
    for process in psutil.process_iter(["pid", "status"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(process.pid)
    return members


def describe_returncode(returncode: int | None) -> tuple[int | None, str | None, str]:
    """Exit code, signal name and a human reason for KDF's exit status (None: not our child)."""
    if returncode is None:
        return None, None, "exited (exit status unknown: not our child)"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return None, name, f"killed by {name}"
    meaning = {
        0: "clean exit",
        1: "startup or config error",
        101: "panic (e.g. RPC port busy)",
        134: "abort",
    }.get(returncode, "error")
    return returncode, None, f"exited with code {returncode} ({meaning})"
