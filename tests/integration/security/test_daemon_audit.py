"""The audit log and request signing on the real daemon over TLS, with kdf-sim as KDF.

Reference tests 12 and 13 of style-and-security.md part B, plus replayed signed requests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _loopback import wait_for

from .harness import (
    GENEROUS_LIMITS,
    SecureDaemon,
    make_daemon,
    run_cli,
    sign_headers,
    startup_config,
)

pytestmark = [pytest.mark.integration, pytest.mark.security]


@pytest.fixture(scope="module")
def signing_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureDaemon]:
    """A daemon with ``security.signing.required_for_admin`` on."""
    daemon = make_daemon(
        tmp_path_factory.mktemp("signing") / "daemon",
        {"security": {"rate_limit": GENEROUS_LIMITS, "signing": {"required_for_admin": True}}},
    )
    daemon.operator_key = daemon.add_key("ops", "operator")
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


def _new_entries(daemon: SecureDaemon, before: int, count: int) -> list[dict[str, object]]:
    """The entries after the first ``before``, once ``count`` of them are written.

    The daemon writes a call's audit line after its answer has left, so the client can read
    the log a moment before the last line lands.
    """
    wait_for(lambda: len(daemon.audit_entries()) >= before + count, f"{count} new audit lines")
    return daemon.audit_entries()[before:]


def test_every_mutating_call_and_refusal_writes_one_audit_line(
    shared_daemon: SecureDaemon,
) -> None:
    """Reference 13: start, RPC, config, stop and three refusals give exactly seven lines."""
    before = len(shared_daemon.audit_entries())
    with shared_daemon.client(shared_daemon.operator_key) as ops:
        assert ops.post("/v1/instances/main/start", json=startup_config()).status_code == 200
        assert ops.get("/v1/instances/main").status_code == 200  # a read: not audited
        rpc = ops.post("/v1/instances/main/rpc", json=[{"method": "version"}, {"method": "x"}])
        assert rpc.status_code == 200
        assert ops.put("/v1/instances/main/config", json=startup_config()).status_code == 200
        assert ops.post("/v1/instances/main/stop").status_code == 200
    with shared_daemon.client(shared_daemon.viewer_key) as viewer:
        assert viewer.post("/v1/instances/main/start").status_code == 403
    with shared_daemon.client("kdfr_" + "0" * 43) as wrong:
        assert wrong.get("/v1/instances").status_code == 401
    with shared_daemon.client(shared_daemon.operator_key) as ops:
        assert ops.get("/v1/audit").status_code == 403
    lines = _new_entries(shared_daemon, before, 7)
    summary = [(e["actor"], e["action"], e["target"], e["outcome"], e["status"]) for e in lines]
    assert summary == [
        ("ops", "POST /v1/instances/{name}/start", "main", "ok", 200),
        ("ops", "POST /v1/instances/{name}/rpc", "main", "ok", 200),
        ("ops", "PUT /v1/instances/{name}/config", "main", "ok", 200),
        ("ops", "POST /v1/instances/{name}/stop", "main", "ok", 200),
        ("watcher", "POST /v1/instances/{name}/start", "main", "denied", 403),
        (None, "GET /v1/instances", None, "denied", 401),
        ("ops", "GET /v1/audit", None, "denied", 403),
    ]
    assert lines[1]["detail"] == "methods: version, x"
    assert all(
        e["source_ip"] == "127.0.0.1" and e["role"] in (None, "operator", "viewer") for e in lines
    )
    with shared_daemon.client(shared_daemon.admin_key) as admin:
        served = admin.get("/v1/audit", params={"limit": len(lines)}).json()["entries"]
    assert [(e["seq"], e["hash"]) for e in served] == [(e["seq"], e["hash"]) for e in lines]


def test_audit_cannot_be_changed_through_the_api(shared_daemon: SecureDaemon) -> None:
    """Reference 13: the audit route has no method that writes, even for an admin."""
    before = shared_daemon.audit_log.read_bytes()
    with shared_daemon.client(shared_daemon.admin_key) as admin:
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            assert admin.request(method, "/v1/audit", json={}).status_code == 405, method
    assert shared_daemon.audit_log.read_bytes().startswith(before)
    verified = run_cli("audit", "verify", "--config", str(shared_daemon.config))
    assert verified.returncode == 0, verified.stdout


def test_audit_chain_verification_detects_an_edited_line(tmp_path: Path) -> None:
    """``audit verify`` passes on the daemon's log and names the first edited line."""
    daemon = make_daemon(tmp_path / "daemon", {"security": {"rate_limit": GENEROUS_LIMITS}})
    daemon.start()
    try:
        with daemon.client("kdfr_" + "1" * 43) as wrong:
            for _ in range(3):
                assert wrong.get("/v1/instances").status_code == 401
        with daemon.client(daemon.admin_key) as admin:
            assert admin.post("/v1/instances/main/stop").status_code == 200
    finally:
        daemon.stop()
    ok = run_cli("audit", "verify", "--config", str(daemon.config), "--json")
    assert ok.returncode == 0
    assert json.loads(ok.stdout)["entries"] == 4
    lines = daemon.audit_log.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace('"outcome":"denied"', '"outcome":"ok"')
    daemon.audit_log.write_text("".join(lines))
    edited = run_cli("audit", "verify", "--config", str(daemon.config))
    assert edited.returncode == 1
    assert "line 2: the line was altered" in edited.stdout


