"""The rolling update orchestrator against a typed fake of the supervisor's public API.

The fake runs "KDF" from the release store exactly as the real supervisor does: a restart reads
which release ``current`` points at, so a rollback only works if the store was switched back.
Releases are served in-process through httpx's MockTransport (no socket).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import httpx
import msgspec
import pytest

from _release_fixtures import release_script, release_zip, sha256
from kdf_remote.kdf.config import KdfStartupConfig
from kdf_remote.kdf.release import DownloadPolicy, ReleaseSpec, ReleaseStore
from kdf_remote.supervisor.backup import BackupManager
from kdf_remote.supervisor.errors import StartFailed, UnknownInstance
from kdf_remote.supervisor.models import InstanceState, InstanceStatus
from kdf_remote.supervisor.updater import (
    StepState,
    SupervisorApi,
    UpdateInProgressError,
    UpdateOutcome,
    UpdatePhase,
    UpdatePolicy,
    UpdateProgress,
    Updater,
    restarted_on_new_release,
)

pytestmark = pytest.mark.unit

OLD, NEW = "2.4.0-beta", "2.5.1-beta"
ORIGIN = "https://releases.example"
Behaviour = Literal["ok", "fail", "hang"]


@dataclass
class _Proc:
    data_dir: Path
    state: InstanceState
    pid: int | None = None
    version: str | None = None


class FakeSupervisor:
    """Instances whose "KDF" is whatever release ``current`` points at when they start."""

    def __init__(
        self,
        store: ReleaseStore,
        root: Path,
        states: dict[str, InstanceState],
        behaviour: Callable[[str, str], Behaviour] = lambda name, version: "ok",
    ) -> None:
        self.store = store
        self.behaviour = behaviour
        self.calls: list[tuple[str, str]] = []
        self.removed: set[str] = set()
        self.updating_restarts: list[str] = []
        self._next_pid = 1000
        self.procs: dict[str, _Proc] = {}
        for name, state in states.items():
            data = root / "data" / name
            data.mkdir(parents=True)
            (data / "MM2.db.marker").write_text(f"{name} data on {OLD}")
            self.procs[name] = _Proc(data, InstanceState.STOPPED)
            if state is InstanceState.RUNNING:
                self._spawn(name)
            self.procs[name].state = state

    def _spawn(self, name: str) -> None:
        version = self.store.current_version() or "none"
        proc = self.procs[name]
        self._next_pid += 1
        proc.pid, proc.version, proc.state = self._next_pid, version, InstanceState.RUNNING
        # A new release "migrates" the data, as a newer KDF may migrate its database.
        (proc.data_dir / "MM2.db.marker").write_text(f"{name} data on {version}")

    def names(self) -> list[str]:
        return list(self.procs)

    def status(self, name: str) -> InstanceStatus:
        if name in self.removed:
            raise UnknownInstance(f"no instance named {name!r}")
        proc = self.procs[name]
        return InstanceStatus(
            name=name,
            state=proc.state,
            pid=proc.pid,
            started_at=datetime.now(UTC) if proc.pid else None,
            uptime_s=None,
            restarts=0,
            last_exit=None,
            kdf_version=proc.version if proc.pid else None,
            rpc_port=7783,
            cpu_percent=None,
            rss_bytes=None,
            open_fds=None,
            data_dir=str(proc.data_dir),
            limits=None,
        )

    async def start(self, name: str, config: KdfStartupConfig | None = None) -> InstanceStatus:
        self.calls.append(("start", name))
        await asyncio.sleep(0)
        version = self.store.current_version() or "none"
        behaviour = self.behaviour(name, version)
        if behaviour == "hang":
            await asyncio.Event().wait()
        if behaviour == "fail":
            self.procs[name].state, self.procs[name].pid = InstanceState.BACKOFF, None
            raise StartFailed(f"{name}: KDF exited with code 1 while starting")
        self._spawn(name)
        return self.status(name)

    async def stop(self, name: str) -> InstanceStatus:
        self.calls.append(("stop", name))
        await asyncio.sleep(0)
        proc = self.procs[name]
        proc.state, proc.pid, proc.version = InstanceState.STOPPED, None, None
        return self.status(name)

    async def restart(
        self, name: str, config: KdfStartupConfig | None = None, *, updating: bool = False
    ) -> InstanceStatus:
        self.calls.append(("restart", name))
        if updating:
            self.updating_restarts.append(name)
        proc = self.procs[name]
        proc.state = InstanceState.UPDATING if updating else InstanceState.STOPPED
        proc.pid = None
        return await self.start(name)


def _zip_handler(request: httpx.Request) -> httpx.Response:
    version = request.url.path.strip("/").removesuffix(".zip")
    if version == "missing":
        return httpx.Response(404)
    return httpx.Response(200, content=release_zip(version))


def _spec(version: str) -> ReleaseSpec:
    return ReleaseSpec(
        version=version, url=f"{ORIGIN}/{version}.zip", sha256=sha256(release_zip(version))
    )


@dataclass
class Rig:
    store: ReleaseStore
    sup: FakeSupervisor
    backups: BackupManager
    updater: Updater
    journal: Path


def _rig(
    tmp_path: Path,
    states: dict[str, InstanceState],
    behaviour: Callable[[str, str], Behaviour] = lambda name, version: "ok",
    on_progress: Callable[[UpdateProgress], None] | None = None,
    **policy: object,
) -> Rig:
    store = ReleaseStore(tmp_path / "bin")
    old = tmp_path / "kdf-old"
    old.write_bytes(release_script(OLD))
    store.adopt(old, OLD)
    store.switch(OLD)
    sup = FakeSupervisor(store, tmp_path, states, behaviour)
    backups = BackupManager(tmp_path / "backups", retention=10)
    journal = tmp_path / "update.json"
    client = httpx.AsyncClient(transport=httpx.MockTransport(_zip_handler))
    api: SupervisorApi = sup
    updater = Updater(
        api,
        store,
        DownloadPolicy(allowed_origins=(ORIGIN,), smoke_timeout=0),
        backups=backups,
        policy=msgspec.convert(policy, UpdatePolicy),
        journal_path=journal,
        http_client=client,
        on_progress=on_progress,
    )
    return Rig(store, sup, backups, updater, journal)


RUNNING, STOPPED = InstanceState.RUNNING, InstanceState.STOPPED


async def test_rolling_update_restarts_running_instances_workers_first(tmp_path: Path) -> None:
    """Workers restart one at a time, main last; a stopped instance is skipped; all backed up."""
    rig = _rig(tmp_path, {"main": RUNNING, "w1": RUNNING, "w2": RUNNING, "w3": STOPPED})
    main_pid = rig.sup.procs["main"].pid
    seen: list[UpdatePhase] = []
    update = asyncio.create_task(rig.updater.update(_spec(NEW)))
    await asyncio.sleep(0)  # the task runs up to its download: progress is published
    async for progress in rig.updater.watch():
        if not seen or seen[-1] is not progress.phase:
            seen.append(progress.phase)
    result = await update
    assert result.outcome is UpdateOutcome.UPDATED, result.reason
    assert (result.version, result.previous_version) == (NEW, OLD)
    assert rig.sup.calls == [("restart", "w1"), ("start", "w1"), ("restart", "w2"),
                             ("start", "w2"), ("restart", "main"), ("start", "main")]  # fmt: skip
    assert rig.sup.updating_restarts == ["w1", "w2", "main"]  # status shows `updating`
    assert rig.store.current_version() == NEW
    assert {n: p.version for n, p in rig.sup.procs.items()} == {
        "main": NEW, "w1": NEW, "w2": NEW, "w3": None
    }  # fmt: skip
    assert rig.sup.procs["main"].pid != main_pid
    steps = {s.name: s for s in result.progress.steps}
    assert steps["w3"].state is StepState.SKIPPED
    assert all(steps[n].state is StepState.DONE for n in ("main", "w1", "w2"))
    assert steps["main"].kdf_version == NEW
    assert [i.label for i in rig.backups.list()] == [f"pre-update-{NEW}"] * 4
    assert seen[0] is UpdatePhase.DOWNLOADING and seen[-1] is UpdatePhase.DONE
    assert {UpdatePhase.BACKING_UP, UpdatePhase.SWITCHING, UpdatePhase.RESTARTING} <= set(seen)
    journal = msgspec.json.decode(rig.journal.read_bytes(), type=UpdateProgress)
    assert journal.phase is UpdatePhase.DONE and journal.finished_at is not None


async def test_primary_first_order(tmp_path: Path) -> None:
    """primary_order=first restarts main before the workers."""
    rig = _rig(tmp_path, {"w1": RUNNING, "main": RUNNING}, primary_order="first")
    result = await rig.updater.update(_spec(NEW))
    assert result.outcome is UpdateOutcome.UPDATED
    assert [name for call, name in rig.sup.calls if call == "restart"] == ["main", "w1"]


async def test_failed_instance_rolls_everything_back(tmp_path: Path) -> None:
    """w2 fails on the new release: binary, w1 and w2 go back to the old release and old data;
    main, never restarted, keeps its process."""

    def behaviour(name: str, version: str) -> Behaviour:
        return "fail" if (name, version) == ("w2", NEW) else "ok"

    rig = _rig(tmp_path, {"main": RUNNING, "w1": RUNNING, "w2": RUNNING}, behaviour)
    main_pid = rig.sup.procs["main"].pid
    result = await rig.updater.update(_spec(NEW))
    assert result.outcome is UpdateOutcome.ROLLED_BACK, result.reason
    assert "w2" in result.reason and "exited with code 1" in result.reason
    assert rig.store.current_version() == OLD
    assert {n: (p.state, p.version) for n, p in rig.sup.procs.items()} == {
        "main": (RUNNING, OLD), "w1": (RUNNING, OLD), "w2": (RUNNING, OLD)
    }  # fmt: skip
    assert rig.sup.procs["main"].pid == main_pid
    assert "main" not in [name for _, name in rig.sup.calls]
    steps = {s.name: s for s in result.progress.steps}
    assert steps["w1"].state is steps["w2"].state is StepState.ROLLED_BACK
    assert steps["main"].state is StepState.PENDING
    assert result.progress.phase is UpdatePhase.ROLLED_BACK
    # w1's data was restored from the pre-update snapshot, then restarted on the old release.
    w1_data = rig.sup.procs["w1"].data_dir / "MM2.db.marker"
    assert w1_data.read_text() == f"w1 data on {OLD}"
    # What w1 wrote while on the new release is kept in a pre-restore snapshot.
    assert [i.label for i in rig.backups.list("w1")] == [f"pre-update-{NEW}", "pre-restore"]


async def test_hung_instance_times_out_and_rolls_back(tmp_path: Path) -> None:
    """An instance that never becomes ready on the new release fails after instance_timeout."""

    def behaviour(name: str, version: str) -> Behaviour:
        return "hang" if version == NEW else "ok"

    rig = _rig(tmp_path, {"main": RUNNING}, behaviour, instance_timeout=0.2)
    result = await rig.updater.update(_spec(NEW))
    assert result.outcome is UpdateOutcome.ROLLED_BACK
    assert "did not finish within 0.2 s" in result.reason
    assert rig.sup.procs["main"].version == OLD
    assert rig.store.current_version() == OLD


async def test_failed_rollback_is_reported_as_failed(tmp_path: Path) -> None:
    """When the old release does not start either, the outcome is failed and names both."""

    def behaviour(name: str, version: str) -> Behaviour:
        return "fail" if (name, version) in {("w1", NEW), ("w1", OLD)} else "ok"

    rig = _rig(tmp_path, {"main": RUNNING, "w1": RUNNING}, behaviour)
    result = await rig.updater.update(_spec(NEW))
    assert result.outcome is UpdateOutcome.FAILED
    assert "rollback failed" in result.reason and "w1" in result.reason
    assert rig.store.current_version() == OLD
    steps = {s.name: s for s in result.progress.steps}
    assert steps["w1"].state is StepState.ROLLBACK_FAILED


async def test_refused_download_changes_nothing(tmp_path: Path) -> None:
    """A release that cannot be downloaded ends the update before any backup or restart."""
    rig = _rig(tmp_path, {"main": RUNNING})
    spec = ReleaseSpec(version="missing", url=f"{ORIGIN}/missing.zip", sha256="0" * 64)
    result = await rig.updater.update(spec)
    assert result.outcome is UpdateOutcome.FAILED
    assert "HTTP 404" in result.reason
    assert rig.sup.calls == []
    assert rig.backups.list() == []
    assert rig.store.current_version() == OLD


async def test_current_version_is_unchanged(tmp_path: Path) -> None:
    """Updating to the version already current restarts nothing."""
    rig = _rig(tmp_path, {"main": RUNNING})
    rig.store.adopt(tmp_path / "kdf-old", "same")
    rig.store.switch("same")
    result = await rig.updater.update(
        ReleaseSpec(version="same", url=f"{ORIGIN}/same.zip", sha256=rig.store.get("same").sha256)  # type: ignore[union-attr]
    )
    assert result.outcome is UpdateOutcome.UNCHANGED
    assert rig.sup.calls == []


async def test_second_update_while_running_is_refused(tmp_path: Path) -> None:
    """Only one update runs at a time; the second caller gets UpdateInProgressError."""

    def behaviour(name: str, version: str) -> Behaviour:
        return "hang" if version == NEW else "ok"

    restarting = asyncio.Event()

    def on_progress(progress: UpdateProgress) -> None:
        if progress.phase is UpdatePhase.RESTARTING:
            restarting.set()

    rig = _rig(tmp_path, {"main": RUNNING}, behaviour, on_progress, instance_timeout=30)
    first = asyncio.create_task(rig.updater.update(_spec(NEW)))
    await asyncio.wait_for(restarting.wait(), 30)
    assert rig.updater.running
    with pytest.raises(UpdateInProgressError):
        await rig.updater.update(_spec("3.0.0"))
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_interrupted_update_is_recovered_from_the_journal(tmp_path: Path) -> None:
    """A journal left in ``restarting`` switches current back and lists restarted instances."""
    rig = _rig(tmp_path, {"main": RUNNING, "w1": RUNNING})
    result = await rig.updater.update(_spec(NEW))
    assert result.outcome is UpdateOutcome.UPDATED
    steps = tuple(
        msgspec.structs.replace(s, state=StepState.DONE if s.name == "w1" else StepState.PENDING)
        for s in result.progress.steps
    )
    crashed = msgspec.structs.replace(
        result.progress, phase=UpdatePhase.RESTARTING, finished_at=None, steps=steps
    )
    rig.journal.write_bytes(msgspec.json.encode(crashed))
    fresh = Updater(
        rig.sup,
        rig.store,
        DownloadPolicy(allowed_origins=(ORIGIN,)),
        backups=rig.backups,
        journal_path=rig.journal,
    )
    recovered = fresh.recover_interrupted()
    assert recovered is not None and recovered.phase is UpdatePhase.INTERRUPTED
    assert rig.store.current_version() == OLD
    assert restarted_on_new_release(recovered) == ["w1"]
    assert fresh.recover_interrupted() is None


async def test_instance_removed_mid_update_still_rolls_back(tmp_path: Path) -> None:
    """An unexpected supervisor error during the restarts still puts the old release back."""
    rig = _rig(tmp_path, {"w1": RUNNING, "w2": RUNNING})

    def behaviour(name: str, version: str) -> Behaviour:
        if (name, version) == ("w1", NEW):
            rig.sup.removed.add("w2")  # removed by an operator while w1 restarts
        return "ok"

    rig.sup.behaviour = behaviour
    result = await rig.updater.update(_spec(NEW))
    assert result.outcome is UpdateOutcome.ROLLED_BACK
    assert "unexpected error" in result.reason and "w2" in result.reason
    assert rig.store.current_version() == OLD
    assert rig.sup.procs["w1"].version == OLD
