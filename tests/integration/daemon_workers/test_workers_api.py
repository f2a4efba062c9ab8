"""Workers, capacity and metrics through the daemon's REST API, with real kdf-sim processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import (
    VIEWER_KEY,
    app_for,
    auth,
    free_range,
    kdf_version,
    make_settings,
    poll,
    serving,
    startup_config,
)

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


def _worker_settings(root: Path, *, max_workers: int = 2, total: str = "160M") -> str:
    first, last = free_range(4)
    return (
        "worker_support:\n"
        f"  max_workers: {max_workers}\n"
        f"  worker_ports: '{first}-{last}'\n"
        f"  resource_limits: {{memory_per_worker: 64M, cpu_per_worker: 0.5,"
        f" max_total_memory: {total}}}\n"
    )


async def test_create_list_capacity_metrics_and_remove(tmp_path: Path) -> None:
    """A worker gets a port, its own data dir and limits, answers RPC, shows in capacity and
    metrics; max_workers and the memory budget refuse more with 409; DELETE stops it."""
    settings = make_settings(tmp_path, _worker_settings(tmp_path))
    async with serving(app_for(settings)) as http:
        created = await http.post(
            "/v1/workers", json={"name": "w1", "config": startup_config()}, headers=auth()
        )
        assert created.status_code == 201, created.text
        w1 = created.json()
        assert w1["state"] == "running"
        assert w1["limits"] == {"memory_bytes": 64 * MIB, "cpu": 0.5, "open_files": None}
        assert settings.worker_support.worker_ports.first <= w1["rpc_port"]
        assert w1["data_dir"] == str(settings.daemon.state_dir / "workers" / "w1" / "data")
        assert "kdfsim" in await kdf_version(http, "w1")
        assert psutil.Process(w1["pid"]).is_running()

        refused = await http.post(
            "/v1/workers", json={"name": "big", "memory": "128M", "start": False}, headers=auth()
        )
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"] == "insufficient_memory"
        assert "96.0 MiB" in refused.json()["detail"]  # what is left of 160M after 64M

        viewer = await http.post(
            "/v1/workers", json={"name": "w9", "start": False}, headers=auth(VIEWER_KEY)
        )
        assert viewer.status_code == 403
        w2 = await http.post("/v1/workers", json={"name": "w2", "start": False}, headers=auth())
        assert w2.status_code == 201, w2.text
        assert w2.json()["state"] == "stopped"
        assert w2.json()["rpc_port"] != w1["rpc_port"]
        over = await http.post("/v1/workers", json={"name": "w3", "start": False}, headers=auth())
        assert over.status_code == 409
        assert over.json()["error"] == "max_workers"

        capacity = (await http.get("/v1/capacity", headers=auth(VIEWER_KEY))).json()
        assert capacity["workers"] == 2
        assert capacity["memory_reserved"] == 128 * MIB
        assert capacity["memory_left"] == 32 * MIB
        assert capacity["cpu_reserved"] == 1.0
        assert w1["rpc_port"] not in capacity["free_ports"]
        assert capacity["mechanism"] in ("cgroup2", "systemd", "cgroup1", "rlimit")

        listed = (await http.get("/v1/workers", headers=auth(VIEWER_KEY))).json()
        assert [w["name"] for w in listed["workers"]] == ["w1", "w2"]

        async def scraped() -> bool:
            text = (await http.get("/v1/metrics", headers=auth(VIEWER_KEY))).text
            families = {f.name: f for f in text_string_to_metric_families(text)}
            rss = families["kdf_instance_resident_memory_bytes"].samples
            return any(s.labels["kdf_instance"] == "w1" and s.value > 0 for s in rss)

        await poll(scraped, "a health sample of w1 in the metrics")
        refused = await http.get("/v1/instances")  # no credentials: the gate answers 401
        assert refused.status_code == 401
        text = (await http.get("/v1/metrics", headers=auth(VIEWER_KEY))).text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        up = {s.labels["kdf_instance"]: s.value for s in families["kdf_instance_up"].samples}
        assert up == {"main": 0.0, "w1": 1.0, "w2": 0.0}
        rpc = families["kdf_rpc_duration_seconds"].samples
        assert any(
            s.name == "kdf_rpc_duration_seconds_count"
            and s.labels == {"kdf_instance": "w1", "method": "version", "outcome": "ok"}
            and s.value == 1
            for s in rpc
        )
        http_counts = families["kdf_remote_http_requests"].samples
        assert any(
            s.labels.get("route") == "/v1/workers" and s.labels.get("status") == "201"
            for s in http_counts
        )
        # The RPC fast path (before Litestar's routing) and the gate's refusals count too.
        assert any(
            s.labels.get("route") == "/v1/instances/{name}/rpc" and s.labels.get("status") == "200"
            for s in http_counts
        )
        assert any(s.labels.get("status") == "401" for s in http_counts)

        removed = await http.delete("/v1/workers/w1", headers=auth())
        assert removed.status_code == 200, removed.text
        assert removed.json() == {"name": "w1", "purged": False, "data_dir": w1["data_dir"]}
        assert await asyncio.to_thread(Path(w1["data_dir"]).is_dir)
        await poll(lambda: _gone(w1["pid"]), "w1's KDF to exit")
        purged = await http.delete("/v1/workers/w2", params={"purge": "true"}, headers=auth())
        assert purged.json()["purged"] is True
        assert not (settings.daemon.state_dir / "workers" / "w2").exists()
        assert (await http.delete("/v1/workers/w2", headers=auth())).status_code == 404
        names = [
            i["name"] for i in (await http.get("/v1/instances", headers=auth())).json()["instances"]
        ]
        assert names == ["main"]


async def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_workers_persist_and_are_readopted(tmp_path: Path) -> None:
    """A daemon restart registers the workers again and re-adopts their running KDF."""
    settings = make_settings(tmp_path, _worker_settings(tmp_path))
    async with serving(app_for(settings, stop_on_exit=False), keep_children=True) as http:
        created = await http.post(
            "/v1/workers", json={"name": "keep", "config": startup_config()}, headers=auth()
        )
        assert created.status_code == 201, created.text
        pid = created.json()["pid"]
    async with serving(app_for(settings)) as http:

        async def readopted() -> dict[str, object] | None:
            status = (await http.get("/v1/instances/keep", headers=auth())).json()
            return status if status["state"] == "running" else None

        status = await poll(readopted, "the worker to be re-adopted")
        assert status["pid"] == pid
        assert status["limits"]["memory_bytes"] == 64 * MIB
        assert "kdfsim" in await kdf_version(http, "keep")
    await poll(lambda: _gone(pid), "the re-adopted worker to be stopped at shutdown")


async def test_worker_support_disabled_and_bad_requests(tmp_path: Path) -> None:
    """Disabled workers are a 409; a bad name, limit or config is a 400 naming the field."""
    settings = make_settings(tmp_path, "worker_support: {enabled: false}\n")
    async with serving(app_for(settings)) as http:
        off = await http.post("/v1/workers", json={"name": "w", "start": False}, headers=auth())
        assert off.status_code == 409
        assert off.json()["error"] == "workers_disabled"
    settings = make_settings(tmp_path / "b", _worker_settings(tmp_path))
    async with serving(app_for(settings)) as http:
        cases = [
            ({"name": "Main!", "start": False}, "name"),
            ({"name": "w", "memory": "lots", "start": False}, "memory"),
            ({"name": "w", "memory": "1M", "start": False}, "memory_bytes"),
            ({"name": "w"}, "config"),
            ({"name": "w", "config": {"netid": "x"}}, "netid"),
        ]
        for body, field in cases:
            answer = await http.post("/v1/workers", json=body, headers=auth())
            assert answer.status_code == 400, (body, answer.text)
            assert field in answer.json()["detail"], answer.json()
        assert (
            await http.post("/v1/workers", json={"name": "main"}, headers=auth())
        ).status_code in (400, 409)
