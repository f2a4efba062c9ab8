"""KDF updates and backups through the daemon's REST API, with kdf-sim builds as releases.

Releases are zips from ``tests/_release_fixtures.py`` served on 127.0.0.1; the first release is
the adopted ``kdf.binary_path`` (a fake release reporting 1.0.0).
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from _release_fixtures import ReleaseServer, release_script, release_zip, sha256

from .conftest import (
    OPERATOR_KEY,
    VIEWER_KEY,
    app_for,
    auth,
    kdf_version,
    make_settings,
    poll,
    serving,
    startup_config,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def releases() -> Iterator[ReleaseServer]:
    """A loopback server for release zips."""
    with ReleaseServer() as server:
        yield server


def _initial_binary(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    binary = root / "kdf-initial"
    binary.write_bytes(release_script("1.0.0"))
    binary.chmod(stat.S_IRWXU)
    return binary


async def _finished(http: httpx.AsyncClient) -> dict[str, Any] | None:
    body = (await http.get("/v1/kdf/update", headers=auth(VIEWER_KEY))).json()
    return None if body["running"] else body


async def _start_main(http: httpx.AsyncClient) -> None:
    started = await http.post("/v1/instances/main/start", json=startup_config(), headers=auth())
    assert started.status_code == 200, started.text
    assert started.json()["state"] == "running"


async def test_update_then_broken_release_rolls_back(
    tmp_path: Path, releases: ReleaseServer
) -> None:
    """2.0.0 rolls out; 3.0.0 exits at start, so 2.0.0 comes back (KDF's version RPC says so),
    with the reason in the API and the audit log. A snapshot precedes each update."""
    kdf = f", bin_dir: {tmp_path / 'bin'}, release_origins: ['{releases.origin}']"
    settings = make_settings(tmp_path, binary=_initial_binary(tmp_path), kdf=kdf)
    good = release_zip("2.0.0")
    bad = release_zip("3.0.0", mode="exits_at_start")
    async with serving(app_for(settings)) as http:
        await _start_main(http)
        assert "1.0.0" in await kdf_version(http)
        assert (await http.get("/v1/kdf/update", headers=auth())).status_code == 404

        request = {"version": "2.0.0", "sha256": sha256(good), "url": releases.add("/g.zip", good)}
        assert (
            await http.post("/v1/kdf/update", json=request, headers=auth(OPERATOR_KEY))
        ).status_code == 403
        accepted = await http.post("/v1/kdf/update", json=request, headers=auth())
        assert accepted.status_code == 202, accepted.text
        update_id = accepted.json()["id"]
        again = await http.post("/v1/kdf/update", json=request, headers=auth())
        assert again.status_code == 409
        assert again.json()["error"] == "update_in_progress"
        done = await poll(lambda: _finished(http), "the update to finish")
        assert done["id"] == update_id
        assert done["outcome"] == "updated", done
        assert done["previous_version"] == "1.0.0"
        assert done["steps"][0]["backup_id"]
        assert "2.0.0" in await kdf_version(http)

        request = {"version": "3.0.0", "sha256": sha256(bad), "url": releases.add("/b.zip", bad)}
        accepted = await http.post("/v1/kdf/update", json=request, headers=auth())
        assert accepted.status_code == 202, accepted.text
        done = await poll(lambda: _finished(http), "the broken update to finish")
        assert done["outcome"] == "rolled_back", done
        assert done["phase"] == "rolled_back"
        assert "main" in done["reason"]
        assert "2.0.0" in await kdf_version(http)
        status = (await http.get("/v1/instances/main", headers=auth())).json()
        assert status["state"] == "running"
        labels = [
            b["label"]
            for b in (await http.get("/v1/instances/main/backups", headers=auth())).json()[
                "backups"
            ]
        ]
        assert "pre-update-2.0.0" in labels and "pre-update-3.0.0" in labels
    audit = settings.security.audit_log.read_text()
    assert "rolled back to 2.0.0" in audit
    assert "KDF update" in audit


async def test_update_refusals(tmp_path: Path, releases: ReleaseServer) -> None:
    """An origin not allowed, a missing URL and a checksum mismatch change nothing; without
    kdf.bin_dir updates are a 409."""
    plain = make_settings(tmp_path / "plain")
    request = {"version": "2.0.0", "sha256": "0" * 64, "url": releases.url("/x.zip")}
    async with serving(app_for(plain)) as http:
        answer = await http.post("/v1/kdf/update", json=request, headers=auth())
        assert answer.status_code == 409
        assert answer.json()["error"] == "updates_disabled"
    kdf = f", bin_dir: {tmp_path / 'bin'}, release_origins: ['https://example.org']"
    settings = make_settings(tmp_path, binary=_initial_binary(tmp_path), kdf=kdf)
    async with serving(app_for(settings)) as http:
        answer = await http.post("/v1/kdf/update", json=request, headers=auth())
        assert answer.status_code == 400
        assert answer.json()["error"] == "origin_not_allowed"
        no_url = {"version": "2.0.0", "sha256": "0" * 64}
        answer = await http.post("/v1/kdf/update", json=no_url, headers=auth())
        assert answer.status_code == 400
        assert "url" in answer.json()["detail"]
        bad_sha = {"version": "2.0.0", "sha256": "xyz", "url": "https://example.org/a.zip"}
        assert (await http.post("/v1/kdf/update", json=bad_sha, headers=auth())).status_code == 400
    kdf = f", bin_dir: {tmp_path / 'bin2'}, release_origins: ['{releases.origin}']"
    settings = make_settings(tmp_path / "c", binary=_initial_binary(tmp_path / "c"), kdf=kdf)
    good = release_zip("2.0.0")
    async with serving(app_for(settings)) as http:
        await _start_main(http)
        request = {"version": "2.0.0", "sha256": "1" * 64, "url": releases.add("/g.zip", good)}
        assert (await http.post("/v1/kdf/update", json=request, headers=auth())).status_code == 202
        done = await poll(lambda: _finished(http), "the refused update to finish")
        assert done["outcome"] == "failed"
        assert "sha256 mismatch" in done["reason"]
        assert "1.0.0" in await kdf_version(http)


async def test_backup_round_trip_and_restore_refused_while_running(tmp_path: Path) -> None:
    """Create while running, list, restore refused (409) while running, then restored once
    stopped: the data directory holds the backed-up content again. Encrypted, key 0600."""
    settings = make_settings(tmp_path, "backup: {encrypt: true, retention: 3}\n")
    data_dir = settings.kdf.data_dir
    async with serving(app_for(settings)) as http:
        await _start_main(http)
        (data_dir / "notes.txt").write_text("before")
        created = await http.post("/v1/instances/main/backups", headers=auth(OPERATOR_KEY))
        assert created.status_code == 201, created.text
        backup = created.json()
        assert backup["encrypted"] is True and backup["files"] >= 1
        key = settings.daemon.state_dir / "backup.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        listed = (await http.get("/v1/instances/main/backups", headers=auth(VIEWER_KEY))).json()
        assert [b["id"] for b in listed["backups"]] == [backup["id"]]
        path = f"/v1/instances/main/backups/{backup['id']}/restore"
        assert (await http.post(path, headers=auth(OPERATOR_KEY))).status_code == 403
        running = await http.post(path, headers=auth())
        assert running.status_code == 409
        assert running.json()["error"] == "instance_running"
        assert (await http.post("/v1/instances/main/stop", headers=auth())).status_code == 200
        (data_dir / "notes.txt").write_text("after")
        unknown = await http.post("/v1/instances/main/backups/nope/restore", headers=auth())
        assert unknown.status_code == 404
        restored = await http.post(path, headers=auth())
        assert restored.status_code == 200, restored.text
        assert restored.json()["safety_backup"]
        assert (data_dir / "notes.txt").read_text() == "before"
        assert (await http.get("/v1/instances/nope/backups", headers=auth())).status_code == 404