def test_replayed_signed_request_is_rejected(shared_daemon: SecureDaemon) -> None:
    """A signed request is accepted once; its replay, a stale one and a changed body are not."""
    key = shared_daemon.operator_key
    body = json.dumps({"method": "version"}).encode()
    path = "/v1/instances/main/stop"
    with shared_daemon.client(key) as http:
        headers = sign_headers(key, "POST", path, b"")
        assert http.post(path, headers=headers).status_code == 200
        replay = http.post(path, headers=headers)
        assert replay.status_code == 401
        assert replay.json() == {
            "error": "bad_signature",
            "detail": "replayed request (nonce already used)",
        }
        stale = sign_headers(key, "POST", path, b"", timestamp=int(time.time()) - 3600)
        assert http.post(path, headers=stale).json()["error"] == "bad_signature"
        rpc = "/v1/instances/main/rpc"
        signed_other_body = sign_headers(key, "POST", rpc, b'{"method": "stop"}')
        changed = http.post(rpc, headers=signed_other_body, content=body)
        assert changed.status_code == 401
        assert changed.json()["detail"] == "signature does not match the request"


def test_admin_actions_need_a_signature_when_required(signing_daemon: SecureDaemon) -> None:
    """With ``signing.required_for_admin``, unsigned admin calls get 403; signed ones pass."""
    key = signing_daemon.admin_key
    with signing_daemon.client(key) as admin:
        refused = admin.get("/v1/audit")
        assert refused.status_code == 403
        assert refused.json()["error"] == "signature_required"
        target = "/v1/audit?limit=5"
        assert admin.get(target, headers=sign_headers(key, "GET", target, b"")).is_success
        assert admin.get("/v1/instances").status_code == 200  # not an admin route
    with signing_daemon.client(signing_daemon.operator_key) as ops:
        assert ops.post("/v1/instances/main/stop").status_code == 200


def test_crlf_in_a_path_cannot_forge_a_log_line(shared_daemon: SecureDaemon) -> None:
    """Reference 12: CR/LF in a request path never starts a line of the daemon or audit log."""
    forged = "FORGED-kdf-remote-line"
    with shared_daemon.client() as anonymous:
        response = anonymous.post(f"/v1/instances/x%0d%0a{forged}%0a/start")
        assert response.status_code == 401
    with shared_daemon.client(shared_daemon.admin_key) as admin:
        admin.post(f"/v1/instances/x%0d%0a{forged}/stop")
    for text in (shared_daemon.log_text(), shared_daemon.audit_log.read_text()):
        assert not any(line.startswith(forged) for line in text.splitlines())
    assert run_cli("audit", "verify", "--config", str(shared_daemon.config)).returncode == 0


def test_error_bodies_carry_no_traceback(shared_daemon: SecureDaemon) -> None:
    """Reference 12: every error this module provoked is the one JSON shape, nothing more."""
    errors = [text for text in shared_daemon.responses if text.startswith('{"error"')]
    assert errors
    for text in errors:
        body = json.loads(text)
        assert set(body) == {"error", "detail"}
        assert "Traceback" not in text and 'File "' not in text
