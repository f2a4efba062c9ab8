"""Rolling KDF updates with a health gate and automatic rollback.

:meth:`Updater.update` runs, in order:

1. ``downloading``: install the release (verified, see :mod:`kdf_remote.kdf.release`). A refused
   download ends the update here with nothing changed.
2. ``backing_up``: snapshot every instance's data directory (label ``pre-update-<version>``),
   because an older binary may not read a database the newer one migrated.
3. ``switching``: point ``current`` at the new release (one atomic symlink replace). Running KDF
   processes keep the binary they were started from.
4. ``restarting``: restart the instances that were running, one at a time (workers first and
   ``main`` last by default, or ``main`` first), each through
   ``Supervisor.restart(name, updating=True)`` (status shows ``updating`` while the old KDF
   stops), which returns once KDF answers RPC. An instance that is not ``running`` with a new
   pid within ``instance_timeout`` fails the update.
5. On failure, ``rolling_back``: switch ``current`` back, then for every instance already
   restarted (newest first): stop it, restore its pre-update snapshot (the replaced data is itself
   snapshotted first, so nothing written meanwhile is lost) and start it again if it was running.
   Instances not yet restarted never left the old binary.

Progress is a typed :class:`UpdateProgress` readable at any time (:attr:`Updater.progress`) and
streamed by :meth:`Updater.watch`; with a journal path each phase is also written to disk so a
daemon that died mid-update can put the previous binary back (:meth:`Updater.recover_interrupted`).

Only the supervisor's public API is used (``names``, ``status``, ``start``, ``stop``,
``restart``), so the instance state machine stays the supervisor's alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Literal, Protocol, TypeVar

import httpx
import msgspec

from kdf_remote.kdf.config import KdfStartupConfig
from kdf_remote.kdf.release import (
    DownloadPolicy,
    ReleaseError,
    ReleaseSpec,
    ReleaseStore,
)
from kdf_remote.supervisor.backup import BackupError, BackupManager
from kdf_remote.supervisor.models import InstanceState, InstanceStatus

__all__ = [
    "InstanceStep",
    "StepState",
    "SupervisorApi",
    "UpdateInProgressError",
    "UpdateOutcome",
    "UpdatePhase",
    "UpdatePolicy",
    "UpdateProgress",
    "UpdateResult",
    "Updater",
    "restarted_on_new_release",
]

_T = TypeVar("_T")
_log = logging.getLogger(__name__)


class SupervisorApi(Protocol):
    """The part of :class:`kdf_remote.supervisor.Supervisor` the updater drives."""

    def names(self) -> list[str]: ...

    def status(self, name: str) -> InstanceStatus: ...

    async def start(self, name: str, config: KdfStartupConfig | None = None) -> InstanceStatus: ...

    async def stop(self, name: str) -> InstanceStatus: ...

    async def restart(
        self, name: str, config: KdfStartupConfig | None = None, *, updating: bool = False
    ) -> InstanceStatus: ...


class UpdateInProgressError(Exception):
    """Another update is running (HTTP 409)."""


class UpdatePhase(enum.StrEnum):
    """Where an update is."""

    DOWNLOADING = "downloading"
    BACKING_UP = "backing_up"
    SWITCHING = "switching"
    RESTARTING = "restarting"
    ROLLING_BACK = "rolling_back"
    DONE = "done"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    """Found unfinished in the journal after a daemon restart; the old binary was put back."""


_FINAL = frozenset(
    {UpdatePhase.DONE, UpdatePhase.ROLLED_BACK, UpdatePhase.FAILED, UpdatePhase.INTERRUPTED}
)


class StepState(enum.StrEnum):
    """What happened to one instance."""

    PENDING = "pending"
    RESTARTING = "restarting"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"


class InstanceStep(msgspec.Struct, frozen=True, kw_only=True):
    """One instance's part of an update."""

    name: str
    was: InstanceState
    """State before the update (what a rollback brings it back to)."""
    state: StepState = StepState.PENDING
    backup_id: str | None = None
    kdf_version: str | None = None
    """What KDF reported after the restart."""
    detail: str | None = None


