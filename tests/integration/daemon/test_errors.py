"""Error cases over a real socket: 401/403/404/409/413/429/502, each in the one shape."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import httpx
import pytest

from _loopback import wait_for

from .conftest import ADMIN_KEY, VIEWER_KEY, DaemonFactory, sse, startup_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _shape(response: httpx.Response, status: int, error: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert body["error"] == error
    return str(body["detail"])


def test_errors_on_a_running_daemon(daemons: DaemonFactory) -> None:
    """Credentials, roles, names, states and sizes are refused with the documented statuses."""
    daemon = daemons.start(
        daemons.write_config(security="  max_body_size: 2K\n  max_streams: 1\n"),
        "--stop-instances-on-exit",
    )
    with daemon.client(None) as anonymous, daemon.client(VIEWER_KEY) as viewer:
        _shape(anonymous.get("/v1/instances"), 401, "unauthorized")
        _shape(anonymous.get("/v1/instances", headers={"X-API-Key": "wrong"}), 401, "unauthorized")
        bad_scheme = anonymous.get("/v1/instances", headers={"Authorization": f"Basic {ADMIN_KEY}"})
        _shape(bad_scheme, 401, "unauthorized")
        _shape(viewer.post("/v1/instances/main/start"), 403, "role_required")
        _shape(
            viewer.post("/v1/instances/main/rpc", json={"method": "version"}), 403, "role_required"
        )
    with daemon.client() as http:
        _shape(http.get("/v1/instances/ghost"), 404, "not_found")
        _shape(http.post("/v1/instances/main/rpc", json={"method": "version"}), 409, "not_running")
        _shape(http.post("/v1/instances/main/start"), 409, "no_stored_config")
        detail = _shape(
            http.post("/v1/instances/main/start", json={"disable_p2p": True, "netid": 7777}),
            400,
            "invalid_config",
        )
        assert "netid" in detail
        big = {"gui": "x" * 4096}
        _shape(http.put("/v1/instances/main/config", json=big), 413, "payload_too_large")
        assert http.post("/v1/instances/main/start", json=startup_config()).status_code == 200
        _shape(http.post("/v1/instances/main/rpc", content=b"{nope"), 400, "invalid_rpc")
        _shape(
            http.post("/v1/instances/main/rpc", json={"method": "version", "pad": "x" * 4096}),
            413,
            "payload_too_large",
        )
        with sse(http, "/v1/instances/main/logs?follow=true&tail=0") as stream:
            assert stream.status == 200
            _shape(http.get("/v1/instances/main/health?watch=true"), 429, "too_many_streams")

        def slot_freed() -> bool:
            with sse(http, "/v1/instances/main/health?watch=true") as again:
                return again.status == 200

        # The daemon notices the client went away and gives the stream's slot back.
        wait_for(slot_freed, "the closed stream's slot to be freed")
        _shape(http.request("DELETE", "/v1/instances/main"), 405, "method_not_allowed")


def test_502_when_kdf_does_not_answer(daemons: DaemonFactory, tmp_path: Path) -> None:
    """A KDF that drops a call gets the caller a 502 with a clear detail; status stays sane."""
    script = tmp_path / "silent-kdf"
    script.write_text(
        f"#!/bin/sh\nexec '{sys.executable}' '{Path(__file__).parent / 'silent_kdf.py'}'\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    daemon = daemons.start(daemons.write_config(binary=script), "--stop-instances-on-exit")
    with daemon.client() as http:
        started = http.post("/v1/instances/main/start", json=startup_config())
        assert started.json()["state"] == "running", started.text
        ok = http.post("/v1/instances/main/rpc", json={"method": "version"})
        assert ok.status_code == 200
        detail = _shape(
            http.post("/v1/instances/main/rpc", json={"method": "my_balance", "coin": "KMD"}),
            502,
            "kdf_unreachable",
        )
        assert detail.startswith("KDF did not answer")
        assert http.get("/v1/instances/main").json()["state"] == "running"
