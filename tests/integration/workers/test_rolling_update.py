"""A rolling KDF update over the real Supervisor with real processes: fake releases (kdf-sim
behind a ``kdf`` script) served from a loopback HTTP server. A good release rolls through main
and workers; a release that exits at start is rolled back everywhere, data included."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from _release_fixtures import Mode, ReleaseServer, release_script, release_zip, sha256
from kdf_remote.kdf.config import decode_startup_config
from kdf_remote.kdf.release import DownloadPolicy, ReleaseSpec, ReleaseStore
from kdf_remote.supervisor import EventKind, InstanceSpec, InstanceState, Supervisor, Timeouts
from kdf_remote.supervisor.backup import BackupManager
from kdf_remote.supervisor.updater import (
    StepState,
    UpdateOutcome,
    UpdatePolicy,
    Updater,
)

pytestmark = pytest.mark.integration

OLD, NEW, BROKEN = "2.4.0-beta", "2.5.1-beta", "2.6.0-beta"
NAMES = ("main", "w1", "w2")
CONFIG = {
    "gui": "kdf-remote-tests",
    "netid": 8762,
    "rpc_password": "Rolling-Upd-Pass-3!",
    "rpcip": "127.0.0.1",
    "disable_p2p": True,
    "coins": [],
    "passphrase": "rolling update test seed words only",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Fleet:
    sup: Supervisor
    store: ReleaseStore
    server: ReleaseServer
    backups: BackupManager
    updater: Updater
    root: Path

    def spec(self, version: str, mode: Mode = "ok") -> ReleaseSpec:
        data = release_zip(version, mode=mode)
        url = self.server.add(f"/{version}.zip", data)
        return ReleaseSpec(version=version, url=url, sha256=sha256(data))

    def versions(self) -> dict[str, tuple[InstanceState, str | None]]:
        return {n: (self.sup.status(n).state, self.sup.status(n).kdf_version) for n in NAMES}


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    """main and two workers running release OLD from the store's ``current``."""
    store = ReleaseStore(tmp_path / "bin")
    (tmp_path / "kdf-old").write_bytes(release_script(OLD))
    store.adopt(tmp_path / "kdf-old", OLD)
    store.switch(OLD)
    sup = Supervisor()
    with ReleaseServer() as server:
        try:
            for name in NAMES:
                await sup.add(
                    InstanceSpec(
                        name=name,
                        binary_path=store.current_binary,
                        data_dir=tmp_path / "data" / name,
                        run_dir=tmp_path / "run" / name,
                        rpc_port=_free_port(),
                        timeouts=Timeouts(start_s=30),
                    )
                )
                await sup.start(name, decode_startup_config(CONFIG))
            backups = BackupManager(tmp_path / "backups", retention=20)
            updater = Updater(
                sup,
                store,
                DownloadPolicy(allowed_origins=(server.origin,)),
                backups=backups,
                policy=UpdatePolicy(instance_timeout=90),
                journal_path=tmp_path / "update.json",
            )
            yield Fleet(sup, store, server, backups, updater, tmp_path)
        finally:
            await sup.close(stop_instances=True)


def _wallet_db(data_dir: Path) -> Path:
    return next(data_dir.rglob("MM2.db"))


async def test_good_release_rolls_through_every_instance(fleet: Fleet) -> None:
    """Every instance ends running the new release with a new pid; all data was backed up."""
    before = {n: fleet.sup.status(n).pid for n in NAMES}
    assert fleet.versions() == dict.fromkeys(NAMES, (InstanceState.RUNNING, OLD))
    events = fleet.sup.subscribe()
    result = await fleet.updater.update(fleet.spec(NEW))
    assert result.outcome is UpdateOutcome.UPDATED, result.reason
    updating: list[str] = []
    while len(updating) < len(NAMES):
        event = await asyncio.wait_for(anext(events), 30)
        if event.kind is EventKind.STATE and event.state is InstanceState.UPDATING:
            updating.append(event.name)
    await events.aclose()
    assert updating == ["w1", "w2", "main"]  # each went through `updating`, one at a time
    assert fleet.versions() == dict.fromkeys(NAMES, (InstanceState.RUNNING, NEW))
    assert all(fleet.sup.status(n).pid != before[n] for n in NAMES)
    assert [s.name for s in result.progress.steps] == ["w1", "w2", "main"]
    assert fleet.store.current_version() == NEW
    backed_up = {info.instance for info in fleet.backups.list()}
    assert backed_up == set(NAMES)
    for info in fleet.backups.list():
        manifest = fleet.backups.verify(info.id)
        assert any(e.kind == "sqlite" and e.path.endswith("MM2.db") for e in manifest.files)


async def test_release_that_exits_at_start_is_rolled_back(fleet: Fleet) -> None:
    """w1 cannot start the broken release: the binary switches back, w1 gets its data back and
    runs the old release again, main and w2 are never touched."""
    untouched = {n: fleet.sup.status(n).pid for n in ("main", "w2")}
    w1_db = _wallet_db(Path(fleet.sup.status("w1").data_dir))
    result = await fleet.updater.update(fleet.spec(BROKEN, mode="exits_at_start"))
    assert result.outcome is UpdateOutcome.ROLLED_BACK, result.reason
    assert result.reason.startswith(f"rolled back to {OLD}: w1:")
    assert fleet.store.current_version() == OLD
    assert fleet.versions() == dict.fromkeys(NAMES, (InstanceState.RUNNING, OLD))
    assert {n: fleet.sup.status(n).pid for n in ("main", "w2")} == untouched
    steps = {s.name: s.state for s in result.progress.steps}
    assert steps == {
        "w1": StepState.ROLLED_BACK,
        "w2": StepState.PENDING,
        "main": StepState.PENDING,
    }
    db = sqlite3.connect(w1_db)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT current_migration FROM migration").fetchall() == [(1,)]
    finally:
        db.close()
    labels = [info.label for info in fleet.backups.list("w1")]
    assert labels == [f"pre-update-{BROKEN}", "pre-restore"]