class UpdateProgress(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of an update, safe to serialise as is (no secret in it)."""

    id: str
    version: str
    previous_version: str | None
    phase: UpdatePhase
    steps: tuple[InstanceStep, ...]
    started_at: float
    finished_at: float | None = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        """True once the update reached a final phase."""
        return self.phase in _FINAL


class UpdateOutcome(enum.StrEnum):
    """How an update ended."""

    UPDATED = "updated"
    UNCHANGED = "unchanged"
    """The version was already current: nothing was restarted."""
    ROLLED_BACK = "rolled_back"
    """An instance failed on the new release; everything is back on the previous one."""
    FAILED = "failed"
    """Nothing was changed (refused download, failed backup) or the rollback itself failed."""


class UpdateResult(msgspec.Struct, frozen=True, kw_only=True):
    """The end of an update: outcome, why, and the final progress."""

    outcome: UpdateOutcome
    version: str
    previous_version: str | None
    reason: str
    progress: UpdateProgress


class UpdatePolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How an update rolls."""

    instance_timeout: float = 120.0
    """Seconds one instance may take to stop, start and answer RPC on the new release."""
    primary: str = "main"
    primary_order: Literal["first", "last"] = "last"
    """``last``: workers act as canaries for main; ``first``: main is verified before workers."""
    backup: bool = True
    restore_data_on_rollback: bool = True
    require_version_match: bool = False
    """Also fail when KDF's reported version does not contain the release version."""
    keep_releases: int = 3

    def __post_init__(self) -> None:
        if not self.instance_timeout > 0:
            raise ValueError(f"instance_timeout: got {self.instance_timeout!r}, expected > 0")
        if self.keep_releases < 2:
            raise ValueError(f"keep_releases: got {self.keep_releases!r}, expected >= 2")


class _StepFailedError(Exception):
    """An instance did not come back on the new release (message says why)."""


class Updater:
    """Runs one update at a time over a supervisor, a release store and a backup manager."""

    def __init__(
        self,
        supervisor: SupervisorApi,
        store: ReleaseStore,
        download_policy: DownloadPolicy,
        *,
        backups: BackupManager | None = None,
        policy: UpdatePolicy | None = None,
        journal_path: Path | None = None,
        http_client: httpx.AsyncClient | None = None,
        on_progress: Callable[[UpdateProgress], None] | None = None,
    ) -> None:
        """``on_progress`` is called with every snapshot (e.g. to log or audit each phase)."""
        self._sup = supervisor
        self._store = store
        self._download_policy = download_policy
        self._policy = policy or UpdatePolicy()
        if self._policy.backup and backups is None:
            raise ValueError("backups: a BackupManager is required when policy.backup is true")
        self._backups = backups
        self._journal = journal_path
        self._client = http_client
        self._on_progress = on_progress
        self._lock = asyncio.Lock()
        self._progress: UpdateProgress | None = None
        self._watchers: list[asyncio.Queue[UpdateProgress]] = []

    # ------------------------------------------------------------------ observation

    @property
    def running(self) -> bool:
        """True while an update runs."""
        return self._lock.locked()

    @property
    def progress(self) -> UpdateProgress | None:
        """The running (or last) update's progress."""
        return self._progress

    async def watch(self) -> AsyncIterator[UpdateProgress]:
        """Every progress snapshot from now until the running update finishes.

        Yields the current snapshot first; ends at once when no update is running.
        """
        queue: asyncio.Queue[UpdateProgress] = asyncio.Queue()
        self._watchers.append(queue)
        try:
            current = self._progress
            if current is None:
                return
            yield current
            while not current.finished:
                current = await queue.get()
                yield current
        finally:
            self._watchers.remove(queue)

    def _publish(self, progress: UpdateProgress) -> None:
        self._progress = progress
        for queue in self._watchers:
            queue.put_nowait(progress)
        if self._journal is not None:
            try:
                _write_journal(self._journal, progress)
            except OSError as exc:
                # The journal only serves crash recovery: losing it must not break the update.
                _log.warning("update journal %s not written: %s", self._journal, exc)
        if self._on_progress is not None:
            self._on_progress(progress)

    def _set(self, **changes: object) -> UpdateProgress:
        assert self._progress is not None
        progress = msgspec.structs.replace(self._progress, **changes)
        if progress.finished and progress.finished_at is None:
            progress = msgspec.structs.replace(progress, finished_at=time.time())
        self._publish(progress)
        return progress

    def _step(self, name: str, **changes: object) -> None:
        assert self._progress is not None
        steps = tuple(
            msgspec.structs.replace(step, **changes) if step.name == name else step
            for step in self._progress.steps
        )
        self._set(steps=steps)

    def _steps(self) -> tuple[InstanceStep, ...]:
        assert self._progress is not None
        return self._progress.steps

    # ------------------------------------------------------------------ the update

    async def update(self, spec: ReleaseSpec) -> UpdateResult:
        """Install ``spec`` and roll it out; see the module docstring for the phases.

        Raises :class:`UpdateInProgressError` when an update is already running; every other
        problem ends in an :class:`UpdateResult` whose ``reason`` says what happened.
        """
        if self._lock.locked():
            raise UpdateInProgressError("an update is already in progress")
        async with self._lock:
            previous = self._store.current_version()
            self._publish(
                UpdateProgress(
                    id=uuid.uuid4().hex,
                    version=spec.version,
                    previous_version=previous,
                    phase=UpdatePhase.DOWNLOADING,
                    steps=self._initial_steps(),
                    started_at=time.time(),
                )
            )
            return await self._run(spec, previous)

    def _initial_steps(self) -> tuple[InstanceStep, ...]:
        names = self._sup.names()
        workers = [n for n in names if n != self._policy.primary]
        primary = [n for n in names if n == self._policy.primary]
        ordered = primary + workers if self._policy.primary_order == "first" else workers + primary
        return tuple(InstanceStep(name=n, was=self._sup.status(n).state) for n in ordered)

    async def _run(self, spec: ReleaseSpec, previous: str | None) -> UpdateResult:
        try:
            await self._store.install(spec, self._download_policy, client=self._client)
        except ReleaseError as exc:
            return self._finish(UpdateOutcome.FAILED, f"release refused: {exc}")
        if previous == spec.version:
            return self._finish(UpdateOutcome.UNCHANGED, f"{spec.version} is already current")
        if previous is None:
            return self._finish(
                UpdateOutcome.FAILED,
                "no current release to roll back to: adopt the running binary first",
            )
        try:
            await self._back_up(spec.version)
        except (BackupError, OSError) as exc:
            return self._finish(UpdateOutcome.FAILED, f"backup failed, nothing changed: {exc}")
        self._set(phase=UpdatePhase.SWITCHING)
        try:
            self._store.switch(spec.version)
        except (ReleaseError, OSError) as exc:
            return self._finish(UpdateOutcome.FAILED, f"switch failed, nothing changed: {exc}")
        self._set(phase=UpdatePhase.RESTARTING)
        try:
            failure = await self._restart_all(spec.version)
        except Exception as exc:  # e.g. an instance removed mid-update: still put the old back
            failure = f"unexpected error while restarting: {exc!r}"
        if failure is None:
            with contextlib.suppress(ReleaseError, OSError):
                self._store.prune(self._policy.keep_releases)
            return self._finish(UpdateOutcome.UPDATED, f"every instance runs {spec.version}")
        return await self._roll_back(previous, failure)

    async def _back_up(self, version: str) -> None:
        if not self._policy.backup:
            return
        assert self._backups is not None
        self._set(phase=UpdatePhase.BACKING_UP)
        for step in self._steps():
            data_dir = Path(self._sup.status(step.name).data_dir)
            info = await asyncio.to_thread(
                self._backups.create, step.name, data_dir, label=f"pre-update-{version}"
            )
            self._step(step.name, backup_id=info.id)

    async def _restart_all(self, version: str) -> str | None:
        for step in self._steps():
            if step.was is not InstanceState.RUNNING:
                self._step(
                    step.name,
                    state=StepState.SKIPPED,
                    detail=f"was {step.was.value}; runs the new release on its next start",
                )
                continue
            self._step(step.name, state=StepState.RESTARTING)
            try:
                status = await self._restart_one(step.name, version)
            except _StepFailedError as exc:
                self._step(step.name, state=StepState.FAILED, detail=str(exc))
                return f"{step.name}: {exc}"
            self._step(step.name, state=StepState.DONE, kdf_version=status.kdf_version)
        return None

    async def _restart_one(self, name: str, version: str) -> InstanceStatus:
        old_pid = self._sup.status(name).pid
        await self._bounded(self._sup.restart(name, updating=True), "restart")
        status = self._sup.status(name)
        if status.state is not InstanceState.RUNNING or status.pid in (None, old_pid):
            raise _StepFailedError(f"is {status.state.value} after the restart, not running")
        if self._policy.require_version_match and version.lstrip("v") not in (
            status.kdf_version or ""
        ):
            raise _StepFailedError(f"reports version {status.kdf_version!r}, not {version}")
        return status

    async def _bounded(self, call: Awaitable[_T], what: str) -> _T:
        timeout = self._policy.instance_timeout
        try:
            return await asyncio.wait_for(call, timeout)
        except TimeoutError:
            raise _StepFailedError(f"{what} did not finish within {timeout:g} s") from None
        except Exception as exc:  # any supervisor error is a failed step; the message says which
            raise _StepFailedError(f"{what} failed: {exc}") from None

    async def _roll_back(self, previous: str, failure: str) -> UpdateResult:
        self._set(phase=UpdatePhase.ROLLING_BACK, error=failure)
        problems: list[str] = []
        try:
            self._store.switch(previous)
        except (ReleaseError, OSError) as exc:
            problems.append(f"switching back to {previous} failed: {exc}")
        touched = [s for s in self._steps() if s.state in (StepState.DONE, StepState.FAILED)]
        for step in reversed(touched):
            self._step(step.name, state=StepState.ROLLING_BACK)
            try:
                await self._roll_back_one(step)
                version = self._sup.status(step.name).kdf_version
            except Exception as exc:  # one instance's failure must not stop the others' rollback
                problems.append(f"{step.name}: {exc}")
                self._step(step.name, state=StepState.ROLLBACK_FAILED, detail=str(exc))
                continue
            self._step(step.name, state=StepState.ROLLED_BACK, kdf_version=version)
        if problems:
            return self._finish(
                UpdateOutcome.FAILED,
                f"update failed ({failure}) and the rollback failed: {'; '.join(problems)}",
            )
        return self._finish(UpdateOutcome.ROLLED_BACK, f"rolled back to {previous}: {failure}")

    async def _roll_back_one(self, step: InstanceStep) -> None:
        await self._bounded(self._sup.stop(step.name), "stop")
        if self._policy.restore_data_on_rollback and step.backup_id is not None:
            assert self._backups is not None
            await self._restore(step.name, step.backup_id)
        if step.was is InstanceState.RUNNING:
            await self._bounded(self._sup.start(step.name), "start")
            status = self._sup.status(step.name)
            if status.state is not InstanceState.RUNNING:
                raise _StepFailedError(f"is {status.state.value} after the rollback start")

    async def _restore(self, name: str, backup_id: str) -> None:
        assert self._backups is not None
        stopped = (InstanceState.STOPPED, InstanceState.FAILED)

        def is_stopped() -> bool:
            return self._sup.status(name).state in stopped

        data_dir = Path(self._sup.status(name).data_dir)
        try:
            await asyncio.to_thread(
                self._backups.restore, backup_id, data_dir, is_stopped=is_stopped, instance=name
            )
        except (BackupError, OSError) as exc:
            raise _StepFailedError(f"restoring {backup_id} failed: {exc}") from None

    def _finish(self, outcome: UpdateOutcome, reason: str) -> UpdateResult:
        phase = {
            UpdateOutcome.UPDATED: UpdatePhase.DONE,
            UpdateOutcome.UNCHANGED: UpdatePhase.DONE,
            UpdateOutcome.ROLLED_BACK: UpdatePhase.ROLLED_BACK,
            UpdateOutcome.FAILED: UpdatePhase.FAILED,
        }[outcome]
        error = None if outcome in (UpdateOutcome.UPDATED, UpdateOutcome.UNCHANGED) else reason
        progress = self._set(phase=phase, error=error)
        return UpdateResult(
            outcome=outcome,
            version=progress.version,
            previous_version=progress.previous_version,
            reason=reason,
            progress=progress,
        )

    # ------------------------------------------------------------------ crash recovery

    def recover_interrupted(self) -> UpdateProgress | None:
        """Call at daemon start-up, before instances are started or re-adopted.

        If the journal shows an update that never finished after its binary switch, ``current``
        is switched back to the previous release and the journal is marked ``interrupted``. The
        returned progress names the instances that had been restarted on the new release (the
        daemon should restart them so they run the previous one again). None when there was
        nothing to recover.
        """
        if self._journal is None or not self._journal.exists():
            return None
        try:
            progress = msgspec.json.decode(self._journal.read_bytes(), type=UpdateProgress)
        except (OSError, msgspec.DecodeError):
            return None
        if progress.finished:
            return None
        switched = progress.phase in (
            UpdatePhase.SWITCHING,
            UpdatePhase.RESTARTING,
            UpdatePhase.ROLLING_BACK,
        )
        error = "the daemon stopped during the update"
        if (
            switched
            and progress.previous_version is not None
            and self._store.current_version() == progress.version
        ):
            self._store.switch(progress.previous_version)
            error += f"; switched back to {progress.previous_version}"
        recovered = msgspec.structs.replace(
            progress, phase=UpdatePhase.INTERRUPTED, error=error, finished_at=time.time()
        )
        self._progress = recovered
        _write_journal(self._journal, recovered)
        return recovered


def restarted_on_new_release(progress: UpdateProgress) -> Sequence[str]:
    """Instances an interrupted update had restarted (they may run the new release)."""
    hot = (StepState.RESTARTING, StepState.DONE, StepState.FAILED, StepState.ROLLING_BACK)
    return [step.name for step in progress.steps if step.state in hot]


def _write_journal(path: Path, progress: UpdateProgress) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(msgspec.json.encode(progress))
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)
